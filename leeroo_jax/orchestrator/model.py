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


def _logit(p: jax.Array, eps: float = 0.02) -> jax.Array:
    p = jnp.clip(p, eps, 1 - eps)
    return jnp.log(p) - jnp.log1p(-p)


class Head(nnx.Module):
    def __init__(self, cfg: HeadConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d_in = cfg.query_dim + cfg.num_experts * cfg.num_side
        p = lambda init, shape, axes: layers.param(rngs, init, shape, axes, jnp.float32)  # noqa: E731
        glorot = nnx.initializers.glorot_uniform()
        self.w1 = p(glorot, (d_in, cfg.hidden), ("embed", "mlp"))
        self.b1 = p(layers.zeros_init, (cfg.hidden,), ("mlp",))
        self.w2 = p(glorot, (cfg.hidden, cfg.hidden), ("mlp", None))
        self.b2 = p(layers.zeros_init, (cfg.hidden,), (None,))
        rows_init = layers.zeros_init if cfg.anchor >= 0 else nnx.initializers.normal(0.05)  # anchored: no correction yet
        self.experts = p(rows_init, (cfg.num_experts, cfg.hidden), ("experts", None))
        self.bias = p(layers.zeros_init, (cfg.num_experts,), ("experts",))
        self.side_w = p(layers.zeros_init, (max(cfg.num_side, 1),), (None,))

    def features(self, q_bd: jax.Array, side_bep: jax.Array | None = None, dropout_key: jax.Array | None = None):
        """(h [B, H] the query representation, side_logit [B, E, P] or None)."""
        b = q_bd.shape[0]
        x = q_bd.astype(jnp.float32)
        side_logit = None
        if self.cfg.num_side:
            side_logit = _logit(side_bep.astype(jnp.float32))
            x = jnp.concatenate([x, side_logit.reshape(b, -1)], axis=-1)
        h = jax.nn.gelu(x @ self.w1[...] + self.b1[...])
        if dropout_key is not None and self.cfg.dropout > 0:
            keep = jax.random.bernoulli(dropout_key, 1.0 - self.cfg.dropout, h.shape)
            h = jnp.where(keep, h / (1.0 - self.cfg.dropout), 0.0)
        return jax.nn.gelu(h @ self.w2[...] + self.b2[...]), side_logit

    def __call__(self, q_bd: jax.Array, side_bep: jax.Array | None = None, dropout_key: jax.Array | None = None) -> jax.Array:
        """q [B, D], side [B, E, P] in [0, 1] (or None when num_side == 0) -> logits [B, E] f32.

        dropout_key: dropout is applied only when a key is given (training); the caller derives
        it as fold_in(seed_key, step), so a resumed run draws the same masks.
        """
        h, side_logit = self.features(q_bd, side_bep, dropout_key)
        logits = h @ self.experts[...].T + self.bias[...]
        if self.cfg.num_side:
            logits = logits + side_logit @ self.side_w[...]
        if self.cfg.anchor >= 0:
            logits = logits + side_logit[..., self.cfg.anchor]
        return logits


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
