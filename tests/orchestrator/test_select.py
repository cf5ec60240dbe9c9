"""The selection kernel against exact references: brute force, the LP relaxation (HiGHS),
integer enumeration; sharded == single device; properties (hypothesis).

Every random instance has the same shape (B_Q x N_E) so each mode compiles once per file.
"""

import itertools

import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.optimize import linprog
from scipy.sparse import csr_matrix

from leeroo_jax.errors import ConfigError
from leeroo_jax.orchestrator import select as S
from leeroo_jax.orchestrator.select import Budget, select
from leeroo_jax.sharding import MeshConfig, make_mesh, shard_batch

B_Q, N_E = 64, 8  # queries, experts
SEEDS = range(12)
HYP = settings(max_examples=25, deadline=None, derandomize=True)


def instance(seed, b=B_Q, e=N_E, p_avail=0.8):
    """p [b, e] in (0, 1); cost [b, e] log-uniform 1e-6..1e-2 USD; availability [e], >= 1 True."""
    rng = np.random.default_rng(seed)
    p = rng.random((b, e), dtype=np.float32)
    cost = (10.0 ** rng.uniform(-6, -2, (b, e))).astype(np.float32)
    avail = rng.random(e) < p_avail
    avail[rng.integers(e)] = True
    return p, cost, avail


def run(p, cost, avail, budget):
    sel = select(p, cost, avail, budget)
    return tuple(np.asarray(x) for x in sel)


def lexmax_row(keys):
    """Index maximising the key tuples (one per expert) lexicographically, then lowest index."""
    return max(range(len(keys)), key=lambda i: (*keys[i], -i))


def brute(p, cost, avail, mode, v):
    """Per-row Python reference of every non-batch mode. Thresholds compare in float32 like
    the kernel; p - lam*cost is exact (float64), which the kernel's float32 matches except
    on near-ties (none in these fixed-seed instances)."""
    v = np.float32(v)
    out = []
    for pb, cb in zip(p, cost):
        ex = [i for i in range(len(pb)) if avail[i]]
        if mode == "tradeoff":
            best = lexmax_row([(float(pb[i]) - float(v) * float(cb[i]), -cb[i]) for i in ex])
        else:
            ok = [i for i in ex if (cb[i] <= v if mode == "cap" else pb[i] >= v)]
            cheap_first = (mode == "quality") == bool(ok)
            pool = ok or ex
            keys = [(-cb[i], pb[i]) if cheap_first else (pb[i], -cb[i]) for i in pool]
            best, ex = lexmax_row(keys), pool
        out.append(ex[best])
    return np.array(out)


def budget_range(p, cost, avail):
    """(mean cost of the cheapest-everywhere choice, of the best-p-everywhere choice)."""
    cheap = np.where(avail, cost, np.inf).min(1).mean()
    best = cost[np.arange(len(p)), np.where(avail, p, -np.inf).argmax(1)].mean()
    return float(cheap), float(best)


def lp_optimum(p, cost, avail, mean_budget):
    """max mean p.x s.t. sum_e x[b, e] = 1, mean cost.x <= budget, x >= 0, unavailable x = 0."""
    b, e = p.shape
    c64, p64 = cost.astype(np.float64).ravel(), p.astype(np.float64).ravel()
    rows = np.repeat(np.arange(b), e)
    a_eq = csr_matrix((np.ones(b * e), (rows, np.arange(b * e))), shape=(b, b * e))
    bounds = [(0, 1 if avail[i % e] else 0) for i in range(b * e)]
    res = linprog(-p64 / b, A_ub=c64[None] / b, b_ub=[mean_budget], A_eq=a_eq, b_eq=np.ones(b),
                  bounds=bounds, method="highs")
    assert res.status == 0, res.message
    return -res.fun


@pytest.mark.parametrize("mode", ["cap", "tradeoff", "quality"])
def test_modes_match_brute_force(mode):
    for seed in SEEDS:
        p, cost, avail = instance(seed)
        v = {"cap": 10.0 ** np.random.default_rng(seed).uniform(-6, -2),
             "tradeoff": 10.0 ** np.random.default_rng(seed).uniform(0, 5),
             "quality": np.random.default_rng(seed).uniform(0.3, 1.0)}[mode]
        choice, pc, cc = run(p, cost, avail, Budget(mode, v))
        want = brute(p, cost, avail, mode, v)
        np.testing.assert_array_equal(choice, want, err_msg=f"{mode} seed={seed} v={v}")
        rows = np.arange(B_Q)
        np.testing.assert_array_equal(pc, p[rows, want])
        np.testing.assert_array_equal(cc, cost[rows, want])


def test_batch_budget_against_lp_relaxation():
    for seed in SEEDS:
        p, cost, avail = instance(seed)
        cheap, best = budget_range(p, cost, avail)
        for u in (0.05, 0.3, 0.7):
            bud = cheap + u * (best - cheap)
            choice, pc, cc = run(p, cost, avail, Budget.batch_budget(bud))
            ours_cost = cost[np.arange(B_Q), choice].astype(np.float64).mean()
            ours_acc = p[np.arange(B_Q), choice].astype(np.float64).mean()
            lp = lp_optimum(p, cost, avail, bud)
            assert avail[choice].all()
            assert ours_cost <= bud * (1 + 1e-6), (seed, u, ours_cost, bud)
            assert ours_acc <= lp + 1e-9
            assert lp - ours_acc <= p.max() / B_Q + 1e-6, (seed, u, lp, ours_acc)


def test_batch_budget_lambda_is_the_smallest_feasible():
    """Bisection lands on adjacent floats: lam* fits, the float just below it does not."""
    p, cost, avail = instance(3)
    cheap, best = budget_range(p, cost, avail)
    bud = np.float32(cheap + 0.4 * (best - cheap))
    lam = jax.jit(S._batch_lambda)(p, cost, avail, bud)
    below = np.nextafter(np.float32(lam), np.float32(0))
    assert run(p, cost, avail, Budget.tradeoff(lam))[2].mean() <= bud
    assert run(p, cost, avail, Budget.tradeoff(below))[2].mean() > bud
    np.testing.assert_array_equal(run(p, cost, avail, Budget.batch_budget(bud))[0],
                                  run(p, cost, avail, Budget.tradeoff(lam))[0])


def test_batch_budget_tiny_integer_optimum():
    """B=4, E=3: enumerate all 81 assignments. ours <= integer optimum <= LP <= ours + max p / 4."""
    for seed in range(20):
        p, cost, avail = instance(100 + seed, b=4, e=3, p_avail=1.0)
        cheap, best = budget_range(p, cost, avail)
        bud = cheap + np.random.default_rng(seed).uniform(0.1, 0.9) * (best - cheap)
        choice, pc, cc = run(p, cost, avail, Budget.batch_budget(bud))
        opt = max(p[range(4), a].astype(np.float64).mean()
                  for a in itertools.product(range(3), repeat=4)
                  if cost[range(4), a].astype(np.float64).mean() <= bud)
        ours = pc.astype(np.float64).mean()
        assert cc.astype(np.float64).mean() <= bud * (1 + 1e-6)
        assert ours <= opt + 1e-9
        assert lp_optimum(p, cost, avail, bud) - ours <= p.max() / 4 + 1e-6


def test_huge_lambda_is_cheapest():
    p, cost, avail = instance(8)
    want = brute(p, cost, avail, "cap", 0.0)  # cap below every cost: the cheapest (then best p)
    for lam in (1e30, 3e38, np.inf):  # lam*cost saturates instead of overflowing
        np.testing.assert_array_equal(run(p, cost, avail, Budget.tradeoff(lam))[0], want)


def test_batch_budget_infeasible_returns_cheapest():
    p, cost, avail = instance(7)
    cheap, _ = budget_range(p, cost, avail)
    got = run(p, cost, avail, Budget.batch_budget(cheap / 2))
    want = brute(p, cost, avail, "cap", 0.0)  # cap below every cost: the cheapest (then best p)
    np.testing.assert_array_equal(got[0], want)


def test_sharded_equals_single_device(devices):
    mesh = make_mesh(MeshConfig(data=8), devices)
    p, cost, avail = instance(11)
    # Rows 0..31 (devices 0-3) cheap, 32..63 expensive: a per-shard mean would pick
    # differently from the global one, so equality below shows the budget mean is global.
    cost[: B_Q // 2] /= 100
    cheap, best = budget_range(p, cost, avail)
    budgets = [Budget.cap(1e-3), Budget.tradeoff(300.0), Budget.quality(0.7),
               Budget.batch_budget(cheap + 0.3 * (best - cheap))]
    ps, cs = shard_batch((p, cost), mesh)
    for bud in budgets:
        one = run(p, cost, avail, bud)
        sel = select(ps, cs, avail, bud)
        assert len(sel.choice.sharding.device_set) == 8
        for a, b in zip(one, sel):
            np.testing.assert_array_equal(a, np.asarray(b), err_msg=bud.mode)
    shard_means = one[2].reshape(8, -1).mean(1)  # batch_budget: over budget on some shards
    assert one[2].mean() <= budgets[-1].value * (1 + 1e-6) < shard_means.max()


def test_unavailable_experts_never_chosen():
    for seed in SEEDS:
        p, cost, avail = instance(seed, p_avail=0.4)
        cheap, best = budget_range(p, cost, avail)
        for bud in (Budget.cap(1e-4), Budget.tradeoff(1e3), Budget.quality(0.9),
                    Budget.batch_budget(0.5 * (cheap + best))):
            assert avail[run(p, cost, avail, bud)[0]].all(), (seed, bud)
    p, cost, _ = instance(99)
    per_row = np.random.default_rng(99).random((B_Q, N_E)) < 0.5  # [B, E] mask; row 0: none
    per_row[1:, 0], per_row[0] = True, False
    for bud in (Budget.cap(1e-4), Budget.tradeoff(1e3), Budget.quality(0.9),
                Budget.batch_budget(1e-3)):
        choice = run(p, cost, per_row, bud)[0]
        assert choice[0] == -1 and per_row[np.arange(1, B_Q), choice[1:]].all(), bud
    none = run(p, cost, np.zeros(N_E, bool), Budget.cap(1.0))
    assert (none[0] == -1).all() and np.isnan(none[1]).all() and np.isnan(none[2]).all()


def test_ties_are_deterministic():
    p = np.array([[0.5, 0.5, 0.5, 0.2], [0.1, 0.1, 0.1, 0.1]], np.float32)
    cost = np.array([[2.0, 1.0, 1.0, 1.0], [3.0, 2.0, 2.0, 9.0]], np.float32)
    avail = np.ones(4, bool)
    # equal p: the cheaper, then the lower index
    np.testing.assert_array_equal(run(p, cost, avail, Budget.tradeoff(0.0))[0], [1, 1])
    np.testing.assert_array_equal(run(p, cost, avail, Budget.cap(5.0))[0], [1, 1])
    # nothing fits the cap: the cheapest, equal costs -> the higher p, then the lower index
    np.testing.assert_array_equal(run(p, cost, avail, Budget.cap(0.5))[0], [1, 1])
    np.testing.assert_array_equal(run(p, cost, avail, Budget.quality(0.9))[0], [1, 1])
    np.testing.assert_array_equal(run(p, cost, avail, Budget.batch_budget(100.0))[0], [1, 1])


def test_logits_and_no_recompile():
    p, cost, avail = instance(5)
    logits = np.log(p) - np.log1p(-p)
    for bud in (Budget.tradeoff(100.0), Budget.batch_budget(1e-3)):
        a = select(logits, cost, avail, bud, from_logits=True)
        b = select(p, cost, avail, bud)
        np.testing.assert_array_equal(a.choice, b.choice)
        np.testing.assert_allclose(a.p, b.p, rtol=1e-6)
    n = select._cache_size()
    for v in (1e-4, 2e-3, 5e-3):  # a new budget value reuses the compiled program
        select(p, cost, avail, Budget.batch_budget(v)).choice.block_until_ready()
    assert select._cache_size() == n
    with pytest.raises(ConfigError, match="budget mode"):
        Budget("knapsack", 1.0)


@HYP
@given(st.integers(0, 2**31), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_more_budget_never_lowers_accuracy(seed, u1, u2):
    p, cost, avail = instance(seed)
    cheap, best = budget_range(p, cost, avail)
    lo, hi = sorted((u1, u2))
    acc = [run(p, cost, avail, Budget.batch_budget(cheap + u * (best - cheap)))[1].mean()
           for u in (lo, hi)]
    assert acc[0] <= acc[1] + 1e-6


@HYP
@given(st.integers(0, 2**31), st.floats(-6.5, -1.5), st.floats(-6.5, -1.5))
def test_cap_monotone_per_query(seed, e1, e2):
    p, cost, avail = instance(seed)
    lo, hi = sorted((e1, e2))
    p_lo, p_hi = (run(p, cost, avail, Budget.cap(10.0**e))[1] for e in (lo, hi))
    assert (p_lo <= p_hi).all()


@HYP
@given(st.integers(0, 2**31))
def test_extremes_of_tradeoff_and_quality(seed):
    p, cost, avail = instance(seed)
    masked = np.where(avail, p, -np.inf)
    np.testing.assert_array_equal(run(p, cost, avail, Budget.tradeoff(0.0))[0], masked.argmax(1))
    cheapest = np.where(avail, cost, np.inf).argmin(1)
    np.testing.assert_array_equal(run(p, cost, avail, Budget.quality(0.0))[0], cheapest)
