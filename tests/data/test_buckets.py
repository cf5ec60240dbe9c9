"""The batching rule: every row lands in exactly one batch, no batch exceeds its token
budget, and a short tail is not padded up to a full batch."""

import numpy as np
import pytest

from leeroo_jax.data.buckets import bucket_length, plan_batches


@pytest.mark.parametrize("seed", range(5))
def test_every_row_once_within_budget_and_lengths(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 700, size=int(rng.integers(1, 90))).tolist()
    plan = plan_batches(lengths, batch=16, step=8, max_tokens=2048)
    rows = [r for _, _, rs in plan for r in rs]
    assert sorted(rows) == list(range(len(lengths)))
    for b, t, rs in plan:
        assert len(rs) <= b and b & (b - 1) == 0  # a power of two holding its rows
        assert t % 8 == 0 and max(lengths[r] for r in rs) <= t < max(lengths[r] for r in rs) + 8
        assert b * t <= max(2048, t)  # one over-long row still gets a batch of its own
        assert b < 2 * len(rs)  # never more than twice the rows it holds (the old rule padded a tail of 1 to 16)


def test_a_single_row_is_a_batch_of_one():
    assert plan_batches([300], batch=16, step=8) == [(1, 304, [0])]
    assert plan_batches([5, 9, 7], batch=16, step=8) == [(4, 16, [1, 2, 0])]


def test_bucket_length():
    assert [bucket_length(n, 8) for n in (0, 1, 8, 9)] == [8, 8, 8, 16]
    assert bucket_length(900, 256, max_length=512) == 512
