"""Checkpoint key maps: data, not code.

Each rule is (regex over the HF key, our parameter path, transform). A `(\\d+)` group is
the layer index into a parameter stacked on its leading "layers" axis. Transforms turn a
torch tensor into our layout; they are applied per layer:

  copy        same shape
  t           nn.Linear weight [out, in]   -> [in, out]
  in_heads    q/k/v weight     [H*d, D]    -> [D, H, d]
  out_heads   o weight         [D, H*d]    -> [H, d, D]
  heads       q/k/v bias       [H*d]       -> [H, d]

IGNORED lists keys that are deliberately not loaded (non-persistent buffers some
exporters save; task heads of encoders); any other unmatched key is an error.
"""

from __future__ import annotations

import re

_DEC = r"(?:model\.)?layers\.(\d+)\."
DECODER_RULES = (
    (r"(?:model\.)?embed_tokens\.weight", "embed", "copy"),
    (r"(?:model\.)?norm\.weight", "final_norm", "copy"),
    (r"lm_head\.weight", "lm_head", "t"),
    (_DEC + r"input_layernorm\.weight", "layers.attn_norm", "copy"),
    (_DEC + r"post_attention_layernorm\.weight", "layers.mlp_norm", "copy"),
    (_DEC + r"self_attn\.q_proj\.weight", "layers.wq", "in_heads"),
    (_DEC + r"self_attn\.k_proj\.weight", "layers.wk", "in_heads"),
    (_DEC + r"self_attn\.v_proj\.weight", "layers.wv", "in_heads"),
    (_DEC + r"self_attn\.o_proj\.weight", "layers.wo", "out_heads"),
    (_DEC + r"self_attn\.q_proj\.bias", "layers.bq", "heads"),
    (_DEC + r"self_attn\.k_proj\.bias", "layers.bk", "heads"),
    (_DEC + r"self_attn\.v_proj\.bias", "layers.bv", "heads"),
    (_DEC + r"self_attn\.o_proj\.bias", "layers.bo", "copy"),
    (_DEC + r"mlp\.gate_proj\.weight", "layers.w_gate", "t"),
    (_DEC + r"mlp\.up_proj\.weight", "layers.w_up", "t"),
    (_DEC + r"mlp\.down_proj\.weight", "layers.w_down", "t"),
    (_DEC + r"mlp\.gate_proj\.bias", "layers.b_gate", "copy"),
    (_DEC + r"mlp\.up_proj\.bias", "layers.b_up", "copy"),
    (_DEC + r"mlp\.down_proj\.bias", "layers.b_down", "copy"),
)
DECODER_IGNORED = (r".*rotary_emb\.inv_freq",)

_ENC = r"(?:bert\.)?encoder\.layer\.(\d+)\."
ENCODER_RULES = (
    (r"(?:bert\.)?embeddings\.word_embeddings\.weight", "word_embed", "copy"),
    (r"(?:bert\.)?embeddings\.position_embeddings\.weight", "pos_embed", "copy"),
    (r"(?:bert\.)?embeddings\.token_type_embeddings\.weight", "type_embed", "copy"),
    (r"(?:bert\.)?embeddings\.LayerNorm\.(?:weight|gamma)", "embed_ln_scale", "copy"),
    (r"(?:bert\.)?embeddings\.LayerNorm\.(?:bias|beta)", "embed_ln_bias", "copy"),
    (_ENC + r"attention\.self\.query\.weight", "layers.wq", "in_heads"),
    (_ENC + r"attention\.self\.key\.weight", "layers.wk", "in_heads"),
    (_ENC + r"attention\.self\.value\.weight", "layers.wv", "in_heads"),
    (_ENC + r"attention\.self\.query\.bias", "layers.bq", "heads"),
    (_ENC + r"attention\.self\.key\.bias", "layers.bk", "heads"),
    (_ENC + r"attention\.self\.value\.bias", "layers.bv", "heads"),
    (_ENC + r"attention\.output\.dense\.weight", "layers.wo", "out_heads"),
    (_ENC + r"attention\.output\.dense\.bias", "layers.bo", "copy"),
    (_ENC + r"attention\.output\.LayerNorm\.(?:weight|gamma)", "layers.attn_ln_scale", "copy"),
    (_ENC + r"attention\.output\.LayerNorm\.(?:bias|beta)", "layers.attn_ln_bias", "copy"),
    (_ENC + r"intermediate\.dense\.weight", "layers.w_in", "t"),
    (_ENC + r"intermediate\.dense\.bias", "layers.b_in", "copy"),
    (_ENC + r"output\.dense\.weight", "layers.w_out", "t"),
    (_ENC + r"output\.dense\.bias", "layers.b_out", "copy"),
    (_ENC + r"output\.LayerNorm\.(?:weight|gamma)", "layers.out_ln_scale", "copy"),
    (_ENC + r"output\.LayerNorm\.(?:bias|beta)", "layers.out_ln_bias", "copy"),
    (r"(?:bert\.)?pooler\.dense\.weight", "pooler_w", "t"),
    (r"(?:bert\.)?pooler\.dense\.bias", "pooler_b", "copy"),
)
# position_ids is a buffer older exports save; cls.* are pretraining heads we do not use.
ENCODER_IGNORED = (r"(?:bert\.)?embeddings\.position_ids", r"cls\..*")
POOLER_KEY = r"(?:bert\.)?pooler\.dense\.weight"

KEYMAPS = {
    "llama": (DECODER_RULES, DECODER_IGNORED),
    "mistral": (DECODER_RULES, DECODER_IGNORED),
    "qwen2": (DECODER_RULES, DECODER_IGNORED),
    "bert": (ENCODER_RULES, ENCODER_IGNORED),
}

_COMPILED: dict[str, tuple[list[tuple[re.Pattern, str, str]], list[re.Pattern]]] = {}


def compiled(model_type: str) -> tuple[list[tuple[re.Pattern, str, str]], list[re.Pattern]]:
    if model_type not in _COMPILED:
        rules, ignored = KEYMAPS[model_type]
        _COMPILED[model_type] = (
            [(re.compile(rx), target, tf) for rx, target, tf in rules],
            [re.compile(rx) for rx in ignored],
        )
    return _COMPILED[model_type]


def match(model_type: str, key: str) -> tuple[str, int | None, str] | None:
    """(target path, layer index or None, transform) for a checkpoint key; None if unmatched."""
    rules, _ = compiled(model_type)
    for rx, target, tf in rules:
        m = rx.fullmatch(key)
        if m:
            return target, (int(m.group(1)) if m.groups() else None), tf
    return None


def ignored(model_type: str, key: str) -> bool:
    return any(rx.fullmatch(key) for rx in compiled(model_type)[1])
