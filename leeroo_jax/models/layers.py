"""Building blocks shared by the decoder and the encoder.

Shape letters: B batch, T query length, S key length, D model width, H query heads,
K key/value heads, G = H // K heads per KV group, d head dim, F MLP width, V vocab,
L layers.

Parameters are `nnx.Param`s tagged with `logical_axes` metadata (one name per dim); the
sharding module turns those names into mesh placements. Layer parameters are stacked
along a leading "layers" axis and applied with `lax.scan`, so a 30-layer model compiles
one layer body (seconds instead of a minute on 2 CPU cores) — the MaxText `scan_layers`
recipe.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Init = Callable[[jax.Array, Sequence[int], jnp.dtype], jax.Array]

normal_init: Init = nnx.initializers.normal(0.02)
ones_init: Init = nnx.initializers.ones
zeros_init: Init = nnx.initializers.zeros


def param(rngs: nnx.Rngs, init: Init, shape: Sequence[int], axes: Sequence[str | None], dtype) -> nnx.Param:
    """A parameter carrying its logical axis names (one per dim)."""
    assert len(shape) == len(axes), (shape, axes)
    return nnx.Param(init(rngs.params(), tuple(shape), dtype), logical_axes=tuple(axes))


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """Llama RMSNorm: normalise in f32, cast back, then scale (HF's order of operations)."""
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return scale * x32.astype(x.dtype)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + eps)
    return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    return {
        "silu": jax.nn.silu,
        "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # HF "gelu" is the exact erf form
        "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
        "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
        "relu": jax.nn.relu,
    }[name]


# --- rotary position embeddings ------------------------------------------------------------


def rope_frequencies(head_dim: int, theta: float, scaling: tuple[str, float, float, float, int]) -> np.ndarray:
    """Inverse frequencies [d/2] for the config's RoPE variant (HF's formulas, in float64)."""
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    rope_type, factor, low, high, old_ctx = scaling
    if rope_type == "linear":
        inv_freq = inv_freq / factor
    elif rope_type == "llama3":
        # Llama 3.1: keep high frequencies, divide low ones by `factor`, blend in between.
        wavelen = 2 * math.pi / inv_freq
        low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
        scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_ctx / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv_freq = np.where(medium, smoothed, scaled)
    return inv_freq.astype(np.float32)


def rope_sin_cos(positions_bt: jax.Array, inv_freq: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """sin, cos [B, T, d] for integer positions (angles in f32, as HF computes them)."""
    angles = positions_bt.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)[None, None, :]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.sin(angles), jnp.cos(angles)


def apply_rope(x_bthd: jax.Array, sin_btd: jax.Array, cos_btd: jax.Array) -> jax.Array:
    """HF's rotate-half convention: the first and second halves of d form the pairs."""
    half = x_bthd.shape[-1] // 2
    rotated = jnp.concatenate([-x_bthd[..., half:], x_bthd[..., :half]], axis=-1)
    sin, cos = sin_btd[:, :, None, :], cos_btd[:, :, None, :]
    return (x_bthd.astype(jnp.float32) * cos + rotated.astype(jnp.float32) * sin).astype(x_bthd.dtype)


# --- attention -----------------------------------------------------------------------------


def attention_mask(
    q_slot_bt: jax.Array,
    k_valid_bs: jax.Array,
    *,
    causal: bool,
    window: jax.Array | int = 0,
) -> jax.Array:
    """Boolean mask [B, T, S]: which key slot each query slot may attend to.

    Slots are indices in the (cached) sequence, not RoPE positions, as in HF: with left
    padding they differ by a per-row constant, which leaves causality and windows unchanged.
    window > 0 keeps keys with q - k < window (Mistral's sliding window); 0 = no window.
    """
    k_slot_s = jnp.arange(k_valid_bs.shape[1])
    mask = k_valid_bs[:, None, :]
    if causal:
        diff = q_slot_bt[:, :, None] - k_slot_s[None, None, :]
        mask = mask & (diff >= 0)
        window = jnp.asarray(window)
        mask = mask & ((window <= 0) | (diff < window))
    return mask


# Above this many bytes of f32 logits for the whole batch, attention runs one batch row at a
# time (lax.map): a row's [H, T, S] logits then stay in cache through softmax and the second
# product instead of streaming through memory. Measured on 2 AMD EPYC cores (SmolLM2 shapes,
# H=9, K=3, d=64): 16 x 256 tokens 96 -> 50 ms a layer, 4 x 512 95 -> 54 ms; at 16 x 128
# (9 MiB) the whole batch at once is as fast or faster.
ROW_CHUNK_BYTES = 16 << 20


def _attention_heads_major(q_bthd: jax.Array, k_bskd: jax.Array, v_bskd: jax.Array, mask_bts: jax.Array) -> jax.Array:
    """The attention of dot_product_attention, laid out for XLA's batched matmuls: heads
    major, each KV group's G query heads folded into the query axis ([B, K, G*T, d] against
    [B, K, S, d]: one [G*T, d] x [d, S] product per (row, KV head), no broadcast of K/V),
    the scale folded into q, the mask an additive bias (0 or f32 min: a fully masked row
    still softmaxes to uniform, as the where-form did)."""
    b, t, h, d = q_bthd.shape
    kv = k_bskd.shape[2]
    g = h // kv
    q = q_bthd.reshape(b, t, kv, g, d).transpose(0, 2, 3, 1, 4).reshape(b, kv, g * t, d)
    q = q * jnp.asarray(1.0 / math.sqrt(d), q.dtype)
    k = k_bskd.transpose(0, 2, 1, 3)  # [B, K, S, d]
    v = v_bskd.transpose(0, 2, 1, 3)
    logits = jnp.einsum("bkqd,bksd->bkqs", q, k, preferred_element_type=jnp.float32)
    bias = jnp.where(mask_bts, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)  # [B, T, S]
    logits = logits.reshape(b, kv, g, t, -1) + bias[:, None, None]
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype).reshape(b, kv, g * t, -1)
    out = jnp.einsum("bkqs,bksd->bkqd", probs, v).reshape(b, kv, g, t, d)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)


def dot_product_attention(q_bthd: jax.Array, k_bskd: jax.Array, v_bskd: jax.Array, mask_bts: jax.Array) -> jax.Array:
    """Grouped-query attention; logits and softmax in f32. Returns [B, T, H, d].

    Fully masked rows (queries on padding) get a uniform distribution instead of NaN; their
    outputs are garbage by design and are masked downstream. Large batches (over
    ROW_CHUNK_BYTES of logits) go one row at a time, except under a multi-device mesh (the
    batch axis is sharded there, and a loop over it would gather it).
    """
    b, t, h, _ = q_bthd.shape
    mesh = jax.sharding.get_abstract_mesh()
    if b > 1 and 4 * b * h * t * k_bskd.shape[1] > ROW_CHUNK_BYTES and (mesh.empty or mesh.size == 1):
        one_row = lambda args: _attention_heads_major(*(a[None] for a in args))[0]  # noqa: E731
        return jax.lax.map(one_row, (q_bthd, k_bskd, v_bskd, mask_bts))
    return _attention_heads_major(q_bthd, k_bskd, v_bskd, mask_bts)


# --- pooling -------------------------------------------------------------------------------


def mean_pool(hidden_btd: jax.Array, mask_bt: jax.Array) -> jax.Array:
    """Mean over valid tokens (sentence-transformers' pooling), in f32. Returns [B, D]."""
    m = mask_bt.astype(jnp.float32)[..., None]
    total = jnp.sum(hidden_btd.astype(jnp.float32) * m, axis=1)
    return total / jnp.maximum(jnp.sum(m, axis=1), 1e-9)


def cls_pool(hidden_btd: jax.Array, mask_bt: jax.Array | None = None) -> jax.Array:
    del mask_bt
    return hidden_btd[:, 0].astype(jnp.float32)


def last_token_pool(hidden_btd: jax.Array, mask_bt: jax.Array) -> jax.Array:
    """Hidden state of the last valid token per row, for left or right padding."""
    t = mask_bt.shape[1]
    last = jnp.max(jnp.where(mask_bt.astype(bool), jnp.arange(t)[None, :], -1), axis=1)
    return jnp.take_along_axis(hidden_btd, jnp.maximum(last, 0)[:, None, None], axis=1)[:, 0].astype(jnp.float32)


POOLERS = {"mean": mean_pool, "cls": cls_pool, "last": last_token_pool}


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def scan_layers(body: Callable, x: jax.Array, xs, frozen: int = 0):
    """lax.scan of `body` over the stacked "layers" axis of xs; the first `frozen` layers run
    outside autodiff (their inputs and weights behind stop_gradient, so a grad of the output
    neither differentiates nor stores activations for them). frozen = 0: one plain scan.
    Returns (x, ys) with ys stacked over all layers, as lax.scan would."""
    if not frozen:
        return jax.lax.scan(body, x, xs)
    lower = jax.tree.map(lambda a: jax.lax.stop_gradient(a[:frozen]), xs)
    x, ys_lo = jax.lax.scan(body, jax.lax.stop_gradient(x), lower)
    x, ys_hi = jax.lax.scan(body, x, jax.tree.map(lambda a: a[frozen:], xs))
    return x, jax.tree.map(lambda a, b: jnp.concatenate([a, b]), ys_lo, ys_hi)
