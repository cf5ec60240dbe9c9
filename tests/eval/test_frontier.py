"""Frontier metrics against small cases computed by hand."""

import numpy as np
import pytest

from leeroo_jax.eval import frontier as fr

POINTS = np.array([(1, 0.5), (2, 0.6), (3, 0.9), (4, 0.8), (2, 0.4)])


def test_upper_hull_is_convex_and_non_decreasing():
    # (4, .8) is dominated by (3, .9); (2, .6) lies under the chord (1, .5)-(3, .9) (0.7 there).
    np.testing.assert_allclose(fr.upper_hull(POINTS), [(1, 0.5), (3, 0.9)])


def test_reading_the_hull():
    f = fr.Frontier(POINTS, fr.upper_hull(POINTS))
    assert f.acc_at(2) == pytest.approx(0.7)
    assert f.acc_at(10) == pytest.approx(0.9)  # flat past the last point
    assert f.cost_to_reach(0.8) == pytest.approx(2.5)
    assert f.cost_to_reach(0.3) == pytest.approx(1.0)
    assert f.cost_to_reach(0.95) is None
    assert f.max_acc == pytest.approx(0.9)
    assert f.area(1, 3) == pytest.approx(0.7)
    assert f.area(1, 4) == pytest.approx((0.7 * 2 + 0.9) / 3)


def test_apgr_and_cpt():
    f = fr.Frontier(POINTS, fr.upper_hull(POINTS))
    weak, strong = (1, 0.5), (3, 0.9)
    assert fr.apgr(f, weak, strong) == pytest.approx(0.5)  # linear hull recovers half on average
    assert fr.cpt(f, weak, strong, 0.5) == pytest.approx(0.5)
    assert fr.cpt(f, weak, strong, 0.8) == pytest.approx(0.8)


def test_sweep_on_a_two_query_case():
    cost = np.array([[1.0, 3.0], [1.0, 3.0]])
    p = np.array([[0.9, 0.95], [0.2, 0.9]])  # query 0: cheap is fine; query 1 needs the dear one
    outcome = np.array([[1, 1], [0, 1]])
    f = fr.sweep(p, cost, outcome)
    # λ=0: both dear (3, 1.0); mid λ: q0 cheap, q1 dear (2, 1.0); large λ: both cheap (1, 0.5).
    assert {tuple(x) for x in np.round(f.points, 9)} == {(3.0, 1.0), (2.0, 1.0), (1.0, 0.5)}
    np.testing.assert_allclose(f.hull, [(1, 0.5), (2, 1.0)])
    s = fr.summarize(f, ["cheap", "dear"], cost, outcome)
    assert s.acc_at_cost_of == pytest.approx({"cheap": 0.5, "dear": 1.0})
    assert s.cost_ratio_to_acc_of["dear"] == pytest.approx(2 / 3)  # reaches 1.0 at cost 2 of 3
    assert s.aiq == pytest.approx((0.75 * 1 + 1.0 * 1) / 2)


def test_experts_frontier_and_oracle():
    cost = np.array([[1.0, 2.0], [1.0, 2.0]])
    outcome = np.array([[0, 1], [1, 1]])
    z = fr.experts_frontier(cost, outcome)
    np.testing.assert_allclose(z.points, [(1, 0.5), (2, 1.0)])
    np.testing.assert_array_equal(fr.oracle_choices(cost, outcome), [1, 0])


def test_ties_go_to_the_cheaper_expert():
    p = np.array([[0.5, 0.5, 0.5]])
    cost = np.array([[3.0, 1.0, 2.0]])
    assert fr.tradeoff_choices(p, cost, 0.0)[0] == 1


def test_a_pool_whose_experts_all_cost_the_same():
    """Equal prices (the seven open models): the frontier is one cost; AIQ is the accuracy
    there, CPT is 0 if the weak expert's cost already reaches the target, else undefined."""
    cost = np.ones((4, 2))
    outcome = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    p = outcome * 0.8 + 0.1  # knows which expert is right
    f = fr.sweep(p, cost, outcome)
    assert f.area(1.0, 1.0) == pytest.approx(0.75)  # 3 of 4 answerable, all at cost 1
    weak, strong = (1.0, 0.5), (1.0, 0.5 + 1e-9)
    assert fr.cpt(f, weak, strong, 0.5) == 0.0
    assert fr.cpt(fr.experts_frontier(cost, outcome), (1.0, 0.5), (1.0, 0.9), 0.8) is None


def test_strong_share_curve_matches_routellm_by_enumeration():
    """APGR and CPT in RouteLLM's units against a direct enumeration: send the k queries with
    the largest p_strong - p_weak to the strong model, k = 0..Q, and integrate by trapezoids."""
    rng = np.random.default_rng(3)
    q = 400
    outcome = (rng.uniform(size=(q, 3)) < [0.55, 0.3, 0.8]).astype(float)
    p = np.clip(outcome * 0.3 + rng.uniform(size=(q, 3)) * 0.7, 0, 1)
    w, s = 0, 2
    order = np.argsort(-(p[:, s] - p[:, w]))
    acc = [np.where(np.isin(np.arange(q), order[:k]), outcome[:, s], outcome[:, w]).mean() for k in range(q + 1)]
    x = np.arange(q + 1) / q
    aw, as_ = outcome[:, w].mean(), outcome[:, s].mean()
    gap = (np.asarray(acc) - aw) / (as_ - aw)
    golden_apgr = np.sum((x[1:] - x[:-1]) * (gap[1:] + gap[:-1]) / 2)
    curve = fr.strong_share_curve(p, outcome, w, s)
    assert fr.apgr(curve, (0.0, aw), (1.0, as_)) == pytest.approx(golden_apgr, abs=1e-12)
    for target in (0.5, 0.8):
        k = int(np.argmax(gap >= target))  # the first k reaching the target; ours interpolates before it
        assert (k - 1) / q <= fr.cpt(curve, (0.0, aw), (1.0, as_), target) <= k / q + 1e-12
    flat = fr.strong_share_curve(np.tile(outcome.mean(0), (q, 1)), outcome, w, s)  # a constant p: all or nothing
    assert fr.apgr(flat, (0.0, aw), (1.0, as_)) == pytest.approx(0.5)
    assert fr.cpt(flat, (0.0, aw), (1.0, as_), 0.8) == pytest.approx(0.8)
