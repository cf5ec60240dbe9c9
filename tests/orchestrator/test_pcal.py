"""Probability calibration against SciPy's solvers: Platt's (a, b) against a general
minimiser of the same loss, the isotonic fit against scipy.optimize.isotonic_regression."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from leeroo_jax.errors import ConfigError
from leeroo_jax.orchestrator import pcal


def _overconfident(n, seed):
    """p that runs high: the truth is sigmoid(0.5 * logit(p) - 0.3)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.98, n)
    truth = 1 / (1 + np.exp(-(0.5 * np.log(p / (1 - p)) - 0.3)))
    return p, (rng.uniform(size=n) < truth).astype(np.float64)


@pytest.mark.parametrize("seed", range(3))
def test_platt_is_the_minimum_of_its_loss(seed):
    p, y = _overconfident(400, seed)
    z = np.log(p / (1 - p))

    def loss(w):
        q = np.clip(1 / (1 + np.exp(-(w[0] * z + w[1]))), 1e-12, 1 - 1e-12)
        return -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)) + 1e-3 / 2 * (w[0] - 1) ** 2

    want = optimize.minimize(loss, [1.0, 0.0], method="BFGS", options={"gtol": 1e-10}).x
    got = pcal.fit_platt(p, y)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert 0.3 < got[0] < 0.7 and got[1] < 0  # it finds the overconfidence


@pytest.mark.parametrize("seed", range(3))
def test_isotonic_knots_are_scipys_blocks(seed):
    rng = np.random.default_rng(seed)
    p = np.round(rng.uniform(size=300), 2)  # ties: equal p values are one point
    y = (rng.uniform(size=300) < p ** 2).astype(np.float64)
    xs, inv, cnt = np.unique(p, return_inverse=True, return_counts=True)
    ymean = np.bincount(inv, weights=y) / cnt
    fitted = optimize.isotonic_regression(ymean, weights=cnt).x  # value at each distinct p
    # scipy's blocks: runs of equal fitted value; knot = (count-weighted mean p, value)
    starts = np.r_[0, np.flatnonzero(np.diff(fitted) > 1e-12) + 1, len(xs)]
    want_x = [np.average(xs[a:b], weights=cnt[a:b]) for a, b in zip(starts[:-1], starts[1:])]
    want_y = [fitted[a] for a in starts[:-1]]
    got_x, got_y = pcal.fit_isotonic(p, y)
    np.testing.assert_allclose(got_x, want_x, atol=1e-12)
    np.testing.assert_allclose(got_y, want_y, atol=1e-12)


@pytest.mark.parametrize("kind", ["platt", "isotonic"])
def test_fit_per_expert_lowers_ece_out_of_sample_and_runs_under_jit(kind):
    rng = np.random.default_rng(0)
    p_fit, y_fit = zip(*[_overconfident(2000, s) for s in (1, 2, 3)])
    p_new, y_new = zip(*[_overconfident(2000, s) for s in (4, 5, 6)])
    p_fit, y_fit, p_new, y_new = (np.stack(v, 1) for v in (p_fit, y_fit, p_new, y_new))
    observed = rng.uniform(size=p_fit.shape) < 0.8  # unobserved pairs are not fitted on
    cal = pcal.fit(kind, p_fit, np.where(observed, y_fit, 0.0), observed)
    before, after = pcal.ece(p_new, y_new), pcal.ece(cal.apply(p_new), y_new)
    assert after < 0.5 * before and after < 0.03, (before, after)
    jitted = jax.jit(lambda q: cal.apply(q))(jnp.asarray(p_new, jnp.float32))
    np.testing.assert_allclose(np.asarray(jitted), cal.apply(p_new), atol=1e-5)
    grid = np.linspace(0, 1, 101)[:, None].repeat(3, 1)
    assert (np.diff(cal.apply(grid), axis=0) >= -1e-12).all()  # monotone per expert
    back = pcal.Calibration.from_json(cal.to_json())
    np.testing.assert_array_equal(back.apply(p_new), cal.apply(p_new))


def test_an_expert_with_one_outcome_class_keeps_the_identity():
    p = np.full((10, 2), 0.7)
    y = np.stack([np.ones(10), np.r_[np.ones(5), np.zeros(5)]], 1)
    cal = pcal.fit("platt", p, y, np.ones_like(y, bool))
    assert (cal.a[0], cal.b[0]) == (1.0, 0.0) and cal.b[1] < 0  # 0.7 -> 0.5 for the second


def test_ece_by_hand():
    p = np.array([0.1, 0.1, 0.9, 0.9])
    y = np.array([0.0, 1.0, 1.0, 1.0])
    assert pcal.ece(p, y) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert pcal.ece(p, y, observed=np.array([True, False, True, True])) == pytest.approx(1 / 3 * 0.1 + 2 / 3 * 0.1)


def test_unknown_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="calibration='temp'"):
        pcal.fit("temp", np.zeros((2, 1)), np.zeros((2, 1)), np.ones((2, 1), bool))
    with pytest.raises(ConfigError, match="damaged"):
        pcal.Calibration.from_json({"kind": "?"})


def test_a_calibration_is_a_jit_argument():
    """Passed as a pytree argument (kind static), a refit map reuses the compiled program."""
    p, y = _overconfident(500, 7)
    traces = []

    @jax.jit
    def f(cal, q):
        traces.append(1)
        return cal.apply(q)

    for seed in (1, 2):
        p2, y2 = _overconfident(500, seed)
        cal = pcal.fit("platt", p2[:, None], y2[:, None], np.ones((500, 1), bool))
        np.testing.assert_allclose(np.asarray(f(cal, jnp.asarray(p[:, None]))), cal.apply(p[:, None]), atol=1e-5)
    assert len(traces) == 1


def test_cross_fitted_maps_never_see_their_own_fold_and_fix_a_miscalibrated_p():
    rng = np.random.default_rng(0)
    n, e = 3000, 2
    z = rng.normal(size=(n, e))
    outcome = (rng.uniform(size=(n, e)) < 1 / (1 + np.exp(-z))).astype(np.float64)
    p = 1 / (1 + np.exp(-2.5 * z))  # overconfident: the truth is sigmoid(z)
    observed = rng.uniform(size=(n, e)) < 0.8
    fold = np.arange(n) % 5
    q = pcal.cross_fitted("platt", p, outcome, observed, fold)
    assert pcal.ece(q, outcome, observed) < 0.3 * pcal.ece(p, outcome, observed)
    flipped = np.where(fold[:, None] == 0, 1 - outcome, outcome)  # fold 0's own outcomes change
    q2 = pcal.cross_fitted("platt", p, flipped, observed, fold)
    np.testing.assert_array_equal(q2[fold == 0], q[fold == 0])
    assert not np.array_equal(q2[fold == 1], q[fold == 1])  # the others' maps did see fold 0
    np.testing.assert_array_equal(pcal.cross_fitted("none", p, outcome, observed, fold), p)
