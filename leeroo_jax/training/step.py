"""The jitted train and eval steps (pure functions over split nnx state, state donated).

Batch: the query as either q [B, D] pooled embeddings (frozen-backbone mode) or tokens [B, T]
with attn [B, T] (1 = real token; fine-tuning modes, the backbone runs inside the step), side
[B, E, P] side features, target [B, E] labels in [0, 1], mask [B, E] 1 where the (query,
expert) pair was observed.
The loss is binary cross-entropy on observed pairs only: an expert never called on a query
says nothing about it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx


def masked_bce(logits_be: jax.Array, target_be: jax.Array, mask_be: jax.Array) -> jax.Array:
    per = optax.sigmoid_binary_cross_entropy(logits_be, target_be)
    return jnp.sum(per * mask_be) / jnp.maximum(jnp.sum(mask_be), 1.0)


def _logits(model, batch, dropout_key=None):
    if "tokens" in batch:  # the dict's keys are static under jit: one program per batch kind
        return model(batch["tokens"], batch["attn"], batch.get("side"), dropout_key)
    return model.head(batch["q"], batch.get("side"), dropout_key)


def _member_logits(model, batch, dropout_key):
    """[M, B, E]: each ensemble member's logits (M = 1 for one head)."""
    if "tokens" in batch:
        return model.member_logits(batch["tokens"], batch["attn"], batch.get("side"), dropout_key)
    return model.head.member_logits(batch["q"], batch.get("side"), dropout_key)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def train_step(graphdef, state, batch, dropout_key):
    """One optimizer update. state = nnx.split((model, optimizer))[1]; returns (state, metrics).

    dropout_key = fold_in(seed_key, step): the step alone fixes the randomness.
    """
    model, optimizer = nnx.merge(graphdef, state)

    def loss_fn(model):  # an ensemble: the mean of its members' own losses (they learn independently)
        per_member = jax.vmap(masked_bce, (0, None, None))(_member_logits(model, batch, dropout_key),
                                                           batch["target"], batch["mask"])
        return jnp.mean(per_member)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
    return nnx.split((model, optimizer))[1], metrics


# fold_in(seed_key, step) as one dispatch: eager, it is several small ops (~0.2 ms a step,
# as much as a third of a frozen-mode step on 2 CPU cores; bench/train_step.py).
step_key = jax.jit(jax.random.fold_in)


@functools.partial(jax.jit, static_argnums=0)
def predict(graphdef, state, batch):
    """p [B, E] = sigmoid(logits), dropout off."""
    model, _ = nnx.merge(graphdef, state)
    return jax.nn.sigmoid(_logits(model, batch))


@functools.partial(jax.jit, static_argnums=0)
def predict_samples(graphdef, state, batch, keys):
    """p [S, B, E]: one sigmoid(logits) per dropout key [S], dropout on (MC dropout: S draws
    from the head's approximate posterior, for Thompson sampling and uncertainty)."""
    model, _ = nnx.merge(graphdef, state)
    return jax.vmap(lambda k: jax.nn.sigmoid(_logits(model, batch, k)))(keys)
