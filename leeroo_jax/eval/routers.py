"""Reference routers, always reported beside ours. Each returns p[Q, E] for the eval questions.

All are fitted on TRAIN outcomes only, with the observed mask (an unobserved pair never
counts as a failure), through the same code as the orchestrator's side features
(orchestrator/features.py):

  constant       each expert's global TRAIN accuracy: the zero router made deployable (it
                 knows nothing about the query, so per query only the costs differ)
  subject_prior  TRAIN accuracy in the query's subject, shrunk toward the global accuracy
  knn<k>         mean outcome over the query's k nearest TRAIN questions (cosine)
"""

from __future__ import annotations

import numpy as np

from leeroo_jax.orchestrator import features


def constant(outcome: np.ndarray, observed: np.ndarray, n_eval: int) -> np.ndarray:
    return np.tile(features.global_accuracy(outcome, observed), (n_eval, 1))


def subject_prior(train_subjects: np.ndarray, outcome: np.ndarray, observed: np.ndarray,
                  eval_subjects: np.ndarray, strength: float = 20.0) -> np.ndarray:
    """(n·acc_subject + strength·acc_global) / (n + strength), n = observed TRAIN pairs in the subject."""
    return features.subject_prior(eval_subjects, train_subjects, outcome, observed, strength)


def knn(train_vecs: np.ndarray, outcome: np.ndarray, observed: np.ndarray, eval_vecs: np.ndarray, k: int) -> np.ndarray:
    """Mean outcome of each expert over the query's k nearest TRAIN questions that observed it."""
    return features.neighbour_outcomes(eval_vecs, train_vecs, outcome, observed, (k,))
