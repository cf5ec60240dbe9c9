"""Which (query, expert) calls a self-play round makes: exploration under a call and dollar budget.

Given S draws of the orchestrator's p (MC dropout: p_samples [S, Q, E]), each query's cost
per expert [Q, E] and which pairs may still be called [Q, E] (not yet observed, expert
available), a strategy returns the calls to make, at most `max_calls` of them costing at most
`max_usd` in all:

  thompson     per query (in random order, over passes), draw one posterior sample s and one
               tradeoff lam (log-uniform over the range where the choice between experts
               changes, or 0), and call the callable expert maximising p_s - lam * cost: the
               call the orchestrator would make under a plausible model and budget. Spends
               the budget where routing decisions are made, not where they are obvious.
  uncertainty  the callable pairs by descending posterior std of p (MC-dropout spread),
               each scaled by (cheapest cost / its cost)^cost_power: the least known first,
               expensive experts discounted.
  uniform      callable pairs in uniformly random order (the baseline of the bandit benchmark).

Every strategy stops at the call or dollar budget; a pair that would overrun the dollars is
skipped and cheaper ones are still taken.
"""

from __future__ import annotations

import numpy as np

STRATEGIES = ("thompson", "uncertainty", "uniform")


def _take(order_q: np.ndarray, order_e: np.ndarray, cost: np.ndarray, max_calls: int, max_usd: float) -> list[tuple[int, int]]:
    picked, spent = [], 0.0
    for q, e in zip(order_q, order_e):
        if len(picked) >= max_calls:
            break
        c = float(cost[q, e])
        if spent + c > max_usd:
            continue
        picked.append((int(q), int(e)))
        spent += c
    return picked


def lam_range(cost: np.ndarray) -> tuple[float, float]:
    """Tradeoffs over which the choice p - lam * cost can change: from 1 / (largest mean cost
    gap) (only big p gaps justify the dearest expert) to 1 / (smallest gap)."""
    means = np.sort(np.unique(cost.mean(0)))
    gaps = np.diff(means)
    gaps = gaps[gaps > 0]
    if not len(gaps):
        return 1.0, 1.0
    return 0.01 / gaps.max(), 1.0 / gaps.min()


def choose_calls(strategy: str, p_samples: np.ndarray, cost: np.ndarray, callable_: np.ndarray, max_calls: int,
                 max_usd: float, rng: np.random.Generator, cost_power: float = 0.5) -> list[tuple[int, int]]:
    """[(query row, expert)] to call; indices into the Q rows / E experts given."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown exploration strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    q_idx, e_idx = np.nonzero(callable_)
    if not len(q_idx) or max_calls <= 0:
        return []
    if strategy == "uniform":
        perm = rng.permutation(len(q_idx))
        return _take(q_idx[perm], e_idx[perm], cost, max_calls, max_usd)
    if strategy == "uncertainty":
        std = p_samples.std(0)[q_idx, e_idx]
        scale = (cost[callable_].min() / np.maximum(cost[q_idx, e_idx], 1e-12)) ** cost_power
        order = np.lexsort((rng.random(len(q_idx)), -(std * scale)))  # ties broken at random
        return _take(q_idx[order], e_idx[order], cost, max_calls, max_usd)
    return _thompson(p_samples, cost, callable_.copy(), max_calls, max_usd, rng)


def _thompson(p_samples, cost, open_, max_calls, max_usd, rng) -> list[tuple[int, int]]:
    lo, hi = lam_range(cost)
    picked, spent = [], 0.0
    while len(picked) < max_calls:
        queries = np.flatnonzero(open_.any(1))
        if not len(queries):
            break
        progressed = False
        for q in rng.permutation(queries):
            if len(picked) >= max_calls:
                break
            s = rng.integers(len(p_samples))
            lam = 0.0 if rng.random() < 0.1 else float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            score = np.where(open_[q], p_samples[s, q] - lam * cost[q], -np.inf)
            e = int(np.argmax(score))
            open_[q, e] = False  # decided: called now, or too dear for what is left
            if spent + cost[q, e] > max_usd:
                continue
            picked.append((int(q), e))
            spent += float(cost[q, e])
            progressed = True
        if not progressed and spent >= max_usd:
            break
    return picked
