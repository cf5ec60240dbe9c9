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
    padding many shorter rows up to them). A batch with fewer rows than that (the last, or a
    group of one) shrinks to the smallest power of two that holds them: a k-shot job has one
    such tail per exemplar prefix, and padding each to a full batch cost a third of its time.
    Returns [(batch_rows, padded_len, row_indices)]; each (batch_rows, padded_len) shape
    compiles once. A batch can still hold fewer rows than its shape: the caller fills it
    with dummy rows.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out, s = [], 0
    while s < len(order):
        t = bucket_length(lengths[order[s]], step)
        b = batch if max_tokens <= 0 else min(batch, 1 << max(0, (max_tokens // t).bit_length() - 1))
        left = len(order) - s
        if left < b:
            b = 1 << (left - 1).bit_length()
        out.append((b, t, order[s:s + b]))
        s += b
    return out
