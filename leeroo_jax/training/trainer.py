"""The model, optimizer state and data of one training run, in any backbone mode.

  frozen  the backbone's pooled vectors come from the on-disk cache; the step trains the head
  last_k  the backbone runs inside the step; its top `last_k` layers learn with the head
  full    every backbone weight learns (embeddings included), at layer-wise rates

The state (model + nnx.Optimizer) lives on a `data/fsdp/tensor` mesh: every parameter and
its Adam moments on the sharding its logical axes give (sharding.state_shardings), batches
split along the data axes. The batch of step s depends on (seed, s) alone (batches.py).
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from leeroo_jax import sharding
from leeroo_jax.errors import ConfigError
from leeroo_jax.eval import baselines
from leeroo_jax.eval import frontier as fr
from leeroo_jax.orchestrator import features
from leeroo_jax.orchestrator.backbone import TokenTable
from leeroo_jax.orchestrator.model import Head, HeadConfig, Orchestrator
from leeroo_jax.training import batches, optim, step
from leeroo_jax.training.checkpoint import BEST_METRIC

MODES = ("frozen", "last_k", "full")


def side_features(cfg, data: baselines.Prepared, vecs: np.ndarray) -> np.ndarray:
    """[Q, E, P] side features from TRAIN records (leave-one-out for TRAIN queries)."""
    tr, e = data.rows("train"), len(data.pool)
    cols = []
    ks = tuple(int(k) for k in cfg.train.side_knn)
    if ks:
        knn = features.neighbour_outcomes(vecs, tr, data.outcome, data.observed, ks)
        cols += [knn[:, i * e:(i + 1) * e] for i in range(len(ks))]
    if cfg.train.side_prior:
        cols.append(features.subject_prior_loo(data.subjects, tr, data.outcome, data.observed, cfg.eval.subject_strength))
    return np.stack(cols, axis=-1).astype(np.float32) if cols else np.zeros((len(vecs), e, 0), np.float32)


def make_mesh(cfg) -> jax.sharding.Mesh:
    return sharding.make_mesh(sharding.MeshConfig(**cfg.mesh.to_dict()))


class Trainer:
    """vecs [Q, D] frozen embeddings (the head's input in frozen mode, the kNN space always);
    side [Q, E, P]; backbone (a weights.loader.Loaded) and tokens (a TokenTable over the same
    Q questions) only in the fine-tuning modes."""

    def __init__(self, cfg, data: baselines.Prepared, vecs: np.ndarray, side: np.ndarray, mesh=None,
                 backbone=None, tokens: TokenTable | None = None):
        t = cfg.train
        self.cfg, self.data, self.vecs, self.side = cfg, data, vecs.astype(np.float32), side
        self.backbone = backbone  # the Loaded checkpoint (tokenizer, config) in fine-tuning modes
        self.mesh = mesh if mesh is not None else make_mesh(cfg)
        self.n_data = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        if t.batch_size % self.n_data:
            raise ConfigError(f"config.train.batch_size={t.batch_size} does not split over the mesh's {self.n_data} "
                              "data-parallel devices; use a multiple of it")
        head = Head(HeadConfig(vecs.shape[1], len(data.pool), side.shape[-1], t.hidden, t.dropout), rngs=nnx.Rngs(t.seed))
        num_layers, trainable = 0, None
        if t.mode == "frozen":
            model, self.tokens = Orchestrator(head), None
        else:
            if backbone is None or tokens is None:
                raise ValueError(f"train.mode={t.mode} needs the backbone and its token table")
            num_layers = backbone.config.num_layers
            trainable = min(t.last_k, num_layers) if t.mode == "last_k" else None
            model = Orchestrator(head, backbone.model, cfg.backbone.pooling,
                                 frozen_layers=num_layers - trainable if trainable else 0)
            self.tokens = tokens
            self.train_by_length = tokens.sort_by_length(data.rows("train"))
        acc = t.accumulate
        self.opt_cfg = optim.OptimConfig(
            lr=t.lr, warmup_steps=t.warmup_steps // acc, total_steps=t.steps // acc, weight_decay=t.weight_decay,
            clip_norm=t.clip_norm, backbone_lr_scale=t.backbone_lr_scale, layer_decay=t.layer_decay,
            num_layers=num_layers, trainable_layers=trainable, accumulate=acc)
        opt = nnx.Optimizer(model, optim.make(self.opt_cfg), wrt=nnx.Param)
        self.graphdef, state = nnx.split((model, opt))
        self.state = jax.device_put(state, sharding.state_shardings(state, self.mesh))
        self.key = jax.random.key(t.seed)
        self.train_rows = data.rows("train")
        self.target = data.outcome.astype(np.float32)
        if t.soft_weight > 0:  # blend in the soft label (gold-letter probability) where recorded
            soft = np.nan_to_num(data.soft, nan=-1.0)
            self.target = np.where(soft >= 0, (1 - t.soft_weight) * self.target + t.soft_weight * soft, self.target)

    def _query(self, rows: np.ndarray) -> dict:
        """The query part of a batch for `rows`, padded to a multiple of the data axes."""
        n = -(-len(rows) // self.n_data) * self.n_data
        padded = np.concatenate([rows, np.full(n - len(rows), rows[-1])])
        if self.tokens is None:
            return {"q": self.vecs[padded], "side": self.side[padded]}
        tokens, attn = self.tokens.pack(rows, self.n_data)
        return {"tokens": tokens, "attn": attn, "side": self.side[padded]}

    def batch(self, s: int) -> dict:
        t = self.cfg.train
        if self.tokens is None:
            idx = batches.uniform_rows(self.train_rows, t.batch_size, t.seed, s)
        else:
            idx = batches.length_grouped_rows(self.train_by_length, t.batch_size, t.seed, s)
        b = {**self._query(idx), "target": self.target[idx], "mask": self.data.observed[idx].astype(np.float32)}
        return sharding.shard_batch(b, self.mesh)

    def predict(self, rows: np.ndarray, state=None) -> np.ndarray:
        """p [len(rows), E], dropout off. Fine-tuning modes go through length-sorted batches."""
        chunk = 4096 if self.tokens is None else 64
        order = np.arange(len(rows)) if self.tokens is None else np.argsort(self.tokens.lengths[rows], kind="stable")
        out = np.empty((len(rows), len(self.data.pool)), np.float32)
        for s in range(0, len(rows), chunk):
            sel = order[s:s + chunk]
            batch = sharding.shard_batch(self._query(rows[sel]), self.mesh)
            out[sel] = np.asarray(step.predict(self.graphdef, state or self.state, batch))[: len(sel)]
        return out

    def val_metrics(self) -> dict:
        rows = self.data.rows("val")
        cost, outcome = self.data.cost[rows], self.data.outcome[rows]
        summ = fr.summarize(fr.sweep(self.predict(rows), cost, outcome), list(self.data.pool.names), cost, outcome)
        return {BEST_METRIC: summ.aiq, "val_acc_at_weak_cost": summ.acc_at_cost_of[self.cfg.eval.weak]}
