"""BERT encoder in Flax NNX (covers BERT and MiniLM / sentence-transformers checkpoints).

Post-LayerNorm blocks, learned absolute positions and token types, bidirectional attention
with a padding mask. Returns hidden states [B, T, D]; pool them with layers.POOLERS.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from leeroo_jax.models import layers
from leeroo_jax.models.hf import EncoderConfig
from leeroo_jax.sharding import constrain


class EncoderOutput(NamedTuple):
    hidden: jax.Array  # [B, T, D]
    pooled: jax.Array | None  # [B, D] BERT pooler (tanh(W h_cls + b)) when the checkpoint has one


class EncoderLayers(nnx.Module):
    def __init__(self, cfg: EncoderConfig, *, param_dtype, rngs: nnx.Rngs):
        L, D, H, d, F = cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.intermediate_size
        p = lambda init, shape, axes: layers.param(rngs, init, shape, axes, param_dtype)  # noqa: E731
        w, z, o = layers.normal_init, layers.zeros_init, layers.ones_init
        self.wq = p(w, (L, D, H, d), ("layers", "embed", "heads", "head_dim"))
        self.wk = p(w, (L, D, H, d), ("layers", "embed", "heads", "head_dim"))
        self.wv = p(w, (L, D, H, d), ("layers", "embed", "heads", "head_dim"))
        self.bq = p(z, (L, H, d), ("layers", "heads", "head_dim"))
        self.bk = p(z, (L, H, d), ("layers", "heads", "head_dim"))
        self.bv = p(z, (L, H, d), ("layers", "heads", "head_dim"))
        self.wo = p(w, (L, H, d, D), ("layers", "heads", "head_dim", "embed"))
        self.bo = p(z, (L, D), ("layers", "embed"))
        self.attn_ln_scale = p(o, (L, D), ("layers", "norm"))
        self.attn_ln_bias = p(z, (L, D), ("layers", "norm"))
        self.w_in = p(w, (L, D, F), ("layers", "embed", "mlp"))
        self.b_in = p(z, (L, F), ("layers", "mlp"))
        self.w_out = p(w, (L, F, D), ("layers", "mlp", "embed"))
        self.b_out = p(z, (L, D), ("layers", "embed"))
        self.out_ln_scale = p(o, (L, D), ("layers", "norm"))
        self.out_ln_bias = p(z, (L, D), ("layers", "norm"))

    def stacked(self) -> dict[str, jax.Array]:
        return {k: v[...] for k, v in vars(self).items() if isinstance(v, nnx.Param)}


class Encoder(nnx.Module):
    def __init__(self, cfg: EncoderConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.cfg, self.dtype = cfg, dtype
        D = cfg.hidden_size
        p = lambda init, shape, axes: layers.param(rngs, init, shape, axes, param_dtype)  # noqa: E731
        self.word_embed = p(layers.normal_init, (cfg.vocab_size, D), ("vocab", "embed"))
        self.pos_embed = p(layers.normal_init, (cfg.max_position_embeddings, D), (None, "embed"))
        self.type_embed = p(layers.normal_init, (cfg.type_vocab_size, D), (None, "embed"))
        self.embed_ln_scale = p(layers.ones_init, (D,), ("norm",))
        self.embed_ln_bias = p(layers.zeros_init, (D,), ("norm",))
        self.layers = EncoderLayers(cfg, param_dtype=param_dtype, rngs=rngs)
        if cfg.has_pooler:
            self.pooler_w = p(layers.normal_init, (D, D), ("embed", None))
            self.pooler_b = p(layers.zeros_init, (D,), (None,))

    def __call__(
        self,
        tokens_bt: jax.Array,
        attention_mask_bt: jax.Array | None = None,
        token_types_bt: jax.Array | None = None,
        *,
        frozen_layers: int = 0,
    ) -> EncoderOutput:
        """frozen_layers: the first n layers (and the embeddings) run outside autodiff; fine-tuning
        the last k layers passes num_layers - k (see layers.scan_layers)."""
        cfg, dtype = self.cfg, self.dtype
        b, t = tokens_bt.shape
        mask_bt = jnp.ones((b, t), bool) if attention_mask_bt is None else attention_mask_bt.astype(bool)
        types = jnp.zeros((b, t), jnp.int32) if token_types_bt is None else token_types_bt
        # BERT positions are slot indices 0..T-1 (HF ignores padding here; BERT pads on the right).
        x = (
            jnp.take(self.word_embed[...], tokens_bt, axis=0)
            + self.pos_embed[...][None, :t]
            + jnp.take(self.type_embed[...], types, axis=0)
        )
        x = layers.layer_norm(x.astype(dtype), self.embed_ln_scale[...], self.embed_ln_bias[...], cfg.layer_norm_eps)
        x = constrain(x, ("batch", "length", "act_embed"))
        mask = layers.attention_mask(jnp.zeros((b, t), jnp.int32), mask_bt, causal=False)
        act = layers.activation(cfg.hidden_act)
        eps = cfg.layer_norm_eps

        def body(x, w):
            c = lambda name: w[name].astype(dtype)  # noqa: E731
            q = jnp.einsum("btd,dhk->bthk", x, c("wq")) + c("bq")
            k = jnp.einsum("btd,dhk->bthk", x, c("wk")) + c("bk")
            v = jnp.einsum("btd,dhk->bthk", x, c("wv")) + c("bv")
            attn = layers.dot_product_attention(q, k, v, mask)
            out = jnp.einsum("bthk,hkd->btd", attn, c("wo")) + c("bo")
            x = layers.layer_norm(x + out, w["attn_ln_scale"], w["attn_ln_bias"], eps)
            h = act(jnp.einsum("btd,df->btf", x, c("w_in")) + c("b_in"))
            h = jnp.einsum("btf,fd->btd", h, c("w_out")) + c("b_out")
            x = layers.layer_norm(x + h, w["out_ln_scale"], w["out_ln_bias"], eps)
            return constrain(x, ("batch", "length", "act_embed")), None

        x, _ = layers.scan_layers(body, x, self.layers.stacked(), frozen_layers)
        pooled = None
        if cfg.has_pooler:
            pooled = jnp.tanh(x[:, 0] @ self.pooler_w[...].astype(dtype) + self.pooler_b[...].astype(dtype))
        return EncoderOutput(x, pooled)
