"""The deployment policy decided on VAL: the most accurate deployed router per budget, the
orchestrator on ties, budget ranges, lookup and its saved form."""

import numpy as np
import pytest

from leeroo_jax.errors import ConfigError
from leeroo_jax.orchestrator import policy


def _val(n=600, seed=0):
    """Three experts at 1, 3 and 9 (USD units) per query; outcomes independent per query."""
    rng = np.random.default_rng(seed)
    cost = np.tile([1.0, 3.0, 9.0], (n, 1)) * (1 + 0.1 * rng.uniform(size=(n, 1)))
    skill = rng.uniform(size=(n, 1))
    outcome = (rng.uniform(size=(n, 3)) < np.clip(skill + [-0.3, 0.0, 0.3], 0, 1)).astype(np.float64)
    return cost, outcome


def _exact_deployed_acc(p, cost, outcome, budget):
    """The batch-budget choice by brute force over lam: the smallest lam on a fine grid whose
    argmax p - lam*cost (ties to the cheaper) has mean cost <= budget."""
    rows = np.arange(len(p))
    for lam in np.concatenate([[0.0], np.geomspace(1e-6, 1e3, 20000)]):
        s = p - lam * cost
        e = np.where(s >= s.max(1, keepdims=True) - 1e-12, cost, np.inf).argmin(1)
        if cost[rows, e].mean() <= budget:
            return outcome[rows, e].mean()
    return outcome[rows, cost.argmin(1)].mean()


def test_the_better_router_wins_each_budget_and_the_orchestrator_wins_ties():
    cost, outcome = _val()
    rng = np.random.default_rng(1)
    cands = {"orchestrator": rng.uniform(size=outcome.shape),  # uninformative
             "oracle_ish": np.clip(outcome * 0.6 + 0.2 + 0.05 * rng.normal(size=outcome.shape), 0, 1),
             "same": None}
    cands["same"] = cands["orchestrator"].copy()  # identical to the primary: never wins
    pol = policy.fit(cands, cost, outcome, budgets=np.array([1.2, 2.0, 4.0, 8.0]))
    for k, b in enumerate(pol.budgets):
        accs = {n: _exact_deployed_acc(p, cost, outcome, b) for n, p in cands.items()}
        assert pol.val_acc[pol.winner[k]][k] == pytest.approx(max(accs.values()), abs=2 / len(cost))
    assert "same" not in pol.winner and pol.winner.count("oracle_ish") >= 3
    np.testing.assert_allclose(pol.val_acc["same"], pol.val_acc["orchestrator"])


def test_ranges_and_lookup():
    pol = policy.Policy(np.array([1.0, 2.0, 3.0, 4.0]), ["a", "a", "b", "a"], {})
    assert pol.ranges() == [{"router": "a", "from_usd": 0.0, "to_usd": 3.0},
                            {"router": "b", "from_usd": 3.0, "to_usd": 4.0},
                            {"router": "a", "from_usd": 4.0, "to_usd": None}]
    assert [pol.router_for(b) for b in (0.1, 1.0, 2.9, 3.0, 3.99, 4.0, 100.0)] == ["a", "a", "a", "b", "b", "a", "a"]
    back = policy.Policy.from_json(pol.to_json())
    assert back.winner == pol.winner and np.array_equal(back.budgets, pol.budgets)


@pytest.mark.parametrize("bad", [{}, {"budgets": [1, 2], "winner": ["a"]}, {"budgets": [2, 1], "winner": ["a", "b"]}])
def test_a_damaged_policy_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="policy.json is damaged"):
        policy.Policy.from_json(bad)


def test_budget_grid_spans_the_experts():
    cost, _ = _val()
    g = policy.budget_grid(cost, 10)
    assert g[0] == pytest.approx(cost.mean(0).min() * 1.001) and g[-1] == pytest.approx(cost.mean(0).max() * 1.001)
    assert np.all(np.diff(np.log(g)) == pytest.approx(np.log(g[1] / g[0])))


def _hull_acc(acc, mean_cost, budget):
    """The single experts' frontier at `budget` by an exact solver: the LP max sum_e w_e acc_e
    over mixing weights w >= 0, sum w = 1, sum w_e mean_cost_e <= budget."""
    from scipy.optimize import linprog
    res = linprog(-acc, A_ub=[mean_cost], b_ub=[budget], A_eq=[np.ones_like(acc)], b_eq=[1.0], bounds=(0, 1))
    assert res.status == 0
    return -res.fun


@pytest.mark.parametrize("seed", range(4))
def test_the_zero_router_deploys_the_exact_mix_of_single_experts(seed):
    """At any budget the mix fits the budget and is within one query of the LP frontier of the
    single experts; at a hull expert's own mean cost every query goes to that expert."""
    rng = np.random.default_rng(seed)
    q, e = 300, 6
    acc = rng.uniform(0.3, 0.9, e)
    cost = rng.uniform(0.1, 5.0, e) * rng.uniform(0.5, 1.5, (q, 1))  # per-query lengths vary
    c = cost.mean(0)
    step = np.ptp(acc) / q
    for b in np.concatenate([np.linspace(c.min(), c.max(), 25), c]):
        choice = policy.deployed_choice(np.tile(acc, (q, 1)), cost, b, policy.ZERO)
        assert cost[np.arange(q), choice].mean() <= b * (1 + 1e-9)
        assert acc[choice].mean() >= _hull_acc(acc, c, b) - step - 1e-9
    for h in policy.hull_experts(acc, c):
        choice = policy.deployed_choice(np.tile(acc, (q, 1)), cost, c[h], policy.ZERO)
        assert (choice == h).all()
        assert acc[h] == pytest.approx(_hull_acc(acc, c, c[h]))  # a hull expert is its own LP optimum
    assert (policy.deployed_choice(np.tile(acc, (q, 1)), cost, 0.5 * c.min(), policy.ZERO) == c.argmin()).all()
