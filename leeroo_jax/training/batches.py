"""Training batches: which rows a step sees, and the token tensors of fine-tuning modes.

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

from typing import Sequence

import numpy as np

from leeroo_jax.orchestrator.backbone import bucket_for


def uniform_rows(rows: np.ndarray, batch: int, seed: int, step: int) -> np.ndarray:
    rng = np.random.default_rng([seed, step])
    return rows[rng.integers(0, len(rows), batch)]


def length_grouped_rows(rows_by_length: np.ndarray, batch: int, seed: int, step: int, window: int = 4) -> np.ndarray:
    """rows_by_length: candidate rows sorted by token count -> [batch] rows of similar length."""
    rng = np.random.default_rng([seed, step])
    w = min(window * batch, len(rows_by_length))
    start = rng.integers(0, len(rows_by_length) - w + 1)
    return rng.choice(rows_by_length[start:start + w], batch, replace=w < batch)


class TokenTable:
    """Every question tokenized once; `pack(rows)` -> tokens, attn [n, T] with T the smallest
    multiple of `bucket_step` that holds the longest row (a few compiled programs per run)."""

    def __init__(self, seqs: Sequence[Sequence[int]], pad_id: int, left_pad: bool, max_length: int,
                 bucket_step: int = 32):
        self.seqs = [list(s[:max_length]) for s in seqs]
        self.lengths = np.array([len(s) for s in self.seqs])
        self.pad_id, self.left_pad, self.max_length, self.bucket_step = pad_id, left_pad, max_length, bucket_step

    def sort_by_length(self, rows: np.ndarray) -> np.ndarray:
        return rows[np.argsort(self.lengths[rows], kind="stable")]

    def pack(self, rows: np.ndarray, pad_rows_to: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """[n', T] int32 tokens and attention mask; n' = len(rows) rounded up to `pad_rows_to`
        (all-padding rows at the end, so a batch splits evenly over the data axes)."""
        t = bucket_for(int(self.lengths[rows].max()), self.bucket_step, self.max_length)
        n = -(-len(rows) // pad_rows_to) * pad_rows_to
        tokens = np.full((n, t), self.pad_id, np.int32)
        attn = np.zeros((n, t), np.int32)
        for i, r in enumerate(rows):
            s = self.seqs[r]
            sl = slice(t - len(s), t) if self.left_pad else slice(0, len(s))
            tokens[i, sl], attn[i, sl] = s, 1
        return tokens, attn
