"""Llama / Mistral / Qwen2 decoder in Flax NNX.

One module covers the three families; everything that differs between them (GQA, RoPE
variant, q/k/v biases, sliding windows, tied embeddings) is a field of `DecoderConfig`.
Layers are stacked and scanned (see layers.py). Attention can run over the sequence alone
(training, scoring) or over a fixed-size KV cache (generation, see `KVCache`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from leeroo_jax.models import layers
from leeroo_jax.models.hf import DecoderConfig
from leeroo_jax.sharding import constrain


class KVCache(NamedTuple):
    """Fixed-size cache for all layers. k, v: [L, B, S, K, d]; valid: [B, S]; index: next free slot."""

    k: jax.Array
    v: jax.Array
    valid: jax.Array
    index: jax.Array

    @classmethod
    def zeros(cls, cfg: DecoderConfig, batch: int, max_len: int, dtype=jnp.float32) -> "KVCache":
        shape = (cfg.num_layers, batch, max_len, cfg.num_kv_heads, cfg.head_dim)
        return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((batch, max_len), bool), jnp.int32(0))


class DecoderOutput(NamedTuple):
    logits: jax.Array | None  # [B, T, V] f32 (None when skipped)
    hidden: jax.Array  # [B, T, D] after the final norm
    cache: KVCache | None


class DecoderLayers(nnx.Module):
    """All L transformer blocks, each parameter stacked on a leading "layers" axis."""

    def __init__(self, cfg: DecoderConfig, *, param_dtype, rngs: nnx.Rngs):
        L, D, H, K, d, F = cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size
        p = lambda init, shape, axes: layers.param(rngs, init, shape, axes, param_dtype)  # noqa: E731
        n, w = layers.ones_init, layers.normal_init
        self.attn_norm = p(n, (L, D), ("layers", "norm"))
        self.wq = p(w, (L, D, H, d), ("layers", "embed", "heads", "head_dim"))
        self.wk = p(w, (L, D, K, d), ("layers", "embed", "kv_heads", "head_dim"))
        self.wv = p(w, (L, D, K, d), ("layers", "embed", "kv_heads", "head_dim"))
        self.wo = p(w, (L, H, d, D), ("layers", "heads", "head_dim", "embed"))
        if cfg.qkv_bias:
            z = layers.zeros_init
            self.bq = p(z, (L, H, d), ("layers", "heads", "head_dim"))
            self.bk = p(z, (L, K, d), ("layers", "kv_heads", "head_dim"))
            self.bv = p(z, (L, K, d), ("layers", "kv_heads", "head_dim"))
        if cfg.o_bias:
            self.bo = p(layers.zeros_init, (L, D), ("layers", "embed"))
        self.mlp_norm = p(n, (L, D), ("layers", "norm"))
        self.w_gate = p(w, (L, D, F), ("layers", "embed", "mlp"))
        self.w_up = p(w, (L, D, F), ("layers", "embed", "mlp"))
        self.w_down = p(w, (L, F, D), ("layers", "mlp", "embed"))
        if cfg.mlp_bias:
            z = layers.zeros_init
            self.b_gate = p(z, (L, F), ("layers", "mlp"))
            self.b_up = p(z, (L, F), ("layers", "mlp"))
            self.b_down = p(z, (L, D), ("layers", "embed"))

    def stacked(self) -> dict[str, jax.Array]:
        return {k: v[...] for k, v in vars(self).items() if isinstance(v, nnx.Param)}


def _block(cfg: DecoderConfig, dtype, x_btd, w, window, sin, cos, q_slot_bt, k_valid_bs, kv_cache, cache_index):
    """One pre-norm block. w: this layer's parameters; kv_cache: (k, v) [B, S, K, d] or None."""
    h = layers.rms_norm(x_btd, w["attn_norm"].astype(dtype), cfg.rms_norm_eps)
    q = jnp.einsum("btd,dhk->bthk", h, w["wq"].astype(dtype))
    k = jnp.einsum("btd,dhk->bthk", h, w["wk"].astype(dtype))
    v = jnp.einsum("btd,dhk->bthk", h, w["wv"].astype(dtype))
    if cfg.qkv_bias:
        q, k, v = q + w["bq"].astype(dtype), k + w["bk"].astype(dtype), v + w["bv"].astype(dtype)
    q, k = layers.apply_rope(q, sin, cos), layers.apply_rope(k, sin, cos)
    if kv_cache is not None:
        k_cache, v_cache = kv_cache
        k = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), cache_index, axis=1)
        v = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), cache_index, axis=1)
        new_kv = (k, v)
        k, v = k.astype(dtype), v.astype(dtype)
    else:
        new_kv = None
    mask = layers.attention_mask(q_slot_bt, k_valid_bs, causal=True, window=window)
    attn = layers.dot_product_attention(q, k, v, mask)
    out = jnp.einsum("bthk,hkd->btd", attn, w["wo"].astype(dtype))
    if cfg.o_bias:
        out = out + w["bo"].astype(dtype)
    x_btd = constrain(x_btd + out, ("batch", "length", "act_embed"))

    h = layers.rms_norm(x_btd, w["mlp_norm"].astype(dtype), cfg.rms_norm_eps)
    gate = jnp.einsum("btd,df->btf", h, w["w_gate"].astype(dtype))
    up = jnp.einsum("btd,df->btf", h, w["w_up"].astype(dtype))
    if cfg.mlp_bias:
        gate, up = gate + w["b_gate"].astype(dtype), up + w["b_up"].astype(dtype)
    down = jnp.einsum("btf,fd->btd", jax.nn.silu(gate) * up, w["w_down"].astype(dtype))
    if cfg.mlp_bias:
        down = down + w["b_down"].astype(dtype)
    return constrain(x_btd + down, ("batch", "length", "act_embed")), new_kv


class Decoder(nnx.Module):
    """Causal LM. `dtype` is the compute dtype, `param_dtype` the storage dtype."""

    def __init__(self, cfg: DecoderConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.cfg, self.dtype = cfg, dtype
        p = lambda init, shape, axes: layers.param(rngs, init, shape, axes, param_dtype)  # noqa: E731
        self.embed = p(layers.normal_init, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"))
        self.layers = DecoderLayers(cfg, param_dtype=param_dtype, rngs=rngs)
        self.final_norm = p(layers.ones_init, (cfg.hidden_size,), ("norm",))
        if not cfg.tie_word_embeddings:
            self.lm_head = p(layers.normal_init, (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"))

    def __call__(
        self,
        tokens_bt: jax.Array,
        attention_mask_bt: jax.Array | None = None,
        positions_bt: jax.Array | None = None,
        cache: KVCache | None = None,
        *,
        compute_logits: bool = True,
        frozen_layers: int = 0,
    ) -> DecoderOutput:
        """Forward pass.

        attention_mask_bt: 1 for real tokens, 0 for padding (left or right). positions_bt:
        RoPE positions; by default the count of real tokens before each one, which is what
        HF's `generate` uses and makes left padding invisible to the model. With a cache,
        the T new tokens are written at slots [index, index + T) and attend to all valid
        earlier slots; pass positions_bt that continue the prompt's positions. frozen_layers:
        the first n layers (and the embeddings) run outside autodiff (layers.scan_layers).
        """
        cfg, dtype = self.cfg, self.dtype
        b, t = tokens_bt.shape
        mask_bt = jnp.ones((b, t), bool) if attention_mask_bt is None else attention_mask_bt.astype(bool)
        if positions_bt is None:
            positions_bt = jnp.maximum(jnp.cumsum(mask_bt, axis=1) - 1, 0)
        inv_freq = layers.rope_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)  # a trace-time constant
        sin, cos = layers.rope_sin_cos(positions_bt, inv_freq)

        x = jnp.take(self.embed[...], tokens_bt, axis=0).astype(dtype)
        x = constrain(x, ("batch", "length", "act_embed"))
        if cache is None:
            q_slot_bt = jnp.broadcast_to(jnp.arange(t), (b, t))
            k_valid_bs, index, kv_xs = mask_bt, 0, None
        else:
            index = cache.index
            q_slot_bt = jnp.broadcast_to(index + jnp.arange(t), (b, t))
            k_valid_bs = jax.lax.dynamic_update_slice_in_dim(cache.valid, mask_bt, index, axis=1)
            kv_xs = (cache.k, cache.v)
        windows = jnp.asarray(cfg.sliding_windows or (0,) * cfg.num_layers, jnp.int32)

        def body(x, xs):
            w, window, kv = xs
            x, new_kv = _block(cfg, dtype, x, w, window, sin, cos, q_slot_bt, k_valid_bs, kv, index)
            return x, new_kv

        x, new_kv = layers.scan_layers(body, x, (self.layers.stacked(), windows, kv_xs), frozen_layers)
        hidden = layers.rms_norm(x, self.final_norm[...].astype(dtype), cfg.rms_norm_eps)
        new_cache = None if cache is None else KVCache(new_kv[0], new_kv[1], k_valid_bs, index + t)
        logits = self.logits(hidden) if compute_logits else None
        return DecoderOutput(logits, hidden, new_cache)

    def logits(self, hidden_btd: jax.Array) -> jax.Array:
        if self.cfg.tie_word_embeddings:
            out = jnp.einsum("btd,vd->btv", hidden_btd, self.embed[...].astype(self.dtype))
        else:
            out = jnp.einsum("btd,dv->btv", hidden_btd, self.lm_head[...].astype(self.dtype))
        return out.astype(jnp.float32)
