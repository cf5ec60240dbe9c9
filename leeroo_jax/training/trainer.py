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
from leeroo_jax.data.dataset import Dataset
from leeroo_jax.errors import ConfigError
from leeroo_jax.orchestrator import features
from leeroo_jax.orchestrator.backbone import Backbone, TokenTable
from leeroo_jax.orchestrator.model import Head, HeadConfig, Orchestrator
from leeroo_jax.training import batches, optim, step
from leeroo_jax.weights import assets
from leeroo_jax.weights.loader import load


def side_features(cfg, ds: Dataset, vecs: np.ndarray | None = None, subjects: np.ndarray | None = None) -> np.ndarray:
    """[N, E, P] side features from TRAIN records: of the dataset's own questions (TRAIN ones
    leave themselves out) or, given `vecs` [N, D] and `subjects` [N], of new questions."""
    tr = ds.rows("train")
    self_index = None
    if vecs is None:
        vecs, subjects = ds.vecs, ds.subjects
        self_index = np.full(len(ds.questions), -1)
        self_index[tr] = np.arange(len(tr))
    return features.side_features(vecs, subjects, ds.vecs[tr], ds.subjects[tr], ds.outcome[tr], ds.observed[tr],
                                  tuple(int(k) for k in cfg.train.side_knn), bool(cfg.train.side_prior),
                                  float(cfg.eval.subject_strength), self_index)


def anchor_index(cfg) -> int:
    """The side feature an anchored head starts from (config.train.anchor): "prior" -> the
    subject prior (the last one), "knn<k>" -> the k-neighbour outcomes; "" -> -1, a free head."""
    a, ks = cfg.train.get("anchor", ""), [int(k) for k in cfg.train.side_knn]
    if not a:
        return -1
    if a == "prior" and cfg.train.side_prior:
        return len(ks)
    if a.startswith("knn") and a[3:].isdigit() and int(a[3:]) in ks:
        return ks.index(int(a[3:]))
    raise ConfigError(f"config.train.anchor={a!r} names no side feature of this config (side_knn={tuple(ks)}, "
                      f"side_prior={bool(cfg.train.side_prior)}); use '', prior or knn<k> with k in side_knn")


def optim_config(cfg, num_layers: int) -> optim.OptimConfig:
    """The optimizer of cfg.train for a backbone of num_layers layers (0: frozen mode, head only);
    the memory planner (planning/shapes.py) builds the same one abstractly."""
    t = cfg.train
    trainable = min(t.last_k, num_layers) if t.mode == "last_k" else None
    acc = t.accumulate
    return optim.OptimConfig(
        lr=t.lr, warmup_steps=t.warmup_steps // acc, total_steps=t.steps // acc, weight_decay=t.weight_decay,
        clip_norm=t.clip_norm, backbone_lr_scale=t.backbone_lr_scale, layer_decay=t.layer_decay,
        num_layers=num_layers if t.mode != "frozen" else 0, trainable_layers=trainable, accumulate=acc)


def make_mesh(cfg) -> jax.sharding.Mesh:
    return sharding.make_mesh(sharding.MeshConfig(**cfg.mesh.to_dict()))


class Trainer:
    """data.vecs [Q, D]: frozen embeddings (the head's input in frozen mode, the kNN space
    always); side [Q, E, P]; backbone (a weights.loader.Loaded) and tokens (a TokenTable over
    the same Q questions) only in the fine-tuning modes. Only TRAIN rows are ever batched."""

    def __init__(self, cfg, data: Dataset, side: np.ndarray, mesh=None, backbone=None,
                 tokens: TokenTable | None = None):
        t = cfg.train
        vecs = data.vecs
        self.cfg, self.data, self.vecs, self.side = cfg, data, vecs.astype(np.float32), side
        self.backbone = backbone  # the Loaded checkpoint (tokenizer, config) in fine-tuning modes
        self.mesh = mesh if mesh is not None else make_mesh(cfg)
        self.n_data = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        if t.batch_size % self.n_data:
            raise ConfigError(f"config.train.batch_size={t.batch_size} does not split over the mesh's {self.n_data} "
                              "data-parallel devices; use a multiple of it")
        head = Head(HeadConfig(vecs.shape[1], len(data.pool), side.shape[-1], t.hidden, t.dropout, anchor_index(cfg),
                               members=int(t.get("ensemble", 1))), rngs=nnx.Rngs(t.seed))
        num_layers = 0
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
        self.opt_cfg = optim_config(cfg, num_layers)
        opt = nnx.Optimizer(model, optim.make(self.opt_cfg), wrt=nnx.Param)
        self.graphdef, state = nnx.split((model, opt))
        self.state = jax.device_put(state, sharding.state_shardings(state, self.mesh))
        self.key = jax.random.key(t.seed)
        self.train_rows = data.rows("train")
        self.target = data.outcome.astype(np.float32)
        if t.soft_weight > 0:  # blend in the soft label (gold-letter probability) where recorded
            soft = np.nan_to_num(data.soft, nan=-1.0)
            self.target = np.where(soft >= 0, (1 - t.soft_weight) * self.target + t.soft_weight * soft, self.target)

    def _query(self, rows: np.ndarray) -> tuple[dict, int, np.ndarray]:
        """(this process's share of the query part of a global batch over `rows`, padded to a
        multiple of the data axes by repeating the last row; the global row count; the rows
        of that share)."""
        n = -(-len(rows) // self.n_data) * self.n_data
        padded = np.concatenate([rows, np.full(n - len(rows), rows[-1])])
        mine = padded[sharding.local_rows(n, self.mesh)]
        if self.tokens is None:
            return {"q": self.vecs[mine], "side": self.side[mine]}, n, mine
        tokens, attn = self.tokens.pack(mine, length=self.tokens.length(rows))  # one T for every process
        return {"tokens": tokens, "attn": attn, "side": self.side[mine]}, n, mine

    def batch(self, s: int) -> dict:
        """Step s's global batch (the same rows in every process, from the seed and s alone),
        each process building only its share."""
        t = self.cfg.train
        if self.tokens is None:
            idx = batches.uniform_rows(self.train_rows, t.batch_size, t.seed, s)
        else:
            idx = batches.length_grouped_rows(self.train_by_length, t.batch_size, t.seed, s)
        query, n, mine = self._query(idx)  # the batch size splits over the data axes: no padding
        b = {**query, "target": self.target[mine], "mask": self.data.observed[mine].astype(np.float32)}
        return sharding.shard_batch(b, self.mesh, n)

    def predict(self, rows: np.ndarray, state=None) -> np.ndarray:
        """p [len(rows), E], dropout off. Fine-tuning modes go through length-sorted batches."""
        chunk = 4096 if self.tokens is None else 64
        order = np.arange(len(rows)) if self.tokens is None else np.argsort(self.tokens.lengths[rows], kind="stable")
        out = np.empty((len(rows), len(self.data.pool)), np.float32)
        for s in range(0, len(rows), chunk):
            sel = order[s:s + chunk]
            query, n, _ = self._query(rows[sel])
            p = step.predict(self.graphdef, state or self.state, sharding.shard_batch(query, self.mesh, n))
            out[sel] = sharding.gather(p)[: len(sel)]
        return out

    def predict_samples(self, rows: np.ndarray, n: int, seed: int) -> np.ndarray:
        """p [n, len(rows), E] under n dropout masks (MC dropout), frozen mode."""
        if self.tokens is not None:
            raise ConfigError("MC-dropout sampling needs train.mode=frozen (self-play explores in frozen mode)")
        keys = jax.random.split(jax.random.key(seed), n)
        out = np.empty((n, len(rows), len(self.data.pool)), np.float32)
        for s in range(0, len(rows), 4096):
            sel = np.arange(s, min(s + 4096, len(rows)))
            query, n, _ = self._query(rows[sel])
            p = step.predict_samples(self.graphdef, self.state, sharding.shard_batch(query, self.mesh, n), keys)
            out[:, sel] = sharding.gather(p)[:, : len(sel)]
        return out


def build(cfg, data: Dataset) -> Trainer:
    """The Trainer for cfg.train.mode (data.vecs set), loading the backbone in fine-tuning modes."""
    mesh = make_mesh(cfg)
    side = side_features(cfg, data)
    if cfg.train.mode == "frozen":
        return Trainer(cfg, data, side, mesh)
    loaded = load(assets.backbone_path(cfg.backbone.path), mesh)
    bb = Backbone(loaded, cfg.backbone.pooling, cfg.backbone.max_length)
    table = bb.token_table(data.texts, bucket_step=32)  # few programs to compile
    return Trainer(cfg, data, side, mesh, loaded, table)
