"""Free-form queries -> calibrated p [N, E] -> one expert each under a budget, in fixed shapes.

The batch route job (jobs/route.py) scores a known set of questions once. A server scores
whatever arrives, so every shape it can meet is compiled before the first request:

    texts --tokenize--> tokens [B, T]     B in batch_sizes, T a power of two <= max_length
          --embed (jit, per B x T)--> q [B, D]           the orchestrator's pooled query vector
          --search TRAIN (jit)--> neighbours [B, K]      K = max(side_knn, SUBJECT_K), nearest first
          --(host)--> side [B, E, P]                     and a subject for a query without one
          --head + calibration + select (jit, per B x budget mode)--> p [B, E], choice [B]

A free-form query has no subject: its first SUBJECT_K neighbours vote one
(features.vote_subject), which feeds the subject prior like a labelled question's.
The kNN features use the *pretrained* backbone's vector, as in training (data.vecs); in
frozen mode that is q itself, so one backbone pass serves both. The search runs on device
behind the backbone, not in NumPy: the host's BLAS threads would otherwise spin against
XLA's on the same cores (on 2 CPU cores that made a batch-1 request ~1.5x slower).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from leeroo_jax import sharding
from leeroo_jax.jobs.runs import Run, scoring_model
from leeroo_jax.orchestrator import features, pcal, select
from leeroo_jax.orchestrator.model import Orchestrator as OrchestratorModel
from leeroo_jax.weights import assets
from leeroo_jax.weights.loader import load

SUBJECT_K = 20  # neighbours that vote a free-form query's subject


@functools.partial(jax.jit, static_argnums=0)
def _embed(graphdef, state, tokens_bt, mask_bt):
    """Pooled query vectors [B, D] f32 of an Orchestrator model (its backbone, fine-tuned or not)."""
    return nnx.merge(graphdef, state).embed(tokens_bt, mask_bt)


@functools.partial(jax.jit, static_argnums=2)
def _search(vec_bd, train_unit_td, k: int):
    """(idx [B, k] int32, sims [B, k]): the k TRAIN rows nearest each vector by cosine, nearest
    first (features.nearest on device)."""
    unit = vec_bd / jnp.maximum(jnp.linalg.norm(vec_bd, axis=1, keepdims=True), 1e-12)
    sims, idx = jax.lax.top_k(unit @ train_unit_td.T, k)
    return idx, sims


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

    def __init__(self, run: Run, batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32, 64)):
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
        d, tr = run.data, run.data.rows("train")  # the kNN index: TRAIN questions and their records
        self._train_unit = sharding.replicated(features.unit(d.vecs[tr]), self.mesh)  # [T, D] on device
        self._train_subjects, self._train_outcome, self._train_observed = d.subjects[tr], d.outcome[tr], d.observed[tr]
        self._k = min(max([SUBJECT_K, *(int(k) for k in run.cfg.train.side_knn)]), len(tr))

    def _bucket(self, n: int) -> int:
        return next((b for b in self.batch_sizes if b >= n), self.batch_sizes[-1])

    def _length(self, n: int) -> int:
        return next(t for t in self.lengths if t >= min(n, self.lengths[-1]))

    def _padded(self, idx: np.ndarray) -> np.ndarray:
        """idx padded to its batch bucket with copies of its last row."""
        return np.concatenate([idx, np.full(self._bucket(len(idx)) - len(idx), idx[-1])])

    def _groups(self, lengths: np.ndarray) -> list[tuple[np.ndarray, int]]:
        """(row indices, T) per call: rows grouped by length bucket, each group cut to the largest
        batch bucket, so no row is padded past twice its length nor a batch past twice its rows."""
        bucket = np.array([self._length(int(n)) for n in lengths])
        top = self.batch_sizes[-1]
        return [(idx[s:s + top], t) for t in self.lengths for idx in [np.flatnonzero(bucket == t)]
                for s in range(0, len(idx), top)]

    def _side(self, neighbours: np.ndarray, subjects: np.ndarray) -> np.ndarray:
        """[N, E, P] side features over the TRAIN records (trainer.side_features, from the
        neighbours [N, K] searched on device)."""
        cfg = self.run.cfg
        return features.side_features(None, subjects, None, self._train_subjects, self._train_outcome,
                                      self._train_observed, tuple(int(k) for k in cfg.train.side_knn),
                                      bool(cfg.train.side_prior), float(cfg.eval.subject_strength),
                                      neighbours=neighbours)

    def p(self, texts: Sequence[str], subjects: Sequence[str | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated p [N, E], the subject [N] each text was scored under). A text's subject
        (None: voted by its TRAIN neighbours) picks its subject-prior feature.

        The backbone and the search run per length group (all dispatched before any is read
        back); the side features and the head then run once over the whole batch."""
        n = len(texts)
        table = self.bb.token_table(texts)
        q = np.empty((n, self._train_unit.shape[1]), np.float32)
        nn, sims, pending = np.empty((n, self._k), np.int64), np.empty((n, self._k), np.float32), []
        with jax.set_mesh(self.mesh):
            for idx, t in self._groups(table.lengths):
                rows = self._padded(idx)
                tokens, mask = sharding.shard_batch(table.pack(rows, length=t), self.mesh, len(rows))
                qg = _embed(*self._model, tokens, mask)
                vg = qg if self._pretrained is None else _embed(*self._pretrained, tokens, mask)  # frozen: the same
                pending.append((idx, qg, _search(vg, self._train_unit, self._k)))
            for idx, qg, found in pending:
                q[idx] = sharding.gather(qg)[: len(idx)]
                nn[idx], sims[idx] = (sharding.gather(a)[: len(idx)] for a in found)
        voted = features.vote_subject(nn[:, :SUBJECT_K], sims[:, :SUBJECT_K], self._train_subjects)
        subj = np.array([s or v for s, v in zip(subjects if subjects is not None else [None] * n, voted)], object)
        side = self._side(nn, subj)
        p = np.empty((n, len(self.run.data.pool)), np.float32)
        top = self.batch_sizes[-1]
        with jax.set_mesh(self.mesh):
            for s in range(0, n, top):
                idx = np.arange(s, min(s + top, n))
                rows = self._padded(idx)
                qb, sb = sharding.shard_batch((q[rows], side[rows]), self.mesh, len(rows))
                p[idx] = sharding.gather(_p(*self._head, qb, sb, self.run.calibration))[: len(idx)]
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
