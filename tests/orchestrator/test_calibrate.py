"""Budget calibration against exact enumeration, and VAL -> TEST on the real graded outcomes.

Golden values come from NumPy in float64: for tradeoff, every breakpoint lam at which some
query's choice can change, (p_i - p_j) / (c_i - c_j); for quality, every distinct p. Every
random instance has the same shape so each fit compiles once per file.
"""

import csv
import gzip
import pathlib

import numpy as np
import pytest

from configs import pools
from leeroo_jax.data import mmlu
from leeroo_jax.data.pool import Pool
from leeroo_jax.errors import ConfigError
from leeroo_jax.orchestrator.calibrate import Calibration, calibrate, feasible_range
from leeroo_jax.orchestrator.select import Budget, select

B_Q, N_E = 24, 5  # queries, experts
SEEDS = range(6)


def instance(seed):
    """p [B, E] in (0, 1); cost log-uniform 1e-6..1e-2 USD; availability [E] with >= 2 True."""
    rng = np.random.default_rng(seed)
    p = rng.random((B_Q, N_E), dtype=np.float32)
    cost = (10.0 ** rng.uniform(-6, -2, (B_Q, N_E))).astype(np.float32)
    avail = rng.random(N_E) < 0.8
    avail[rng.choice(N_E, 2, replace=False)] = True
    return p, cost, avail


def lexbest(k1, k2):
    """[B] index maximising k1, then minimising k2, then the lowest index (float64 keys)."""
    m1 = k1.max(1, keepdims=True)
    k2 = np.where(k1 == m1, k2, np.inf)
    return (k2 == k2.min(1, keepdims=True)).argmax(1)


def tradeoff_cost(p, c, avail, lam):
    """Mean chosen cost of argmax p - lam*c (ties -> cheaper), exact in float64."""
    k1 = np.where(avail, p.astype(np.float64) - lam * c.astype(np.float64), -np.inf)
    return c[np.arange(len(p)), lexbest(k1, c.astype(np.float64))].astype(np.float64).mean()


def quality_cost(p, c, avail, tau):
    """Mean chosen cost of: cheapest with p >= tau (ties -> higher p), else the best p (ties -> cheaper)."""
    p64, c64 = p.astype(np.float64), c.astype(np.float64)
    ok = avail & (p >= np.float32(tau))
    cheap = lexbest(np.where(ok, -c64, -np.inf), -p64)
    best = lexbest(np.where(avail, p64, -np.inf), c64)
    choice = np.where(ok.any(1), cheap, best)
    return c64[np.arange(len(p)), choice].mean()


def breakpoints(p, c, avail):
    """0 and every lam > 0 where some query ties two available experts."""
    p64, c64 = p.astype(np.float64)[..., avail], c.astype(np.float64)[..., avail]
    dp = p64[:, :, None] - p64[:, None, :]  # p_i - p_j
    dc = c64[:, :, None] - c64[:, None, :]  # c_i - c_j: p_i - lam c_i = p_j - lam c_j at dp / dc
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = dp / dc
    return np.unique(np.concatenate([[0.0], lam[(dc != 0) & (lam > 0)]]))


def mid_targets(costs, lo, k, rng):
    """k targets strictly between consecutive distinct achievable mean costs (no near-ties)."""
    levels = np.unique(np.concatenate([[lo], costs]))
    gaps = np.flatnonzero(np.diff(levels) > 1e-6 * levels[1:])
    pick = rng.choice(gaps, min(k, len(gaps)), replace=False)
    return (levels[pick] + levels[pick + 1]) / 2


def test_feasible_range():
    p, cost, avail = instance(0)
    c64 = cost.astype(np.float64)
    lo, hi = feasible_range(cost, avail)
    assert lo == pytest.approx(c64[:, avail].min(1).mean(), rel=1e-12)
    assert hi == pytest.approx(c64[:, avail].max(1).mean(), rel=1e-12)
    assert feasible_range(cost) == pytest.approx((c64.min(1).mean(), c64.max(1).mean()), rel=1e-12)
    per_row = np.broadcast_to(avail, cost.shape).copy()
    per_row[0] = False
    per_row[0, 1] = True  # row 0: only expert 1
    lo0, hi0 = feasible_range(cost, per_row)
    want = np.where(per_row, c64, np.inf).min(1).mean(), np.where(per_row, c64, -np.inf).max(1).mean()
    assert (lo0, hi0) == pytest.approx(want, rel=1e-12)
    per_row[3] = False
    with pytest.raises(ConfigError, match="1 of 24 questions have no available expert"):
        feasible_range(cost, per_row)


def test_tradeoff_matches_breakpoint_enumeration():
    for seed in SEEDS:
        p, cost, avail = instance(seed)
        lams = breakpoints(p, cost, avail)
        # C is constant on [lam_k, lam_k+1) (right-continuous); evaluate inside each interval,
        # since at lam_k itself float64 rounding may not see the exact tie.
        inside = np.append((lams[:-1] + lams[1:]) / 2, 2 * lams[-1] + 1)
        costs = np.array([tradeoff_cost(p, cost, avail, lam) for lam in inside])  # non-increasing
        assert (np.diff(costs) <= 1e-15).all()
        lo, _ = feasible_range(cost, avail)
        for target in mid_targets(costs, lo, 4, np.random.default_rng(seed)):
            if target > costs[0]:
                continue  # saturated (tested below)
            want = lams[np.argmax(costs <= target)]  # the smallest lam that fits
            cal = calibrate(p, cost, target, "tradeoff", avail)
            assert cal.mode == "tradeoff" and not cal.saturated
            np.testing.assert_allclose(cal.value, want, rtol=1e-4, err_msg=f"seed={seed} target={target}")
            sel = select(p, cost, avail, cal.budget())
            assert float(np.mean(sel.cost)) == pytest.approx(cal.fit_mean_cost, rel=1e-6)
            assert cal.fit_mean_cost == pytest.approx(costs[np.argmax(costs <= target)], rel=1e-6)
            assert cal.fit_mean_cost <= target
            # No smaller lam fits: the float32 just below spends over the target.
            below = np.nextafter(np.float32(cal.value), np.float32(0))
            assert float(np.mean(select(p, cost, avail, Budget.tradeoff(below)).cost)) > target


def test_quality_matches_unique_p_enumeration():
    for seed in SEEDS:
        p, cost, avail = instance(seed)
        taus = np.unique(p[:, avail])
        costs = np.array([quality_cost(p, cost, avail, t) for t in taus])  # non-decreasing
        assert (np.diff(costs) >= -1e-15).all()
        lo, _ = feasible_range(cost, avail)
        for target in mid_targets(costs, lo, 4, np.random.default_rng(seed)):
            if target > costs[-1]:
                continue
            fits = np.flatnonzero(costs <= target)
            want = taus[fits[-1]]  # the largest tau that fits: the largest cost <= target
            cal = calibrate(p, cost, target, "quality", avail)
            assert cal.mode == "quality" and not cal.saturated
            assert cal.value == want, (seed, target, cal.value, want)
            assert cal.fit_mean_cost == pytest.approx(costs[fits[-1]], rel=1e-6)
            assert float(np.mean(select(p, cost, avail, cal.budget()).cost)) == pytest.approx(
                cal.fit_mean_cost, rel=1e-6)
            # No larger tau fits: the next distinct p spends over the target.
            nxt = taus[fits[-1] + 1]
            assert float(np.mean(select(p, cost, avail, Budget.quality(nxt)).cost)) > target


def test_saturated_targets_and_edges():
    p, cost, avail = instance(2)
    lo, hi = feasible_range(cost, avail)
    top_trade = tradeoff_cost(p, cost, avail, 0.0)  # best p everywhere
    top_qual = quality_cost(p, cost, avail, p[:, avail].max())
    assert top_trade == pytest.approx(top_qual, rel=1e-12) and top_trade < hi
    target = (top_trade + hi) / 2  # feasible, but the router will not spend it
    cal = calibrate(p, cost, target, "tradeoff", avail)
    assert cal == Calibration("tradeoff", 0.0, pytest.approx(top_trade, rel=1e-6), True)
    cal = calibrate(p, cost, target, "quality", avail)
    assert cal.saturated and cal.value == p[:, avail].max()
    assert cal.fit_mean_cost == pytest.approx(top_qual, rel=1e-6)
    assert isinstance(cal.budget(), Budget) and cal.budget().mode == "quality"
    # Both ends of the range are accepted; at hi the router saturates.
    assert calibrate(p, cost, hi, "tradeoff", avail).saturated
    cal = calibrate(p, cost, lo * (1 + 1e-5), "tradeoff", avail)  # the cheapest everywhere
    assert cal.fit_mean_cost == pytest.approx(lo, rel=1e-5) and not cal.saturated
    cal = calibrate(p, cost, lo * (1 + 1e-5), "quality", avail)  # the largest tau that is still cheapest
    taus = np.unique(p[:, avail])
    want = taus[[quality_cost(p, cost, avail, t) <= lo * (1 + 1e-5) for t in taus]][-1]
    assert cal.fit_mean_cost == pytest.approx(lo, rel=1e-5) and cal.value == want > taus[0]


@pytest.mark.parametrize("mode", ["tradeoff", "quality"])
def test_targets_outside_the_range_are_one_line_errors(mode):
    p, cost, avail = instance(1)
    lo, hi = feasible_range(cost, avail)
    for target, word in ((lo * 0.9, "below"), (hi * 1.1, "above"), (-1e-4, "negative"), (float("nan"), "NaN")):
        with pytest.raises(ConfigError) as err:
            calibrate(p, cost, target, mode, avail)
        msg = str(err.value)
        assert "\n" not in msg and word in msg, msg
        for x in (lo, hi, lo * 1e3, hi * 1e3):  # the range in USD/query and per 1k queries
            assert f"{x:.3g}" in msg, msg
        assert "USD per 1k queries" in msg and "pick a target" in msg
    with pytest.raises(ConfigError, match="not one of"):
        calibrate(p, cost, (lo + hi) / 2, "batch_budget", avail)


# --- real data: calibrate on VAL, apply per query on TEST ------------------------------------

ASSETS = pathlib.Path(mmlu.__file__).parent / "assets"
SHRINK = 10.0  # prior strength (pseudo-questions) of the global accuracy in the subject mean


def _real_data():
    """p [Q, 9] for every MMLU question (a per-subject accuracy router fitted on the observed
    TRAIN pairs), correctness and cost [Q, 9], every VAL row (calibration needs p and costs,
    not outcomes) and the TEST rows graded by all 9 experts."""
    pool = Pool.from_config(pools.MMLU_9)
    col = {n: j for j, n in enumerate(pool.names)}
    questions = mmlu.load_questions("vendored")
    index = {q.id: i for i, q in enumerate(questions)}
    correct = np.zeros((len(questions), len(pool)))
    seen = np.zeros_like(correct, bool)
    with gzip.open(ASSETS / "outcomes.csv.gz", "rt", newline="") as f:
        for row in csv.DictReader(f):
            i, e = index[row["id"]], col[row["model"]]
            correct[i, e], seen[i, e] = float(row["correct"]), True
    r = np.array([int(q.id, 16) % 10 for q in questions])
    train, val, test = r >= 4, r == 3, (r <= 2) & seen.all(1)
    assert test.sum() == 1912
    subjects = np.array([q.subject for q in questions])
    hits, n = correct * seen, seen.astype(float)
    glob = hits[train].sum(0) / n[train].sum(0)  # [E]
    p = np.empty_like(correct)
    for s in np.unique(subjects):
        rows = subjects == s
        p[rows] = (hits[rows & train].sum(0) + SHRINK * glob) / (n[rows & train].sum(0) + SHRINK)
    return p.astype(np.float32), correct, pool.costs(questions), np.flatnonzero(val), np.flatnonzero(test)


def _se(costs_b):
    """Standard error of a mean cost over these questions."""
    return costs_b.std(ddof=1) / np.sqrt(len(costs_b))


def test_real_data_val_calibration_meets_test_cost():
    """lam / tau fitted on every VAL question (1,402), applied per query on TEST (1,912).

    The chosen mean cost is an estimate from a sample, so the realised TEST cost misses the
    fit by sampling noise: its standard error (VAL and TEST together) is printed; the check
    is |error| <= max(5%, 3 SE). Quality's error against the target also holds a gap: this
    router's p is constant within a subject, so raising tau moves whole subjects at once
    (professional_law alone is a quarter of the questions, and the longest), and some targets
    fall between two achievable VAL costs; the fit is then the achievable cost below the
    target, and it is that cost TEST must reproduce.
    """
    p, correct, cost, val, test = _real_data()
    lo, hi = feasible_range(cost[test])
    avail = np.ones(cost.shape[1], bool)
    worst = {}
    print(f"\nVAL {len(val)} / TEST {len(test)} questions; TEST range {lo:.3g}..{hi:.3g} USD/query")
    for mode in ("tradeoff", "quality"):
        errs = []
        weak, strong = cost[test, 1].mean(), cost[test, 0].mean()  # Mixtral's, GPT-4's mean TEST cost
        for name, target in [("Mixtral", weak), ("0.4x GPT-4", 0.4 * strong),
                             *[(f"{u:.0%} of range", lo + u * (hi - lo)) for u in (0.1, 0.25, 0.55, 0.7)]]:
            cal = calibrate(p[val], cost[val], target, mode)
            assert cal.fit_mean_cost <= target * (1 + 1e-6)
            fit_cost = np.asarray(select(p[val], cost[val], avail, cal.budget()).cost, np.float64)
            sel = select(p[test], cost[test], avail, cal.budget())
            test_cost = np.asarray(sel.cost, np.float64)
            got = test_cost.mean()
            acc = correct[test, np.asarray(sel.choice)].mean()
            err, vs_fit = got / target - 1, got / cal.fit_mean_cost - 1
            se = np.hypot(_se(fit_cost), _se(test_cost)) / cal.fit_mean_cost
            print(f"{mode:8s} {name:>13s} target {target * 1e3:.4f} USD/1k  value {cal.value:<10.6g} VAL fit "
                  f"{cal.fit_mean_cost * 1e3:.4f}  TEST {got * 1e3:.4f}  error vs target {err:+6.2%}  "
                  f"vs fit {vs_fit:+6.2%}  SE {se:.2%}  acc {acc:.3f}{'  (saturated)' if cal.saturated else ''}")
            if cal.saturated:
                continue
            errs.append(abs(err))
            assert abs(vs_fit) <= max(0.05, 3 * se), (mode, target, vs_fit, se)
            if mode == "tradeoff":  # lam has no gaps to speak of: the fit meets the target, TEST within 5%
                assert cal.fit_mean_cost == pytest.approx(target, rel=0.02)
                # +-5% where the calibration set pins the cost down; at the low end (Mixtral's cost,
                # 10% of the range) a few long questions decide the mean and the sampling SE alone
                # is 5-8% (measured -8.9% and -5.7%): there the bound is 3 SE
                low = name in ("Mixtral", "10% of range")
                assert abs(err) <= (3 * se if low else 0.05), (name, err, se)
        assert errs, f"{mode}: every target saturated"
        worst[mode] = max(errs)
    print("worst |TEST / target - 1|:", {m: f"{e:.2%}" for m, e in worst.items()})
    assert worst["tradeoff"] <= 0.1  # a regression guard on this fixed data
