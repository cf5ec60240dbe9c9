"""The scoring path: questions -> tokens -> backbone -> pooled vector -> logits -> selection.

`score` is the whole path for one token batch in one jitted program. `route_texts` runs it
over any number of questions: sorted by token count and cut into fixed-size batches padded to
a length bucket (one compiled program per bucket), each batch split over the mesh's data axes
with the expert tables replicated. `batch_budget` constrains the mean cost over *all* routed
questions, so in that mode every bucket is scored first and the kernel runs once over the set.
The side features [N, E, P] come in from the caller (a host-side lookup, like a vector index).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from leeroo_jax import sharding
from leeroo_jax.orchestrator import pcal, select
from leeroo_jax.orchestrator.backbone import Backbone
from leeroo_jax.orchestrator.model import Orchestrator


@functools.partial(jax.jit, static_argnums=0)
def score(graphdef, state, tokens_bt, attn_bt, side_bep, cost_be, available_e, budget: select.Budget,
          cal: pcal.Calibration):
    """(calibrated p [B, E], Selection) for one token batch."""
    model = nnx.merge(graphdef, state)
    p = cal.apply(jax.nn.sigmoid(model(tokens_bt, attn_bt, side_bep)))
    return p, select.select(p, cost_be, available_e, budget)


def route_texts(model: Orchestrator, bb: Backbone, texts: list[str], side: np.ndarray, cost: np.ndarray,
                budget: select.Budget, mesh, batch_size: int = 64,
                cal: pcal.Calibration | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(p [N, E], choice [N]) for texts with side features [N, E, P] and costs [N, E] (float32);
    p through the run's calibration `cal` (orchestrator/pcal.py) when given."""
    cal = cal if cal is not None else pcal.Calibration("none")
    graphdef, state = nnx.split(model)
    table = bb.token_table(texts, bucket_step=32)
    n_data = mesh.shape["data"] * mesh.shape["fsdp"]
    avail = jnp.ones(cost.shape[1], bool)
    per_query = budget if budget.mode != "batch_budget" else select.Budget.tradeoff(0.0)
    p, choice = np.empty(cost.shape, np.float32), np.empty(len(texts), np.int32)
    batch_size = -(-batch_size // n_data) * n_data  # splits over the data axes
    order = np.argsort(table.lengths, kind="stable")
    mine = sharding.local_rows(batch_size, mesh)  # this process's rows of every batch (all of them in one)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        rows = np.concatenate([idx, np.full(batch_size - len(idx), idx[-1])])[mine]  # padded by the last row
        tokens, attn = table.pack(rows, length=table.length(idx))  # fixed batch: one program per length bucket
        batch = sharding.shard_batch((tokens, attn, side[rows], cost[rows]), mesh, batch_size)  # tables replicated
        with jax.set_mesh(mesh):
            pb, sel = score(graphdef, state, *batch, avail, per_query, cal)
        p[idx], choice[idx] = sharding.gather(pb)[: len(idx)], sharding.gather(sel.choice)[: len(idx)]
    if budget.mode == "batch_budget":
        choice = np.asarray(select.select(jnp.asarray(p), jnp.asarray(cost), avail, budget).choice)
    return p, choice
