"""The orchestrator: backbone -> pooled query vector -> expert-selection logits [B, E].

The head scores every (query, expert) pair as

    logits[b, e] = <h_b, u_e> + bias_e + <w, logit(f[b, e, :])>

  h_b = MLP([q_b ; f_b flattened])  the query's representation, from the pooled backbone
                                    vector q [B, D] and the side features f [B, E, P]
  u_e, bias_e                       the expert's learned embedding row and prior (log-odds)
  f[b, e, :]                        expert e's own side features for query b (retrieval
                                    outcomes of its neighbours, its subject prior), entering
                                    through weights w [P] shared by all experts

Sharing w across experts is the inductive bias that "how well did this expert do on similar
questions" means the same for every expert; it also lets a new expert be added by fitting
only its row (u_e, bias_e). logits are log-odds that expert e answers query b correctly.

Anchored head (`anchor` >= 0): logits = logit(f[b, e, anchor]) + the correction above, with
u_e starting at zero, so the untrained head *is* that side feature (the subject prior or a
retrieval estimate) and training learns only a residual. Evaluated at step 0 (loop.py), the
early stopping on VAL can then never pick a head worse than the estimate it starts from.

Ensemble (`members` = M > 1): M heads of the same shape, every parameter with a leading [M]
axis, initialised and dropped out independently and trained on the same batches, each on its
own loss (`member_logits` [M, B, E]); the logits are logit(mean_m sigmoid(logits_m)), the
deep-ensemble mean of p, so calibration, the kernel and the policy see one router.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from leeroo_jax.models import layers
from leeroo_jax.models.decoder import Decoder
from leeroo_jax.models.encoder import Encoder


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    query_dim: int  # D of the pooled backbone vector
    num_experts: int  # E
    num_side: int = 0  # P side features per expert
    hidden: int = 256
    dropout: float = 0.1
    anchor: int = -1  # index of the side feature the logits start from; -1 = a free head
    members: int = 1  # M heads averaged in p (an ensemble); 1 = one head, parameters without the [M] axis


def _logit(p: jax.Array, eps: float = 0.02) -> jax.Array:
    p = jnp.clip(p, eps, 1 - eps)
    return jnp.log(p) - jnp.log1p(-p)


class Head(nnx.Module):
    def __init__(self, cfg: HeadConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d_in = cfg.query_dim + cfg.num_experts * cfg.num_side
        m = (cfg.members,) if cfg.members > 1 else ()

        def p(init, shape, axes):  # an ensemble's parameters carry a leading, unsharded [M] axis
            return layers.param(rngs, init, m + shape, (None,) * len(m) + axes, jnp.float32)

        glorot = nnx.initializers.glorot_uniform(batch_axis=tuple(range(len(m))))  # fans of one member
        self.w1 = p(glorot, (d_in, cfg.hidden), ("embed", "mlp"))
        self.b1 = p(layers.zeros_init, (cfg.hidden,), ("mlp",))
        self.w2 = p(glorot, (cfg.hidden, cfg.hidden), ("mlp", None))
        self.b2 = p(layers.zeros_init, (cfg.hidden,), (None,))
        rows_init = layers.zeros_init if cfg.anchor >= 0 else nnx.initializers.normal(0.05)  # anchored: no correction yet
        self.experts = p(rows_init, (cfg.num_experts, cfg.hidden), ("experts", None))
        self.bias = p(layers.zeros_init, (cfg.num_experts,), ("experts",))
        self.side_w = p(layers.zeros_init, (max(cfg.num_side, 1),), (None,))

    def _w(self, name: str) -> jax.Array:
        """Parameter `name` with its [M] axis (added when M = 1)."""
        v = getattr(self, name)[...]
        return v if self.cfg.members > 1 else v[None]

    def features(self, q_bd: jax.Array, side_bep: jax.Array | None = None, dropout_key: jax.Array | None = None):
        """(h [M, B, H] each member's query representation, side_logit [B, E, P] or None)."""
        b = q_bd.shape[0]
        x = q_bd.astype(jnp.float32)
        side_logit = None
        if self.cfg.num_side:
            side_logit = _logit(side_bep.astype(jnp.float32))
            x = jnp.concatenate([x, side_logit.reshape(b, -1)], axis=-1)
        h = jax.nn.gelu(jnp.einsum("bd,mdh->mbh", x, self._w("w1")) + self._w("b1")[:, None])
        if dropout_key is not None and self.cfg.dropout > 0:  # independent masks per member
            keep = jax.random.bernoulli(dropout_key, 1.0 - self.cfg.dropout, h.shape[1:] if self.cfg.members == 1 else h.shape)
            h = jnp.where(keep, h / (1.0 - self.cfg.dropout), 0.0)
        return jax.nn.gelu(jnp.einsum("mbh,mhk->mbk", h, self._w("w2")) + self._w("b2")[:, None]), side_logit

    def member_logits(self, q_bd: jax.Array, side_bep: jax.Array | None = None,
                      dropout_key: jax.Array | None = None) -> jax.Array:
        """logits [M, B, E] f32 of each member (the training loss is each member's own)."""
        h, side_logit = self.features(q_bd, side_bep, dropout_key)
        logits = jnp.einsum("mbh,meh->mbe", h, self._w("experts")) + self._w("bias")[:, None]
        if self.cfg.num_side:
            logits = logits + jnp.einsum("bep,mp->mbe", side_logit, self._w("side_w"))
        if self.cfg.anchor >= 0:
            logits = logits + side_logit[..., self.cfg.anchor]
        return logits

    def __call__(self, q_bd: jax.Array, side_bep: jax.Array | None = None, dropout_key: jax.Array | None = None) -> jax.Array:
        """q [B, D], side [B, E, P] in [0, 1] (or None when num_side == 0) -> logits [B, E] f32.

        dropout_key: dropout is applied only when a key is given (training); the caller derives
        it as fold_in(seed_key, step), so a resumed run draws the same masks.
        """
        return combine(self.member_logits(q_bd, side_bep, dropout_key))


def combine(logits_mbe: jax.Array) -> jax.Array:
    """[M, B, E] -> [B, E]: logit of the members' mean p (the one member's logits when M = 1)."""
    if logits_mbe.shape[0] == 1:
        return logits_mbe[0]
    p = jnp.clip(jnp.mean(jax.nn.sigmoid(logits_mbe), axis=0), 1e-7, 1 - 1e-7)
    return jnp.log(p) - jnp.log1p(-p)


class Orchestrator(nnx.Module):
    """Backbone (optional: None when training on cached frozen embeddings) + head.

    frozen_layers: the backbone's first n layers and its embeddings run outside autodiff
    (fine-tuning the last k layers sets n = L - k; 0 with a backbone = full fine-tuning).
    """

    def __init__(self, head: Head, backbone: Encoder | Decoder | None = None, pooling: str = "mean",
                 frozen_layers: int = 0):
        self.head, self.backbone, self.pooling, self.frozen_layers = head, backbone, pooling, frozen_layers

    def embed(self, tokens_bt: jax.Array, mask_bt: jax.Array) -> jax.Array:
        """Pooled query vectors [B, D] f32."""
        if isinstance(self.backbone, Decoder):
            hidden = self.backbone(tokens_bt, mask_bt, compute_logits=False, frozen_layers=self.frozen_layers).hidden
        else:
            hidden = self.backbone(tokens_bt, mask_bt, frozen_layers=self.frozen_layers).hidden
        return layers.POOLERS[self.pooling](hidden, mask_bt).astype(jnp.float32)

    def __call__(self, tokens_bt: jax.Array, mask_bt: jax.Array, side_bep: jax.Array | None = None,
                 dropout_key: jax.Array | None = None) -> jax.Array:
        return self.head(self.embed(tokens_bt, mask_bt), side_bep, dropout_key)

    def member_logits(self, tokens_bt: jax.Array, mask_bt: jax.Array, side_bep: jax.Array | None = None,
                      dropout_key: jax.Array | None = None) -> jax.Array:
        return self.head.member_logits(self.embed(tokens_bt, mask_bt), side_bep, dropout_key)
