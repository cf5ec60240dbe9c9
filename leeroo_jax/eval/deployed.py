"""The numbers a user can actually get: budgets fixed before any outcome is seen.

The frontier (frontier.py) sweeps lam with the evaluation split's outcomes and reads its
convex hull: the best a router could do with hindsight. A user instead fixes a budget first:

  deployed    the selection kernel's `batch_budget` mode on the evaluation questions: lam*
              is found from the predicted p and the known costs alone (no outcomes), so the
              mean cost never exceeds the budget.
  calibrated  lam fitted on VAL questions to hit a target mean cost (orchestrator/calibrate.py),
              then applied per query to the evaluation questions, as a server would route one
              query at a time. The realised cost misses the target by the cost error.

Targets (`targets`): the weak expert's mean cost and 0.4x the strong expert's, on the
evaluation questions (costs are known before answers are).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from leeroo_jax.orchestrator import calibrate, policy, select

STRONG_SHARE = 0.4


def targets(cost: np.ndarray, names: list[str], weak: str, strong: str) -> dict[str, float]:
    """{label: mean cost in USD per query}; cost [Q, E] of the evaluation questions."""
    return {f"{weak.split('/')[-1]}": float(cost[:, names.index(weak)].mean()),
            f"{STRONG_SHARE}x {strong.split('/')[-1]}": STRONG_SHARE * float(cost[:, names.index(strong)].mean())}


def _realised(choice: np.ndarray, cost: np.ndarray, outcome: np.ndarray) -> tuple[float, float]:
    rows = np.arange(len(choice))
    return float(outcome[rows, choice].mean()), float(cost[rows, choice].mean())


def deployed(p: np.ndarray, cost: np.ndarray, outcome: np.ndarray, budget: float, router: str = policy.PRIMARY) -> dict:
    """Accuracy and realised mean cost of `router`'s batch-budget choice; p, cost, outcome [Q, E]."""
    acc, spent = _realised(policy.deployed_choice(p, cost, budget, router), cost, outcome)
    return {"budget": budget, "acc": acc, "cost": spent}


def calibrated(p_val: np.ndarray, cost_val: np.ndarray, p: np.ndarray, cost: np.ndarray, outcome: np.ndarray,
               target: float, mode: str = "tradeoff") -> dict:
    """Fit `mode`'s value on VAL for `target`, route the evaluation questions with it. A target
    outside what VAL routing can spend (the weak expert's cost on TEST below VAL's cheapest
    routing, when the weak expert is the cheapest) is fitted at VAL's nearest end, flagged."""
    lo, hi = calibrate.feasible_range(cost_val.astype(np.float32))
    fit_at = min(max(target, lo), hi)
    cal = calibrate.calibrate(p_val, cost_val, fit_at, mode)
    sel = select.select(jnp.asarray(p, jnp.float32), jnp.asarray(cost, jnp.float32),
                        jnp.ones(cost.shape[1], bool), cal.budget())
    acc, spent = _realised(np.asarray(sel.choice), cost, outcome)
    return {"target": target, "mode": mode, "value": cal.value, "acc": acc, "cost": spent,
            "cost_error_pct": 100.0 * (spent - target) / target, "saturated": cal.saturated,
            "clipped_to_val_range": fit_at != target}
