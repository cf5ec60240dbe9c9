"""Reference routers, always reported beside ours. Each returns p[Q, E] for the eval questions.

All are fitted on TRAIN outcomes only, with the observed mask: an unobserved (query, expert)
pair never counts as a failure.
"""

from __future__ import annotations

import numpy as np


def global_accuracy(outcome: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """[E] mean outcome over observed pairs."""
    return (outcome * observed).sum(0) / np.maximum(observed.sum(0), 1)


def subject_prior(train_subjects: np.ndarray, outcome: np.ndarray, observed: np.ndarray,
                  eval_subjects: np.ndarray, strength: float = 20.0) -> np.ndarray:
    """Each expert's TRAIN accuracy in the query's subject, shrunk toward its global accuracy:
    (n·acc_subject + strength·acc_global) / (n + strength), n = observed TRAIN pairs in the subject."""
    glob = global_accuracy(outcome, observed)
    p = np.tile(glob, (len(eval_subjects), 1))
    for s in np.unique(eval_subjects):
        rows = train_subjects == s
        n = observed[rows].sum(0)
        hits = (outcome[rows] * observed[rows]).sum(0)
        p[eval_subjects == s] = (hits + strength * glob) / (n + strength)
    return p


def knn(train_vecs: np.ndarray, outcome: np.ndarray, observed: np.ndarray, eval_vecs: np.ndarray,
        k: int, batch: int = 2048) -> np.ndarray:
    """Mean outcome of each expert over the query's k nearest TRAIN questions (cosine).

    Neighbours that did not observe an expert do not vote for it; an expert no neighbour
    observed falls back to its global accuracy.
    """
    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    tr, ev = unit(train_vecs.astype(np.float32)), unit(eval_vecs.astype(np.float32))
    glob = global_accuracy(outcome, observed)
    out = np.empty((len(ev), outcome.shape[1]))
    obs = observed.astype(np.float32)
    hit = (outcome * observed).astype(np.float32)
    for s in range(0, len(ev), batch):
        sims = ev[s:s + batch] @ tr.T  # [b, N_train]
        nn = np.argpartition(-sims, kth=min(k, sims.shape[1] - 1), axis=1)[:, :k]  # [b, k]
        n = obs[nn].sum(1)  # [b, E]
        out[s:s + batch] = np.where(n > 0, hit[nn].sum(1) / np.maximum(n, 1), glob)
    return out
