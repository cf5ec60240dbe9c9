"""Activation memory of a train step: what autodiff saves between the forward and backward pass.

Nothing here is a formula per architecture. The loss of the train step is traced with
`jax.vjp` on abstract arrays (`jax.make_jaxpr`, no compute, no memory) and the residuals the
backward pass needs are read off the traced program: every array the VJP closes over that is
not one of the step's inputs (weights and batch are counted elsewhere). Under `lax.scan` they
are the per-layer activations stacked over L, e.g. [L, b, T, D] hidden states.

Per device: the trace runs on the shapes one device sees. The batch is split over the data
axes (data x fsdp) by the rules, so the trace takes b = B / (data x fsdp) rows; with tensor
parallelism the Megatron split keeps heads, KV heads, MLP width and vocab divided by the
tensor axis (where the rules split them, i.e. where it divides) and the model width whole,
so the trace builds the backbone with those local sizes. The FSDP axis is not divided out
of the weights: a residual derived from a weight (the bfloat16 copy of a float32 weight
that a bf16 matmul saves) is counted whole, as gathered (the bf16 plan of configs/plan_v5e64.py
still lands within 3% of XLA:CPU's compiled peak). This is the layout the logical rules ask GSPMD for; what XLA then
does (fusion, buffer reuse, scheduling) is not modelled.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax.extend import core as jcore

from leeroo_jax.models import hf
from leeroo_jax.planning import shapes
from leeroo_jax.planning.spec import PlanSpec
from leeroo_jax.training.step import masked_bce


def _split(n: int, t: int) -> int:
    return n // t if t > 1 and n % t == 0 else n


def local_model_config(model_cfg, tensor: int):
    """The backbone one device holds under a tensor axis of size `tensor` (see the module doc).
    Query and KV heads are split together or not at all (GQA needs H / K whole)."""
    if tensor <= 1:
        return model_cfg
    if isinstance(model_cfg, hf.DecoderConfig):
        heads_split = model_cfg.num_heads % tensor == 0 and model_cfg.num_kv_heads % tensor == 0
        h = model_cfg.num_heads // tensor if heads_split else model_cfg.num_heads
        k = model_cfg.num_kv_heads // tensor if heads_split else model_cfg.num_kv_heads
        return dataclasses.replace(model_cfg, num_heads=h, num_kv_heads=k,
                                   intermediate_size=_split(model_cfg.intermediate_size, tensor),
                                   vocab_size=_split(model_cfg.vocab_size, tensor))
    heads = _split(model_cfg.num_heads, tensor)
    return _LocalEncoderConfig(**{**dataclasses.asdict(model_cfg), "num_heads": heads,
                                  "intermediate_size": _split(model_cfg.intermediate_size, tensor),
                                  "vocab_size": _split(model_cfg.vocab_size, tensor)},
                               local_head_dim=model_cfg.head_dim)


@dataclasses.dataclass(frozen=True)
class _LocalEncoderConfig(hf.EncoderConfig):
    """An encoder holding H / tensor of the heads: EncoderConfig derives head_dim from the
    width and the head count, which a head split must not change."""

    local_head_dim: int = 0

    @property
    def head_dim(self) -> int:
        return self.local_head_dim


def residual_bytes(fn, args: tuple, wrt: int = 0) -> int:
    """Bytes of the residuals `jax.vjp(fn, args[wrt])` saves, the other args held fixed;
    residuals that are an input of fn (any arg) or a literal are not counted, each array once."""
    def vjp_of(*a):
        def f(x):
            return fn(*a[:wrt], x, *a[wrt + 1:])
        return jax.vjp(f, a[wrt])

    closed, out_shape = jax.make_jaxpr(vjp_of, return_shape=True)(*args)
    jaxpr = closed.jaxpr
    n_res = len(jax.tree.leaves(out_shape[1]))
    inputs = set(jaxpr.invars) | set(jaxpr.constvars)
    seen, total = set(), 0
    for v in jaxpr.outvars[len(jaxpr.outvars) - n_res:]:
        if isinstance(v, jcore.Literal) or v in inputs or v in seen:
            continue
        seen.add(v)
        aval = v.aval
        if jnp.issubdtype(aval.dtype, jax.dtypes.prng_key):
            continue
        total += math.prod(aval.shape) * jnp.dtype(aval.dtype).itemsize
    return total


def _loss(graphdef, params, rest, batch, key):
    """The train step's loss (step.train_step's loss_fn): mean over ensemble members of the
    masked BCE of each member's logits [M, B, E]."""
    model = nnx.merge(graphdef, params, rest)
    if "tokens" in batch:
        logits = model.member_logits(batch["tokens"], batch["attn"], batch.get("side"), key)
    else:
        logits = model.head.member_logits(batch["q"], batch.get("side"), key)
    return jnp.mean(jax.vmap(masked_bce, (0, None, None))(logits, batch["target"], batch["mask"]))


def saved_bytes(cfg, ts: shapes.TrainShapes, spec: PlanSpec, data_ways: int, tensor: int) -> int:
    """Per-device bytes of activations saved for the backward pass of one step."""
    b = ts.batch_size // data_ways
    local_cfg = local_model_config(ts.model_cfg, tensor)
    model = nnx.eval_shape(lambda: shapes.build_orchestrator(cfg, local_cfg, ts.head_cfg, spec))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    batch = shapes.batch_shapes(ts.mode, b, ts.seq_len, ts.head_cfg)
    return residual_bytes(lambda p, r, bt, k: _loss(graphdef, p, r, bt, k), (params, rest, batch, ts.key))
