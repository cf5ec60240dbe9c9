"""Training batches: which rows a step sees (the token tensors come from backbone.TokenTable).

The batch of step s is a pure function of (seed, s) — `default_rng([seed, s])` — so a resumed
run draws exactly the batches an uninterrupted one would.

Frozen mode draws rows uniformly. Fine-tuning modes run the backbone inside the step, where
padding costs real compute: MMLU questions run from ~20 to 256+ tokens, so a uniform batch of
64 nearly always pads to its longest outlier. `length_grouped_rows` instead draws the batch
from a random window of `window * batch` neighbours in length order: each batch pads to a
length close to its mean, every row is still drawn about equally often, and batch
compositions differ from step to step.
"""

from __future__ import annotations

import numpy as np


def uniform_rows(rows: np.ndarray, batch: int, seed: int, step: int) -> np.ndarray:
    rng = np.random.default_rng([seed, step])
    return rows[rng.integers(0, len(rows), batch)]


def length_grouped_rows(rows_by_length: np.ndarray, batch: int, seed: int, step: int, window: int = 4) -> np.ndarray:
    """rows_by_length: candidate rows sorted by token count -> [batch] rows of similar length."""
    rng = np.random.default_rng([seed, step])
    w = min(window * batch, len(rows_by_length))
    start = rng.integers(0, len(rows_by_length) - w + 1)
    return rng.choice(rows_by_length[start:start + w], batch, replace=w < batch)
