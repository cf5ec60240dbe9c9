"""Length buckets: the one rule for how long a padded token batch is.

A batch is padded to its longest row rounded up to a multiple of `step` (and at most
`max_length`), so a job sorted by length compiles one program per multiple it meets (a
handful, cached on disk across runs) and pads each row by less than `step` tokens.
"""

from __future__ import annotations


def bucket_length(n: int, step: int, max_length: int | None = None) -> int:
    t = -(-max(n, 1) // step) * step
    return min(t, max_length) if max_length else t
