"""What the VAL-decided deployment policy (orchestrator/policy.py) delivers on TEST.

For every report budget (a mean USD per query fixed before outcomes) the section names the
router the policy deployed, its accuracy and realised cost, every candidate's accuracy at the
same budget, and the best single expert affordable there (the most accurate expert whose mean
cost fits). The policy's frontier is read the way a user meets it: the deployed choice at
`n` budgets from the cheapest to the dearest expert's mean cost, each served by the router
the policy names for it; its hull AIQ sits beside every candidate's AIQ on the same budgets
and beside the hindsight sweep AIQs of the main report.

`checks` turns that into the two promises of the policy, each True/False with its margin:
at every report budget the deployed accuracy is >= the best affordable single expert's, and
the policy's AIQ is >= every candidate's.
"""

from __future__ import annotations

import numpy as np

from leeroo_jax.eval import frontier as fr
from leeroo_jax.orchestrator import policy as policy_lib

TOL = 1e-9


def best_affordable(cost: np.ndarray, outcome: np.ndarray, names: list[str], budget: float) -> dict | None:
    """The most accurate single expert whose mean cost is <= budget (None if none is)."""
    c, a = cost.mean(0), outcome.mean(0)
    ok = np.flatnonzero(c <= budget + TOL)
    if not len(ok):
        return None
    e = int(ok[np.argmax(a[ok])])
    return {"expert": names[e], "acc": float(a[e]), "cost": float(c[e])}


def _policy_curve(pol: policy_lib.Policy, test_p: dict[str, np.ndarray], cost, outcome, budgets) -> np.ndarray:
    rows = np.arange(len(cost))
    pts = []
    for b in budgets:
        router = pol.router_for(b)
        e = policy_lib.deployed_choice(test_p[router], cost, b, router)
        pts.append((cost[rows, e].mean(), outcome[rows, e].mean()))
    return np.asarray(pts)


def section(pol: policy_lib.Policy, test_p: dict[str, np.ndarray], cost: np.ndarray, outcome: np.ndarray,
            names: list[str], report_budgets: dict[str, float], n: int = 64) -> dict:
    """The report's "deployment" section; test_p: router -> p [Q, E] on the evaluated questions."""
    rows = np.arange(len(cost))
    at = {}
    for label, b in report_budgets.items():
        router = pol.router_for(b)
        each = {}
        for name, p in test_p.items():
            e = policy_lib.deployed_choice(p, cost, b, name)
            each[name] = {"acc": float(outcome[rows, e].mean()), "cost": float(cost[rows, e].mean())}
        at[label] = {"budget": float(b), "deployed": router, **each[router], "routers": each,
                     "best_single": best_affordable(cost, outcome, names, b)}
    grid = policy_lib.budget_grid(cost, n)
    lo, hi = cost.mean(0).min(), cost.mean(0).max()
    aiq = {"policy": fr.Frontier(pts := _policy_curve(pol, test_p, cost, outcome, grid), fr.upper_hull(pts)).area(lo, hi)}
    for name, p in test_p.items():
        pts = policy_lib.deployed_curve(p, cost, outcome, grid, name)
        aiq[name] = fr.Frontier(pts, fr.upper_hull(pts)).area(lo, hi)
    return {"ranges": pol.ranges(), "at": at, "aiq_deployed": aiq}


def checks(sec: dict) -> dict:
    """{check: {ok, margin}}: deployed >= best affordable single expert at each report budget,
    and the policy's deployed AIQ >= every candidate's."""
    out = {}
    for label, row in sec["at"].items():
        if row["best_single"] is not None:
            m = row["acc"] - row["best_single"]["acc"]
            out[f"acc at {label} >= best single expert"] = {"ok": bool(m >= -TOL), "margin": float(m)}
    aiq = sec["aiq_deployed"]
    for name, v in aiq.items():
        if name not in ("policy", policy_lib.PRIMARY):  # the promise is against the obvious choices
            m = aiq["policy"] - v
            out[f"AIQ >= {name}"] = {"ok": bool(m >= -TOL), "margin": float(m)}
    return out
