"""Length buckets: the one rule for how long a padded token batch is.

A batch is padded to its longest row rounded up to a multiple of `step` (and at most
`max_length`), so a job sorted by length compiles one program per multiple it meets (a
handful, cached on disk across runs) and pads each row by less than `step` tokens.
"""

from __future__ import annotations

from typing import Sequence


def bucket_length(n: int, step: int, max_length: int | None = None) -> int:
    t = -(-max(n, 1) // step) * step
    return min(t, max_length) if max_length else t


def plan_batches(lengths: Sequence[int], batch: int, step: int, max_tokens: int = 0) -> list[tuple[int, int, list[int]]]:
    """Sort rows by length (longest first) and cut them into batches padded to their longest
    row rounded up to a multiple of `step`.

    A batch holds `batch` rows, or, when max_tokens > 0, the largest power of two that keeps
    rows x length within max_tokens (long prompts then come in small batches instead of
    padding many shorter rows up to them). Returns [(batch_rows, padded_len, row_indices)];
    each (batch_rows, padded_len) shape compiles once. A batch can hold fewer rows than its
    shape (the shortest rows, at the end): the caller fills it with dummy rows.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out, s = [], 0
    while s < len(order):
        t = bucket_length(lengths[order[s]], step)
        b = batch if max_tokens <= 0 else min(batch, 1 << max(0, (max_tokens // t).bit_length() - 1))
        out.append((b, t, order[s:s + b]))
        s += b
    return out
