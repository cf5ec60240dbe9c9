"""Side features of a query for the orchestrator head, computed from TRAIN records only.

Retrieval features (the "retrieval-augmented" routers of the literature): for each query,
each expert's mean graded outcome over the query's k nearest TRAIN questions in the
backbone's embedding space, for a few k, plus each expert's subject prior. For a TRAIN
query its own record is left out, so the features the head trains on are as uninformed
about the query's own outcome as they will be for a new question.

Shapes: vecs [Q, D] unit-norm embeddings; outcome/observed [Q, E]; returns [Q, F] float32.
"""

from __future__ import annotations

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def neighbour_outcomes(vecs: np.ndarray, train_rows: np.ndarray, outcome: np.ndarray, observed: np.ndarray,
                       ks: tuple[int, ...], batch: int = 1024) -> np.ndarray:
    """[Q, len(ks) * E]: per k, each expert's mean outcome over the k nearest TRAIN neighbours
    that observed it (its TRAIN accuracy where none did). TRAIN queries exclude themselves."""
    v = _unit(vecs)
    tr = v[train_rows]
    obs = observed[train_rows].astype(np.float32)
    hit = (outcome[train_rows] * observed[train_rows]).astype(np.float32)
    glob = hit.sum(0) / np.maximum(obs.sum(0), 1)
    is_train = np.full(len(v), -1)
    is_train[train_rows] = np.arange(len(train_rows))
    kmax = max(ks)
    out = np.empty((len(v), len(ks) * outcome.shape[1]), np.float32)
    for s in range(0, len(v), batch):
        sims = v[s:s + batch] @ tr.T  # [b, N_train]
        self_idx = is_train[s:s + batch]
        rows = np.flatnonzero(self_idx >= 0)
        sims[rows, self_idx[rows]] = -np.inf  # leave-one-out
        nn = np.argpartition(-sims, kth=kmax, axis=1)[:, :kmax + 1]
        order = np.take_along_axis(sims, nn, 1).argsort(1)[:, ::-1]
        nn = np.take_along_axis(nn, order, 1)[:, :kmax]  # [b, kmax] nearest first
        feats = []
        for k in ks:
            n = obs[nn[:, :k]].sum(1)
            feats.append(np.where(n > 0, hit[nn[:, :k]].sum(1) / np.maximum(n, 1), glob))
        out[s:s + batch] = np.concatenate(feats, axis=1)
    return out


def subject_prior_loo(subjects: np.ndarray, train_rows: np.ndarray, outcome: np.ndarray, observed: np.ndarray,
                      strength: float = 20.0) -> np.ndarray:
    """[Q, E] shrunk per-subject TRAIN accuracy; a TRAIN query's own outcome is left out."""
    obs = observed.astype(np.float64)
    hit = outcome * obs
    in_train = np.zeros(len(subjects), bool)
    in_train[train_rows] = True
    glob = hit[in_train].sum(0) / np.maximum(obs[in_train].sum(0), 1)
    out = np.empty(outcome.shape, np.float32)
    for s in np.unique(subjects):
        rows = subjects == s
        tr = rows & in_train
        n, h = obs[tr].sum(0), hit[tr].sum(0)
        own_n = np.where(in_train[rows, None], obs[rows], 0)
        own_h = np.where(in_train[rows, None], hit[rows], 0)
        out[rows] = (h - own_h + strength * glob) / (n - own_n + strength)
    return out
