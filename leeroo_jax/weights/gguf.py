"""Convert a llama.cpp GGUF checkpoint into a float32 Hugging Face directory.

    python -m leeroo_jax.weights.gguf SRC.gguf OUT_DIR

The output is an ordinary HF checkpoint (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json), so everything downstream loads it like any other: our safetensors
loader, transformers' torch models in parity tests, `AutoTokenizer.from_pretrained(OUT_DIR)`.

What a GGUF changes relative to HF, and what we undo here:
  * tensors are quantized (Q4_1, Q8_0, ...): dequantized to float32 with `gguf.quants`;
  * tensor names follow llama.cpp (`blk.N.attn_q.weight`): renamed by `_TENSOR_NAMES`;
  * llama.cpp's converter permutes the rows of q_proj/k_proj for its rotary layout: reversed
    exactly as transformers' GGUF loader does (`_unpermute_rows`);
  * config and tokenizer live in metadata keys: mapped to LlamaConfig fields and rebuilt with
    transformers' own GGUF tokenizer converter, so our tokenizer.json encodes exactly what
    `AutoTokenizer.from_pretrained(dir, gguf_file=...)` encodes.

Imports numpy and `gguf` at module level; transformers (configuration and tokenizer code only,
never torch) is imported inside `convert`. The write is atomic: everything goes into a temp dir
next to OUT_DIR, renamed into place at the end, so a crash leaves no partial checkpoint.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import sys
import tempfile

import gguf
import numpy as np

from leeroo_jax.errors import WeightsError, run_main

# GGUF `general.architecture` -> (HF model_type, HF architectures). Only decoders whose
# tensors and config map one-to-one onto LlamaConfig; anything else is refused, not guessed.
_ARCHITECTURES = {"llama": ("llama", ["LlamaForCausalLM"])}

# GGUF tensor name (full match) -> HF name. Data, not code: add a row to support a new tensor.
_TENSOR_NAMES = [
    (r"token_embd\.weight", r"model.embed_tokens.weight"),
    (r"output_norm\.weight", r"model.norm.weight"),
    (r"output\.weight", r"lm_head.weight"),  # absent when the embeddings are tied
    (r"blk\.(\d+)\.attn_norm\.weight", r"model.layers.\1.input_layernorm.weight"),
    (r"blk\.(\d+)\.attn_q\.weight", r"model.layers.\1.self_attn.q_proj.weight"),
    (r"blk\.(\d+)\.attn_k\.weight", r"model.layers.\1.self_attn.k_proj.weight"),
    (r"blk\.(\d+)\.attn_v\.weight", r"model.layers.\1.self_attn.v_proj.weight"),
    (r"blk\.(\d+)\.attn_output\.weight", r"model.layers.\1.self_attn.o_proj.weight"),
    (r"blk\.(\d+)\.ffn_norm\.weight", r"model.layers.\1.post_attention_layernorm.weight"),
    (r"blk\.(\d+)\.ffn_gate\.weight", r"model.layers.\1.mlp.gate_proj.weight"),
    (r"blk\.(\d+)\.ffn_up\.weight", r"model.layers.\1.mlp.up_proj.weight"),
    (r"blk\.(\d+)\.ffn_down\.weight", r"model.layers.\1.mlp.down_proj.weight"),
]
_TENSOR_RULES = [(re.compile(src), dst) for src, dst in _TENSOR_NAMES]

# `{arch}.<key>` metadata -> LlamaConfig field (llama.cpp's convert_hf_to_gguf writes these).
_CONFIG_KEYS = {
    "vocab_size": "vocab_size",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "block_count": "num_hidden_layers",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "context_length": "max_position_embeddings",
    "rope.dimension_count": "head_dim",
}
_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def _hf_name(gguf_name: str) -> str:
    for pattern, target in _TENSOR_RULES:
        if pattern.fullmatch(gguf_name):
            return pattern.sub(target, gguf_name)
    raise WeightsError(
        f"GGUF tensor {gguf_name!r} has no HF name; add a row to _TENSOR_NAMES in leeroo_jax/weights/gguf.py"
    )


def _unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's `permute(w, n_head)` on q_proj/k_proj rows.

    HF rotates the two halves of each head (rotate_half); llama.cpp rotates adjacent pairs, so
    its converter reorders each head's rows from [h0 | h1] to [h0[0], h1[0], h0[1], h1[1], ...].
    Here rows are viewed as [n_head, head_dim/2, 2] and those two inner axes swapped back: the
    inverse, identical to transformers' `_reverse_permute_weights`. w: [n_head*head_dim, in].
    """
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _f32_value(x: float) -> float:
    # GGUF stores eps/theta as float32 (1e-5 reads back as 9.9999997e-06); the shortest
    # decimal that round-trips in float32 is the value the original config.json carried.
    return float(np.format_float_positional(np.float32(x), unique=True, trim="-"))


def _open(path: pathlib.Path) -> gguf.GGUFReader:
    fix = "re-download or re-export it (the cached SmolLM2 file: delete it and rerun `make setup`)"
    if not path.is_file():
        raise WeightsError(f"GGUF file {path} does not exist; pass the right path or run `make setup`")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":  # gguf's own reader fails on this with an unrelated numpy message
        raise WeightsError(f"{path} is not a GGUF file (starts with {magic!r}, not b'GGUF'); {fix}")
    try:
        return gguf.GGUFReader(path)  # parses header, metadata and tensor table eagerly
    except Exception as e:  # a truncated/corrupt file surfaces as ValueError, IndexError, ...
        detail = " ".join(str(e).split())[:160]
        raise WeightsError(f"{path} is a truncated or corrupt GGUF ({type(e).__name__}: {detail}); {fix}") from None


def _metadata(reader: gguf.GGUFReader) -> dict:
    return {name: field.contents() for name, field in reader.fields.items()}


def _config(meta: dict, arch: str, tensor_names: set[str]) -> dict:
    model_type, architectures = _ARCHITECTURES[arch]
    cfg = {field: meta[f"{arch}.{key}"] for key, field in _CONFIG_KEYS.items() if f"{arch}.{key}" in meta}
    missing = [f for f in _REQUIRED if f not in cfg]
    if missing:
        raise WeightsError(f"GGUF metadata lacks {arch}.* keys for {missing}; the file is incomplete, re-export it")
    cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
    # Older files omit {arch}.vocab_size; the tokenizer's token list has the same length.
    cfg.setdefault("vocab_size", len(meta.get("tokenizer.ggml.tokens", ())))
    if "rms_norm_eps" in cfg:
        cfg["rms_norm_eps"] = _f32_value(cfg["rms_norm_eps"])
    # transformers 5 keeps rope_theta inside rope_parameters (a top-level key is ignored).
    theta = _f32_value(meta.get(f"{arch}.rope.freq_base", 10000.0))
    cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": theta}
    for field, key in (("bos_token_id", "bos"), ("eos_token_id", "eos"), ("pad_token_id", "padding")):
        if f"tokenizer.ggml.{key}_token_id" in meta:
            cfg[field] = int(meta[f"tokenizer.ggml.{key}_token_id"])
    # No `output` tensor means llama.cpp dropped lm_head because it equals the embedding.
    cfg["tie_word_embeddings"] = "output.weight" not in tensor_names
    cfg.update(model_type=model_type, architectures=architectures, dtype="float32")
    return cfg


def _write_config(cfg: dict, out: pathlib.Path) -> None:
    # Through transformers' config class, so the file carries every default (hidden_act,
    # attention_bias, ...) in the layout transformers 5 itself writes; no quantization_config.
    from transformers import AutoConfig

    fields = {k: v for k, v in cfg.items() if k != "model_type"}
    AutoConfig.for_model(cfg["model_type"], **fields).save_pretrained(out)


def _write_tokenizer(meta: dict, arch: str, out: pathlib.Path, max_len: int | None) -> None:
    """tokenizer.json + tokenizer_config.json, built by transformers' GGUF tokenizer converter.

    This mirrors `transformers.integrations.gguf.get_gguf_tokenizer` (which we cannot call: its
    reader imports torch) and then hands the same dict to the same `convert_gguf_tokenizer`.
    """
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        GGUF_TOKENIZER_MAPPING,
        convert_gguf_tokenizer,
    )

    if "tokenizer.ggml.tokens" not in meta:
        raise WeightsError("GGUF has no tokenizer.ggml.tokens; convert a GGUF exported with its tokenizer")
    grouped = {
        group: {name: meta[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in meta}
        for group, renames in GGUF_TOKENIZER_MAPPING.items()
    }
    tok_dict, tok_config = grouped["tokenizer"], grouped["tokenizer_config"]
    if tok_dict.get("tokenizer_type") == "llama":
        tok_config.setdefault("add_bos_token", True)  # as transformers: llama.cpp's default for SPM
    try:
        backend, _ = convert_gguf_tokenizer(arch, tok_dict)
    except ValueError as e:
        raise WeightsError(f"cannot rebuild the GGUF tokenizer ({' '.join(str(e).split())})") from None
    backend.save(str(out / "tokenizer.json"))

    tokens = tok_dict["tokens"]
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **tok_config}
    for name, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")):
        token_id = meta.get(f"tokenizer.ggml.{key}_token_id")
        if token_id is not None:
            config[f"{name}_token"] = tokens[int(token_id)]
    if max_len:
        config["model_max_length"] = int(max_len)
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def _tensors(reader: gguf.GGUFReader, n_head: int, n_kv_head: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        name = _hf_name(t.name)
        # dequantize returns numpy order [out, in] (ggml lists dims fastest-first: [in, out]).
        w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        if name.endswith("self_attn.q_proj.weight"):
            w = _unpermute_rows(w, n_head)
        elif name.endswith("self_attn.k_proj.weight"):
            w = _unpermute_rows(w, n_kv_head)
        # F32 tensors come back as views into the mmap'd file: copy those, keep fresh arrays.
        out[name] = w if w.flags.owndata and w.flags.c_contiguous else np.array(w, order="C")
    return out


def convert(gguf_path: str | os.PathLike, out_dir: str | os.PathLike) -> pathlib.Path:
    """Write an HF float32 checkpoint of `gguf_path` to `out_dir`; returns `out_dir`."""
    from safetensors.numpy import save_file

    src, out = pathlib.Path(gguf_path), pathlib.Path(out_dir).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise WeightsError(f"{out} already exists and is not empty; delete it or choose another OUT_DIR")
    reader = _open(src)
    meta = _metadata(reader)
    arch = meta.get("general.architecture")
    if arch not in _ARCHITECTURES:
        raise WeightsError(
            f"GGUF architecture {arch!r} is not supported (supported: {sorted(_ARCHITECTURES)}); "
            "convert a Llama-family GGUF or add the architecture to leeroo_jax/weights/gguf.py"
        )
    cfg = _config(meta, arch, {t.name for t in reader.tensors})
    tensors = _tensors(reader, cfg["num_attention_heads"], cfg["num_key_value_heads"])
    embed = tensors.get("model.embed_tokens.weight")
    if embed is None or embed.shape[0] != cfg["vocab_size"]:
        raise WeightsError(f"{src}: token_embd missing or not vocab_size={cfg['vocab_size']} rows; re-export the GGUF")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        del tensors
        _write_config(cfg, tmp)
        _write_tokenizer(meta, arch, tmp, cfg.get("max_position_embeddings"))
        # mkdtemp makes the dir 0700 and safetensors the file 0600: make them readable like
        # any other checkpoint (other users, containers mounting the cache).
        os.chmod(tmp, 0o755)
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        if out.exists():
            out.rmdir()  # empty (checked above); os.replace cannot replace a directory
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m leeroo_jax.weights.gguf SRC.gguf OUT_DIR", file=sys.stderr)
        return 2
    print(f"wrote {convert(args[0], args[1])}")
    return 0


if __name__ == "__main__":
    run_main(main)
