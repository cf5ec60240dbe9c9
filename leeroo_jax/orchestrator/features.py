"""What TRAIN records say about a query: its neighbours' outcomes and its subject's prior.

One implementation serves both the orchestrator head's side features and the reference
routers (eval/routers.py), for questions inside the dataset and new ones alike:

  neighbour_outcomes  each expert's mean graded outcome over the query's k nearest TRAIN
                      questions (cosine), for a few k (the "retrieval-augmented" router):
                      a search (`nearest`), then its outcomes (`knn_outcomes`)
  subject_prior       each expert's TRAIN accuracy in the query's subject, shrunk toward its
                      global TRAIN accuracy

Both only count observed (query, expert) pairs: an ungraded pair never counts as a failure,
and an expert no neighbour (no subject question) observed falls back to its global TRAIN
accuracy. `self_index[i]` names query i's own row among the TRAIN rows (-1 when it is not a
TRAIN question): that row is left out, so the features a head trains on are as uninformed
about a query's own outcome as they will be for a new question.

Shapes: query vecs [N, D]; train vecs [T, D], outcome / observed [T, E]; subjects [N] / [T].
"""

from __future__ import annotations

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm, float32 (cosine similarity is then a dot product)."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def global_accuracy(outcome: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """[E] mean outcome over observed pairs."""
    return (outcome * observed).sum(0) / np.maximum(observed.sum(0), 1)


def _self(self_index: np.ndarray | None, n: int) -> np.ndarray:
    return np.full(n, -1) if self_index is None else np.asarray(self_index)


def nearest(query_vecs: np.ndarray, train_vecs: np.ndarray, k: int, self_index: np.ndarray | None = None,
            batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(idx [N, k] int, sims [N, k] float32): each query's k nearest TRAIN rows by cosine,
    nearest first, its own row (self_index) left out. A server runs the same search on device
    (serving/scoring.py) and hands the result to the functions below."""
    q, tr = unit(query_vecs), unit(train_vecs)
    own = _self(self_index, len(q))
    k = min(k, len(tr))
    idx, top = np.empty((len(q), k), np.int64), np.empty((len(q), k), np.float32)
    for s in range(0, len(q), batch):
        sims = q[s:s + batch] @ tr.T  # [b, T]
        own_b = own[s:s + batch]
        rows = np.flatnonzero(own_b >= 0)
        sims[rows, own_b[rows]] = -np.inf  # leave-one-out
        idx[s:s + batch] = _top_k(sims, k)
        top[s:s + batch] = np.take_along_axis(sims, idx[s:s + batch], 1)
    return idx, top


def _top_k(sims: np.ndarray, k: int) -> np.ndarray:
    """[b, k] column indices of each row's k largest values, largest first, ties to the lower
    index: jax.lax.top_k's order, so the server's device search picks the same neighbours
    among duplicates (argpartition alone picks tied rows arbitrarily)."""
    part = np.argpartition(-sims, kth=k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(sims, part, 1).min(1)  # [b] each row's k-th largest value
    out = np.empty((len(sims), k), np.int64)
    for i, row in enumerate(sims):
        cand = np.flatnonzero(row >= kth[i])  # the top k and every row tied with the k-th, in index order
        out[i] = cand[np.argsort(-row[cand], kind="stable")[:k]]
    return out


def knn_outcomes(nn: np.ndarray, outcome: np.ndarray, observed: np.ndarray, ks: tuple[int, ...]) -> np.ndarray:
    """[N, len(ks) * E] float32: per k (k-major), each expert's mean outcome over the first k of
    the neighbours nn [N, >= max(ks)] that observed it (its global TRAIN accuracy where none did)."""
    obs = observed.astype(np.float32)
    hit = (outcome * observed).astype(np.float32)
    glob = global_accuracy(hit, obs)
    feats = []
    for k in ks:
        n = obs[nn[:, :k]].sum(1)  # [N, E]
        feats.append(np.where(n > 0, hit[nn[:, :k]].sum(1) / np.maximum(n, 1), glob))
    return np.concatenate(feats, axis=1).astype(np.float32)


def neighbour_outcomes(query_vecs: np.ndarray, train_vecs: np.ndarray, outcome: np.ndarray, observed: np.ndarray,
                       ks: tuple[int, ...], self_index: np.ndarray | None = None, batch: int = 1024) -> np.ndarray:
    """knn_outcomes over each query's max(ks) nearest TRAIN neighbours (the "retrieval-augmented"
    features), searched `batch` queries at a time."""
    nn, _ = nearest(query_vecs, train_vecs, min(max(ks), len(train_vecs) - 1), self_index, batch)
    return knn_outcomes(nn, outcome, observed, ks)


def vote_subject(nn: np.ndarray, sims: np.ndarray, train_subjects: np.ndarray) -> np.ndarray:
    """[N] the subject whose questions among the neighbours nn [N, k] (sims [N, k]) have the
    largest summed similarity; ties: the first name."""
    out = np.empty(len(nn), dtype=train_subjects.dtype)
    for i in range(len(nn)):
        names, inverse = np.unique(train_subjects[nn[i]], return_inverse=True)
        out[i] = names[np.argmax(np.bincount(inverse, weights=sims[i]))]
    return out


def nearest_subject(query_vecs: np.ndarray, train_vecs: np.ndarray, train_subjects: np.ndarray, k: int) -> np.ndarray:
    """[N] the subject of a query that has none (free-form text), voted by its k nearest TRAIN
    neighbours (vote_subject)."""
    return vote_subject(*nearest(query_vecs, train_vecs, k), train_subjects)


def subject_prior(query_subjects: np.ndarray, train_subjects: np.ndarray, outcome: np.ndarray, observed: np.ndarray,
                  strength: float = 20.0, self_index: np.ndarray | None = None) -> np.ndarray:
    """[N, E] float32: (hits_s + strength * acc_global) / (n_s + strength), hits_s and n_s over
    the observed TRAIN pairs of the query's subject, less the query's own row."""
    obs = observed.astype(np.float64)
    hit = outcome * obs
    glob = global_accuracy(hit, obs)
    own = _self(self_index, len(query_subjects))
    out = np.empty((len(query_subjects), outcome.shape[1]), np.float32)
    for s in np.unique(query_subjects):
        rows = np.flatnonzero(query_subjects == s)
        tr = train_subjects == s
        n, h = obs[tr].sum(0), hit[tr].sum(0)  # [E]
        mine = own[rows]
        in_tr = mine >= 0
        own_n = np.where(in_tr[:, None], obs[np.maximum(mine, 0)], 0)  # [r, E]
        own_h = np.where(in_tr[:, None], hit[np.maximum(mine, 0)], 0)
        out[rows] = (h - own_h + strength * glob) / (n - own_n + strength)
    return out


def side_features(query_vecs: np.ndarray, query_subjects: np.ndarray, train_vecs: np.ndarray,
                  train_subjects: np.ndarray, outcome: np.ndarray, observed: np.ndarray, ks: tuple[int, ...],
                  prior: bool, strength: float, self_index: np.ndarray | None = None,
                  neighbours: np.ndarray | None = None) -> np.ndarray:
    """[N, E, P] float32 side features of the head: one [N, E] slice per k, then the prior.
    neighbours: each query's nearest TRAIN rows [N, >= max(ks)], nearest first, searched
    already (a server searches on device); the vectors are then not used."""
    e = outcome.shape[1]
    cols = []
    if ks:
        knn = (neighbour_outcomes(query_vecs, train_vecs, outcome, observed, ks, self_index) if neighbours is None
               else knn_outcomes(neighbours, outcome, observed, ks))
        cols += [knn[:, i * e:(i + 1) * e] for i in range(len(ks))]
    if prior:
        cols.append(subject_prior(query_subjects, train_subjects, outcome, observed, strength, self_index))
    if not cols:
        return np.zeros((len(query_vecs), e, 0), np.float32)
    return np.stack(cols, axis=-1).astype(np.float32)
