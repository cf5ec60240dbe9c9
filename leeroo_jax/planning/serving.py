"""Memory of the pool's live experts at serving: weights and KV cache, per device.

An expert (experts/live.py) is our Decoder loaded with `dtype` = the pool entry's dtype for
weights and compute, its weights placed by the logical rules on the job's mesh, its batches
split over the data axes (rows padded up to a multiple of data x fsdp). Generation keeps a
`decoder.KVCache`: k and v [L, B, S, K, d] in the compute dtype plus valid [B, S] bool. The
cache carries no sharding annotation of its own; it inherits the batch split of its tokens
and the KV-head split of wk/wv, which is what its logical names ("batch", "kv_heads") give
under the rules, so that is how it is counted here.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from leeroo_jax import sharding
from leeroo_jax.data.pool import Pool
from leeroo_jax.errors import ConfigError
from leeroo_jax.models import hf
from leeroo_jax.models.decoder import Decoder
from leeroo_jax.planning import shapes

KV_AXES = ("layers", "batch", "length", "kv_heads", "head_dim")


@dataclasses.dataclass(frozen=True)
class ExpertMemory:
    name: str
    checkpoint: str
    dtype: str
    params: int  # parameter count
    weight_bytes: int  # per device
    kv_bytes: int  # per device: k + v + valid
    kv_total_bytes: int  # the whole cache, all devices
    rows: int  # B of the cache (kv_batch padded to the data axes)
    slots: int  # S of the cache


def kv_cache_shapes(cfg: hf.DecoderConfig, rows: int, slots: int, dtype) -> list[tuple[tuple[int, ...], tuple, object]]:
    """(shape, logical axes, dtype) of KVCache.zeros(cfg, rows, slots, dtype)'s arrays."""
    kv = (cfg.num_layers, rows, slots, cfg.num_kv_heads, cfg.head_dim)
    return [(kv, KV_AXES, dtype), (kv, KV_AXES, dtype), ((rows, slots), ("batch", "length"), jnp.bool_)]


def _bytes(shape, dtype) -> int:
    return math.prod(shape) * jnp.dtype(dtype).itemsize


def expert_memory(name: str, checkpoint: str, dtype: str, mesh: Mesh, kv_batch: int, kv_len: int) -> ExpertMemory:
    cfg = shapes.model_config(checkpoint, f"expert {name}: checkpoint")
    if not isinstance(cfg, hf.DecoderConfig):
        raise ConfigError(f"expert {name}: {checkpoint} is a {cfg.model_type} encoder, not a decoder; a live expert "
                          "needs a causal LM config (Llama, Mistral, Qwen2)")
    dt = jnp.dtype(dtype)
    abstract = nnx.eval_shape(lambda: Decoder(cfg, dtype=dt, param_dtype=dt, rngs=nnx.Rngs(0)))
    state = shapes.sharded_state(nnx.state(abstract, nnx.Param), mesh)
    n_data = mesh.shape["data"] * mesh.shape["fsdp"]
    rows = -(-kv_batch // n_data) * n_data  # LiveExpert pads batches to a multiple of the data axes
    kv_dev = kv_all = 0
    for shape, axes, kdt in kv_cache_shapes(cfg, rows, kv_len, dt):
        s = NamedSharding(mesh, sharding.logical_to_spec(axes, shape, mesh))
        kv_dev += _bytes(s.shard_shape(shape), kdt)
        kv_all += _bytes(shape, kdt)
    return ExpertMemory(name, checkpoint, str(dt), shapes.count(state), shapes.device_bytes(state), kv_dev, kv_all,
                        rows, kv_len)


def pool_experts(cfg, mesh: Mesh, kv_batch: int, kv_len: int) -> list[ExpertMemory]:
    """Every live (backend='flax') expert of config.pool; recorded experts have no model here."""
    pool = Pool.from_config(cfg.pool)
    return [expert_memory(e.name, e.checkpoint, e.dtype, mesh, kv_batch, kv_len) for e in pool.experts if e.live]
