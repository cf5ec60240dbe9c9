"""The deployment policy: which router answers at which budget, decided on VAL only.

A learned router is a product only if it never loses to the obvious choices: the zero router
(every query to one expert, or a mix of two) and the reference routers (subject prior,
nearest neighbours). `fit` compares, on VAL, every candidate router's *deployed* accuracy (the
batch-budget choice of the selection kernel: lam* found from p and costs alone) over a grid
of mean budgets between the cheapest and the dearest expert's mean cost. At each grid budget
the most accurate candidate wins (the orchestrator on ties); runs of equal winners become
budget ranges. A budget B is then served by the winner of the largest grid budget <= B (the
first one below the grid). Nothing here reads TEST: the report (eval/guarantees.py) only
shows what this decision delivers there.

The policy is data (`to_json` / `from_json`), saved in the run beside the checkpoint, so
`route` and the server apply the same decision.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from leeroo_jax.errors import ConfigError
from leeroo_jax.orchestrator import select

PRIMARY = "orchestrator"
ZERO = "constant"  # the router that knows nothing about the query: its p is each expert's accuracy


def hull_experts(acc: np.ndarray, mean_cost: np.ndarray) -> np.ndarray:
    """Indices of the experts on the non-decreasing upper hull of (mean cost, acc), cost
    ascending: the single experts worth mixing (among equal costs the most accurate, then the
    lower index)."""
    order = np.lexsort((np.arange(len(acc)), -acc, mean_cost))  # cost up, acc down, index up
    keep: list[int] = []
    for e in order:
        if keep and acc[e] <= acc[keep[-1]]:
            continue  # a cheaper (or equal-cost) expert is at least as accurate
        while len(keep) >= 2:
            a, b = keep[-2], keep[-1]
            cross = (mean_cost[b] - mean_cost[a]) * (acc[e] - acc[a]) - (acc[b] - acc[a]) * (mean_cost[e] - mean_cost[a])
            if cross >= 0:  # b is on or under the chord a-e
                keep.pop()
            else:
                break
        keep.append(int(e))
    return np.asarray(keep)


def mixture_choice(acc: np.ndarray, cost: np.ndarray, budget: float) -> np.ndarray:
    """[Q] the zero router deployed under a batch budget: the exact mix of the two single
    experts around `budget` on the hull of (this batch's mean cost, acc [E]).

    The dearer one takes the queries where it costs least extra, as many as fit, so at a
    hull expert's own mean cost every query goes to it. (The selection kernel on a constant
    p instead splits every expert by per-query cost at one lam, which can land under the
    expert it should match.)"""
    q = len(cost)
    hull = hull_experts(np.asarray(acc, np.float64), cost.mean(0))
    c = cost[:, hull].mean(0)
    k = int(np.searchsorted(c, budget + 1e-12 * max(budget, 1e-30), side="right")) - 1
    if k < 0 or k == len(hull) - 1:  # below the cheapest: the cheapest; above the top: the top
        return np.full(q, hull[max(k, 0)])
    lo, hi = hull[k], hull[k + 1]
    extra = cost[:, hi] - cost[:, lo]
    order = np.argsort(extra, kind="stable")
    fits = np.cumsum(extra[order]) <= (budget - c[k]) * q * (1 + 1e-9)
    choice = np.full(q, lo)
    choice[order[:int(fits.sum())]] = hi
    return choice


def deployed_choice(p: np.ndarray, cost: np.ndarray, budget: float, router: str = PRIMARY) -> np.ndarray:
    """[Q] the batch-budget choice (mean cost <= budget) of `router` with p [Q, E] under cost
    [Q, E]: the selection kernel's, or for the zero router the exact mix of single experts."""
    if router == ZERO:
        return mixture_choice(np.asarray(p)[0], np.asarray(cost, np.float64), budget)
    sel = select.select(jnp.asarray(p, jnp.float32), jnp.asarray(cost, jnp.float32), jnp.ones(cost.shape[1], bool),
                        select.Budget.batch_budget(float(budget)))
    return np.asarray(sel.choice)


def budget_grid(cost: np.ndarray, n: int = 48) -> np.ndarray:
    """n mean budgets, geometric from just above the cheapest expert's mean cost to just above
    the dearest's (one budget when every expert costs the same).

    Exactly at an expert's mean cost, float32 rounding of the chosen mean decides whether the
    kernel's multiplier saturates, and saturated, every router makes the same index-order
    choice among equal-cost experts: a tie that says nothing about how each routes among them
    at that price. 1.001x keeps lam finite (and 0 at the top)."""
    c = cost.mean(0) * (1 + 1e-3)
    return np.unique(np.geomspace(c.min(), c.max(), n))


def deployed_curve(p: np.ndarray, cost: np.ndarray, outcome: np.ndarray, budgets: np.ndarray,
                   router: str = PRIMARY) -> np.ndarray:
    """[K, 2] (realised mean cost, accuracy) of `router`'s deployed choice at each budget."""
    rows = np.arange(len(p))
    out = []
    for b in budgets:
        e = deployed_choice(p, cost, b, router)
        out.append((cost[rows, e].mean(), outcome[rows, e].mean()))
    return np.asarray(out)


@dataclasses.dataclass
class Policy:
    budgets: np.ndarray  # [K] the VAL grid of mean budgets (USD per query), ascending
    winner: list[str]  # [K] the router deployed from budgets[k] up to budgets[k + 1]
    val_acc: dict[str, list[float]]  # router -> [K] its deployed VAL accuracy (the evidence)

    def router_for(self, budget: float) -> str:
        k = int(np.searchsorted(self.budgets, budget, side="right")) - 1
        return self.winner[max(k, 0)]

    def ranges(self) -> list[dict]:
        """[{router, from_usd, to_usd}]: the winners as budget ranges (to_usd None = no upper end)."""
        out = []
        for k, name in enumerate(self.winner):
            if out and out[-1]["router"] == name:
                continue
            if out:
                out[-1]["to_usd"] = float(self.budgets[k])
            out.append({"router": name, "from_usd": float(self.budgets[k]) if k else 0.0, "to_usd": None})
        return out

    def to_json(self) -> dict:
        return {"budgets": self.budgets.tolist(), "winner": list(self.winner), "val_acc": self.val_acc,
                "ranges": self.ranges()}

    @classmethod
    def from_json(cls, d: dict) -> "Policy":
        try:
            pol = cls(np.asarray(d["budgets"], np.float64), list(d["winner"]), dict(d.get("val_acc", {})))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"the run's policy.json is damaged ({e}); retrain the run to rebuild it") from None
        if len(pol.budgets) != len(pol.winner) or len(pol.budgets) == 0 or np.any(np.diff(pol.budgets) <= 0):
            raise ConfigError("the run's policy.json is damaged (budgets and winners do not match); retrain the run")
        return pol


def fit(val_p: dict[str, np.ndarray], cost: np.ndarray, outcome: np.ndarray, budgets: np.ndarray | None = None,
        primary: str = PRIMARY) -> Policy:
    """The policy from each candidate's p [Q, E] on the VAL questions graded by every expert
    (cost, outcome [Q, E]). primary: the router that wins ties."""
    if primary not in val_p:
        raise ValueError(f"no p for the primary router {primary!r}")
    budgets = budget_grid(cost) if budgets is None else np.asarray(budgets, np.float64)
    names = [primary] + [n for n in val_p if n != primary]  # the primary first: it wins ties
    acc = {n: deployed_curve(val_p[n], cost, outcome, budgets, n)[:, 1] for n in names}
    table = np.stack([acc[n] for n in names])  # [R, K]
    winner = [names[int(np.argmax(table[:, k] > table[:, k].max() - 1e-12))] for k in range(len(budgets))]
    return Policy(budgets, winner, {n: acc[n].tolist() for n in names})
