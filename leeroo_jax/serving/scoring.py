"""Free-form queries -> calibrated p [N, E] -> one expert each under a budget, in fixed shapes.

The batch route job (jobs/route.py) scores a known set of questions once. A server scores
whatever arrives, so every shape it can meet is compiled before the first request:

    texts --tokenize--> tokens [B, T]     B in batch_sizes, T a power of two <= max_length
          --embed (jit, per B x T)--> q [B, D]           the orchestrator's pooled query vector
          --kNN over TRAIN (host)--> side [B, E, P]      and a subject for a query without one
          --head + calibration + select (jit, per B x budget mode)--> p [B, E], choice [B]

A free-form query has no subject: it takes the one of its nearest TRAIN questions
(features.nearest_subject), which feeds the subject prior like a labelled question's.
The kNN features use the *pretrained* backbone's vector, as in training (data.vecs); in
frozen mode that is q itself, so one backbone pass serves both.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import numpy as np
from flax import nnx

from leeroo_jax import sharding
from leeroo_jax.jobs.runs import Run, scoring_model
from leeroo_jax.orchestrator import features, pcal, select
from leeroo_jax.orchestrator.model import Orchestrator as OrchestratorModel
from leeroo_jax.training.trainer import side_features
from leeroo_jax.weights import assets
from leeroo_jax.weights.loader import load

SUBJECT_K = 20  # neighbours that vote a free-form query's subject


@functools.partial(jax.jit, static_argnums=0)
def _embed(graphdef, state, tokens_bt, mask_bt):
    """Pooled query vectors [B, D] f32 of an Orchestrator model (its backbone, fine-tuned or not)."""
    return nnx.merge(graphdef, state).embed(tokens_bt, mask_bt)


@functools.partial(jax.jit, static_argnums=0)
def _p(graphdef, state, q_bd, side_bep, cal: pcal.Calibration):
    """Calibrated p [B, E]: the head, sigmoid, the run's calibration."""
    return cal.apply(jax.nn.sigmoid(nnx.merge(graphdef, state)(q_bd, side_bep)))


def length_buckets(max_length: int) -> tuple[int, ...]:
    """Powers of two from 16 up to max_length, and max_length itself."""
    out, t = [], 16
    while t < max_length:
        out.append(t)
        t *= 2
    return tuple(out) + (max_length,)


class Scorer:
    """A restored run's scoring path with every (batch, length) shape compiled by `warmup`."""

    def __init__(self, run: Run, batch_sizes: Sequence[int] = (1, 4, 16, 64)):
        self.run = run
        self.mesh = run.trainer.mesh
        n_data = self.mesh.shape["data"] * self.mesh.shape["fsdp"]  # a batch splits over these
        self.batch_sizes = tuple(sorted({-(-int(b) // n_data) * n_data for b in batch_sizes}))
        model, self.bb = scoring_model(run)
        self.lengths = length_buckets(self.bb.max_length)
        self._model = nnx.split(model)
        self._head = nnx.split(model.head)
        self._pretrained = None
        if run.trainer.backbone is not None:  # fine-tuned: kNN features come from the pretrained vectors
            cfg = run.cfg.backbone
            pre = OrchestratorModel(model.head, load(assets.backbone_path(cfg.path), self.mesh).model, cfg.pooling)
            self._pretrained = nnx.split(pre)
        tr = run.data.rows("train")
        self._train_vecs, self._train_subjects = run.data.vecs[tr], run.data.subjects[tr]

    def _bucket(self, n: int) -> int:
        return next((b for b in self.batch_sizes if b >= n), self.batch_sizes[-1])

    def _length(self, n: int) -> int:
        return next(t for t in self.lengths if t >= min(n, self.lengths[-1]))

    def _padded(self, idx: np.ndarray) -> np.ndarray:
        """idx padded to its batch bucket with copies of its last row."""
        return np.concatenate([idx, np.full(self._bucket(len(idx)) - len(idx), idx[-1])])

    def p(self, texts: Sequence[str], subjects: Sequence[str | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated p [N, E], the subject [N] each text was scored under). A text's subject
        (None: voted by its TRAIN neighbours) picks its subject-prior feature."""
        n, d = len(texts), self.run.data
        given = list(subjects) if subjects is not None else [None] * n
        table = self.bb.token_table(texts)
        p, subj = np.empty((n, len(d.pool)), np.float32), np.empty(n, object)
        top = self.batch_sizes[-1]
        for s in range(0, n, top):
            idx = np.arange(s, min(s + top, n))
            rows = self._padded(idx)
            b = len(rows)
            tokens, mask = table.pack(rows, length=self._length(int(table.lengths[idx].max())))
            with jax.set_mesh(self.mesh):
                q = _embed(*self._model, *sharding.shard_batch((tokens, mask), self.mesh, b))
                vec = q if self._pretrained is None else _embed(*self._pretrained, *sharding.shard_batch((tokens, mask), self.mesh, b))
                vec = sharding.gather(vec)  # [b, D] for the host-side kNN
                voted = features.nearest_subject(vec, self._train_vecs, self._train_subjects, SUBJECT_K)
                subj[idx] = [given[i] or voted[k] for k, i in enumerate(idx)]
                side = side_features(self.run.cfg, d, vec, subj[rows])
                pb = _p(*self._head, q, sharding.shard_batch(side, self.mesh, b), self.run.calibration)
            p[idx] = sharding.gather(pb)[: len(idx)]
        return p, subj.astype(str)

    def select(self, p: np.ndarray, cost: np.ndarray, available: np.ndarray, budget: select.Budget) -> np.ndarray:
        """choice [N] int32 (-1: nothing available) of the kernel, in the same batch buckets."""
        out = np.empty(len(p), np.int32)
        top = self.batch_sizes[-1]
        for s in range(0, len(p), top):
            idx = np.arange(s, min(s + top, len(p)))
            rows = self._padded(idx)
            sel = select.select(p[rows], cost[rows].astype(np.float32), np.asarray(available, bool), budget)
            out[idx] = np.asarray(sel.choice)[: len(idx)]
        return out

    def warmup(self, modes: Sequence[str] = ("cap", "tradeoff", "quality")) -> int:
        """Compile every (batch, length) program and every (batch, budget mode) selection before
        the first request; returns the number of shapes."""
        e = len(self.run.data.pool)
        for b in self.batch_sizes:
            for t in self.lengths:
                self.p(["x " * max(t - 2, 1)] * b)  # about t tokens: the length bucket is what matters
            for mode in modes:
                self.select(np.zeros((b, e), np.float32), np.zeros((b, e)), np.ones(e, bool), select.Budget(mode, 0.0))
        return len(self.batch_sizes) * (len(self.lengths) + len(modes))
