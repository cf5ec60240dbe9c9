"""Accuracy-cost frontiers and the numbers that summarise them.

A router gives p[Q, E] (its belief that expert e answers query q correctly). Sweeping the
trade-off λ in argmax_e p - λ·cost turns it into (mean cost, accuracy) points, accuracy
measured with the real graded outcomes. Any two points can be mixed at random (route a
fraction of queries with each), so what a router can deliver at cost c is the upper convex
hull of its points; it is also made non-decreasing (more budget never has to lower
accuracy: spend less). All summaries read that hull:

  acc_at(c)        hull accuracy at mean cost c (linear between hull points, flat outside)
  cost_to_reach(a) least mean cost whose hull accuracy is >= a (None if never)
  AIQ              area under the hull over [cheapest expert's cost, dearest expert's cost] / width
  APGR             mean over [c_weak, c_strong] of (acc_at(c) - acc_weak) / (acc_strong - acc_weak)
  CPT(x)           (cost_to_reach(acc_weak + x·gap) - c_weak) / (c_strong - c_weak): the share of
                   the strong model's extra cost needed to recover x of the gap (RouteLLM's CPT,
                   with cost in place of the share of calls, which it equals for two models)
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Frontier:
    points: np.ndarray  # [N, 2] (mean cost, accuracy) of every swept configuration
    hull: np.ndarray  # [M, 2] the non-decreasing upper convex hull, cost ascending

    def acc_at(self, cost: float) -> float:
        return float(np.interp(cost, self.hull[:, 0], self.hull[:, 1]))

    def cost_to_reach(self, acc: float) -> float | None:
        h = self.hull
        if acc > h[-1, 1] + 1e-12:
            return None
        if acc <= h[0, 1]:
            return float(h[0, 0])
        i = int(np.argmax(h[:, 1] >= acc - 1e-12))  # first hull point at or above acc
        (c0, a0), (c1, a1) = h[i - 1], h[i]
        return float(c0 + (acc - a0) * (c1 - c0) / (a1 - a0))

    @property
    def max_acc(self) -> float:
        return float(self.hull[-1, 1])

    def area(self, lo: float, hi: float) -> float:
        """Mean hull accuracy over [lo, hi] (exact for the piecewise-linear hull); the accuracy
        at lo when the interval is empty (a pool whose experts all cost the same)."""
        if hi <= lo:
            return self.acc_at(lo)
        xs = np.unique(np.concatenate([[lo, hi], self.hull[:, 0][(self.hull[:, 0] > lo) & (self.hull[:, 0] < hi)]]))
        ys = np.interp(xs, self.hull[:, 0], self.hull[:, 1])
        return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2) / (hi - lo))


def upper_hull(points: np.ndarray) -> np.ndarray:
    """Non-decreasing upper convex hull of (cost, acc) points, cost ascending."""
    pts = np.unique(np.asarray(points, np.float64), axis=0)  # sorted by cost, then acc
    # Non-decreasing: a point is useless if a cheaper (or equal-cost) one is at least as accurate.
    keep, best = [], -np.inf
    for c, a in pts:
        if a > best:
            keep.append((c, a))
            best = a
    hull: list[tuple[float, float]] = []
    for p in keep:  # Andrew's monotone chain, upper part
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:  # hull[-1] is under the chord
                hull.pop()
            else:
                break
        hull.append(p)
    return np.asarray(hull)


def tradeoff_choices(p: np.ndarray, cost: np.ndarray, lam: float) -> np.ndarray:
    """argmax_e p - λ·cost per query; ties go to the cheaper expert, then the lower index."""
    score = p - lam * cost
    best = score.max(axis=1, keepdims=True)
    tied = score >= best - 1e-12 * np.maximum(1.0, np.abs(best))
    masked_cost = np.where(tied, cost, np.inf)
    return masked_cost.argmin(axis=1)


def lambda_grid(p: np.ndarray, cost: np.ndarray, n: int = 256) -> np.ndarray:
    """0, a log grid spanning the λ at which choices can change, and a λ that forces the cheapest."""
    dc = np.abs(cost[:, :, None] - cost[:, None, :])
    dp = np.abs(p[:, :, None] - p[:, None, :])
    pos = dc > 0
    if not pos.any():
        return np.array([0.0])
    ratios = dp[pos] / dc[pos]
    ratios = ratios[ratios > 0]
    if ratios.size == 0:
        return np.array([0.0, 1.0])
    lo, hi = np.quantile(ratios, 0.001), ratios.max()
    return np.concatenate([[0.0], np.geomspace(lo, hi, n), [hi * 10 + 1.0]])


def sweep(p: np.ndarray, cost: np.ndarray, outcome: np.ndarray, lams: np.ndarray | None = None) -> Frontier:
    """Frontier of a router: p, cost, outcome are [Q, E]; outcome is the real graded result."""
    lams = lambda_grid(p, cost) if lams is None else lams
    rows = np.arange(p.shape[0])
    pts = []
    for lam in lams:
        e = tradeoff_choices(p, cost, lam)
        pts.append((cost[rows, e].mean(), outcome[rows, e].mean()))
    pts = np.asarray(pts)
    return Frontier(pts, upper_hull(pts))


def strong_share_curve(p: np.ndarray, outcome: np.ndarray, weak: int, strong: int, n: int = 1000) -> Frontier:
    """RouteLLM's two-model curve: route between experts `weak` and `strong` only by thresholding
    p[:, strong] - p[:, weak], x = the share of queries sent to the strong one. Its "hull" is
    the threshold curve itself (no random mixing, as RouteLLM measures APGR and CPT), so with
    weak = (0, acc_weak) and strong = (1, acc_strong), apgr / cpt give its units: CPT as a
    share of strong-model calls."""
    d = p[:, strong] - p[:, weak]
    ths = np.unique(np.quantile(d, np.linspace(0, 1, n + 1))) if len(np.unique(d)) > n else np.unique(d)
    ths = np.concatenate([[ths[0] - 1.0], ths])  # below every difference: all to the strong one
    to_strong = d[None, :] > ths[:, None]  # [T, Q]; a tie goes to the weak one
    pts = np.stack([to_strong.mean(1), np.where(to_strong, outcome[:, strong], outcome[:, weak]).mean(1)], 1)
    pts = np.unique(pts, axis=0)
    return Frontier(pts, pts)


def experts_frontier(cost: np.ndarray, outcome: np.ndarray) -> Frontier:
    """The zero router: the hull of the single experts (and their random mixtures)."""
    pts = np.stack([cost.mean(0), outcome.mean(0)], axis=1)
    return Frontier(pts, upper_hull(pts))


def oracle_choices(cost: np.ndarray, outcome: np.ndarray) -> np.ndarray:
    """Per query, the cheapest expert that answers correctly (the cheapest one if none does)."""
    return tradeoff_choices(outcome.astype(np.float64), cost, 0.0)


@dataclasses.dataclass(frozen=True)
class Summary:
    aiq: float
    max_acc: float
    acc_at_cost_of: dict[str, float]
    cost_ratio_to_acc_of: dict[str, float | None]


def summarize(front: Frontier, names: list[str], cost: np.ndarray, outcome: np.ndarray) -> Summary:
    c, a = cost.mean(0), outcome.mean(0)
    ratio = {}
    for i, n in enumerate(names):
        need = front.cost_to_reach(a[i])
        ratio[n] = None if need is None else need / c[i]
    return Summary(
        aiq=front.area(c.min(), c.max()),
        max_acc=front.max_acc,
        acc_at_cost_of={n: front.acc_at(c[i]) for i, n in enumerate(names)},
        cost_ratio_to_acc_of=ratio,
    )


def apgr(front: Frontier, weak: tuple[float, float], strong: tuple[float, float]) -> float:
    """Average performance gap recovered over [c_weak, c_strong]; weak/strong are (cost, acc)."""
    (cw, aw), (cs, as_) = weak, strong
    return (front.area(cw, cs) - aw) / (as_ - aw)


def cpt(front: Frontier, weak: tuple[float, float], strong: tuple[float, float], x: float) -> float | None:
    """Share of the strong model's extra cost needed to recover fraction x of the gap."""
    (cw, aw), (cs, as_) = weak, strong
    need = front.cost_to_reach(aw + x * (as_ - aw))
    if need is not None and cs <= cw:  # equal costs: reached at the weak model's cost or not at all
        return 0.0 if need <= cw else None
    return None if need is None else max(0.0, (need - cw) / (cs - cw))
