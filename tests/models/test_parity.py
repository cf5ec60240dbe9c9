"""Parity with transformers + torch on tiny random checkpoints written by `save_pretrained`.

Golden logits come from transformers' own torch models; ours must match within 1e-4
relative (f32) on random tokens with left and right padding in the same batch.
"""

import dataclasses

import numpy as np
import pytest
import torch
import transformers

import jax.numpy as jnp
from flax import nnx

from leeroo_jax.models import layers
from leeroo_jax.weights.loader import load

B, T = 3, 12


def _batch(vocab: int, seed: int = 0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(0, vocab, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[1, :4] = 0  # left padded
    mask[2, -5:] = 0  # right padded
    return ids, mask


def _save(tmp_path_factory, name, cfg, cls):
    torch.manual_seed(0)
    model = cls(cfg).eval()
    path = tmp_path_factory.mktemp(name)
    model.save_pretrained(path)
    return model, path


DECODERS = {
    "llama_gqa_untied": (
        transformers.LlamaConfig,
        dict(num_key_value_heads=2, tie_word_embeddings=False),
        transformers.LlamaForCausalLM,
    ),
    "llama3_rope_tied": (
        transformers.LlamaConfig,
        dict(
            num_key_value_heads=4,
            tie_word_embeddings=True,
            # A short original context puts the 8 frequencies in all three llama3 regimes
            # (wavelengths 6.3 < 16 kept, 32 blended, >= 167 divided by the factor).
            rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                                 high_freq_factor=4.0, original_max_position_embeddings=64),
        ),
        transformers.LlamaForCausalLM,
    ),
    "mistral_sliding_window": (
        transformers.MistralConfig,
        dict(num_key_value_heads=2, sliding_window=4, tie_word_embeddings=False),
        transformers.MistralForCausalLM,
    ),
    "qwen2_biases": (
        transformers.Qwen2Config,
        dict(num_key_value_heads=2, tie_word_embeddings=False, rope_theta=1000000.0),
        transformers.Qwen2ForCausalLM,
    ),
    # Qwen2's per-layer windows: layers >= max_window_layers slide (layer_types full, sliding).
    "qwen2_sliding_window": (
        transformers.Qwen2Config,
        dict(num_key_value_heads=2, tie_word_embeddings=False, use_sliding_window=True, sliding_window=4,
             max_window_layers=1),
        transformers.Qwen2ForCausalLM,
    ),
}

# Per-layer attention windows of each config, written by hand (0 = full causal attention).
WINDOWS = {"mistral_sliding_window": (4, 4), "qwen2_sliding_window": (0, 4)}


def _decoder_cfg(cls, extra):
    base = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=128, attn_implementation="eager")
    return cls(**{**base, **extra})


@pytest.fixture(scope="module")
def decoders(tmp_path_factory):
    """name -> (torch model, our Loaded), built on first use and shared by the module."""
    cache = {}

    def get(name):
        if name not in cache:
            cfg_cls, extra, model_cls = DECODERS[name]
            torch_model, path = _save(tmp_path_factory, name, _decoder_cfg(cfg_cls, extra), model_cls)
            cache[name] = (torch_model, load(path))
        return cache[name]

    return get


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_decoder_logits_match_transformers(decoders, name):
    torch_model, ours = decoders(name)
    ids, mask = _batch(97)
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)  # what HF generate() passes for padded rows
    with torch.no_grad():
        ref = torch_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                          position_ids=torch.tensor(positions)).logits.numpy()
    got = np.asarray(ours.model(jnp.asarray(ids), jnp.asarray(mask)).logits)
    valid = mask.astype(bool)
    np.testing.assert_allclose(got[valid], ref[valid], rtol=1e-4, atol=1e-4 * np.abs(ref[valid]).max())


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_config_mapping_is_read_from_hf(decoders, name):
    _, ours = decoders(name)
    cfg = ours.config
    assert cfg.num_kv_heads == (4 if name == "llama3_rope_tied" else 2)
    assert cfg.tie_word_embeddings == (name == "llama3_rope_tied")
    assert cfg.qkv_bias == name.startswith("qwen2")
    assert cfg.rope_scaling[0] == ("llama3" if name == "llama3_rope_tied" else "default")
    assert tuple(cfg.sliding_windows or (0, 0)) == WINDOWS.get(name, (0, 0))
    if name == "qwen2_biases":
        assert ours.model.layers.bq[...].shape == (2, 4, 16)


def _torch_with_window(name, torch_model, window):
    """The same weights in transformers' model with another window (None = no window)."""
    cfg_cls, extra, model_cls = DECODERS[name]
    if cfg_cls is transformers.Qwen2Config:
        extra = {**extra, "use_sliding_window": window is not None, "sliding_window": window}
    else:
        extra = {**extra, "sliding_window": window}
    other = model_cls(_decoder_cfg(cfg_cls, extra)).eval()
    other.load_state_dict(torch_model.state_dict())
    return other


def _torch_logits(model, ids, mask):
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                     position_ids=torch.tensor(positions)).logits.numpy()


@pytest.mark.parametrize("name", sorted(WINDOWS))
def test_sliding_window_matches_transformers_and_matters(decoders, name):
    """Window 4 < T: transformers' logits with the window differ from those without it, and
    from windows 3 and 5 (off by one), by far more than the parity tolerance; ours with the
    window match transformers' with it, and ours without a window match transformers' without."""
    torch_model, ours = decoders(name)
    ids, mask = _batch(97, seed=1)
    valid = mask.astype(bool)
    ref = _torch_logits(torch_model, ids, mask)
    atol = 1e-4 * np.abs(ref[valid]).max()

    got = np.asarray(ours.model(jnp.asarray(ids), jnp.asarray(mask)).logits)
    np.testing.assert_allclose(got[valid], ref[valid], rtol=1e-4, atol=atol)

    for window in (None, 3, 5):  # a missing or off-by-one window would fail the parity above
        other = _torch_logits(_torch_with_window(name, torch_model, window), ids, mask)
        gap = np.abs(other - ref)[valid] - 1e-4 * np.abs(ref[valid])
        assert gap.max() > 10 * atol, (window, gap.max(), atol)
        if window is None:
            # Within the first 3 slots of a right-padded or unpadded row every window sees every key.
            np.testing.assert_allclose(other[[0, 2], :3], ref[[0, 2], :3], rtol=1e-5, atol=1e-6)
            full = type(ours.model)(dataclasses.replace(ours.config, sliding_windows=()), rngs=nnx.Rngs(0))
            nnx.update(full, nnx.state(ours.model))
            got_full = np.asarray(full(jnp.asarray(ids), jnp.asarray(mask)).logits)
            np.testing.assert_allclose(got_full[valid], other[valid], rtol=1e-4, atol=atol)


def test_llama3_rope_frequencies_match_transformers():
    cfg = _decoder_cfg(transformers.LlamaConfig, DECODERS["llama3_rope_tied"][1])
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    ref, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
    from leeroo_jax.models.hf import decoder_config

    ours_cfg = decoder_config(cfg)
    got = layers.rope_frequencies(ours_cfg.head_dim, ours_cfg.rope_theta, ours_cfg.rope_scaling)
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-6)
    plain = layers.rope_frequencies(ours_cfg.head_dim, ours_cfg.rope_theta, ("default", 1, 1, 1, 0))
    assert got[0] == plain[0] and plain[1] / 8 < got[1] < plain[1] and np.allclose(got[2:], plain[2:] / 8)


def test_bert_hidden_states_match_transformers(tmp_path_factory):
    cfg = transformers.BertConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                  num_attention_heads=4, max_position_embeddings=32, attn_implementation="eager")
    torch_model, path = _save(tmp_path_factory, "bert", cfg, transformers.BertModel)
    ours = load(path)
    ids, mask = _batch(97)
    mask[1] = 1  # BERT pads on the right
    types = np.zeros_like(ids)
    types[:, 6:] = 1
    with torch.no_grad():
        ref = torch_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                          token_type_ids=torch.tensor(types))
    out = ours.model(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))
    valid = mask.astype(bool)
    want = ref.last_hidden_state.numpy()
    np.testing.assert_allclose(np.asarray(out.hidden)[valid], want[valid], rtol=1e-4, atol=1e-4 * np.abs(want).max())
    np.testing.assert_allclose(np.asarray(out.pooled), ref.pooler_output.numpy(), rtol=1e-4, atol=1e-5)
    pooled = np.asarray(layers.mean_pool(out.hidden, jnp.asarray(mask)))
    want_mean = (want * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    np.testing.assert_allclose(pooled, want_mean, rtol=1e-4, atol=1e-5)


def test_bf16_forward_tracks_f32(decoders):
    """bf16 params and compute: the same code path, logits close to f32."""
    _, ours = decoders("llama_gqa_untied")
    bf16 = load(ours.path, dtype=jnp.bfloat16)
    assert bf16.model.layers.wq[...].dtype == jnp.bfloat16
    ids, mask = _batch(97)
    a = np.asarray(ours.model(jnp.asarray(ids), jnp.asarray(mask)).logits)
    b = np.asarray(bf16.model(jnp.asarray(ids), jnp.asarray(mask)).logits)
    valid = mask.astype(bool)
    assert np.abs(a - b)[valid].max() < 0.05 * np.abs(a[valid]).max()


@pytest.mark.parametrize("name", ["llama_gqa_untied", "qwen2_sliding_window"])
def test_row_chunked_attention_matches_transformers(decoders, name, monkeypatch):
    """Large batches run attention one row at a time (layers.ROW_CHUNK_BYTES); forced here on
    a tiny batch, the logits still match transformers'."""
    torch_model, ours = decoders(name)
    monkeypatch.setattr(layers, "ROW_CHUNK_BYTES", 0)
    ids, mask = _batch(97, seed=2)
    ref = _torch_logits(torch_model, ids, mask)
    got = np.asarray(ours.model(jnp.asarray(ids), jnp.asarray(mask)).logits)
    valid = mask.astype(bool)
    np.testing.assert_allclose(got[valid], ref[valid], rtol=1e-4, atol=1e-4 * np.abs(ref[valid]).max())
