"""Budget calibration: a target mean cost (USD per query) -> the budget value that meets it.

A per-query budget mode (`tradeoff` lam, `quality` tau) routes every query on its own, so it
can serve one query at a time, but its value says nothing about dollars. `calibrate` fits the
value on held-out (VAL) questions so that the mean chosen cost there meets a target; the
router then applies it per query on new questions with `select(p, cost, avail, cal.budget())`.

- tradeoff: the smallest float32 lam >= 0 whose choice (argmax p - lam*cost, ties to the
  cheaper) has mean cost <= target. The chosen mean cost C(lam) is non-increasing in lam, so
  this is the batch-budget multiplier: `select.batch_lambda`, the kernel's own bisection,
  hence the exact `select` semantics.
- quality: the tau whose choice (cheapest expert with p >= tau, else the best p) has the
  largest mean cost <= target. Per query the chosen cost is non-decreasing in tau (the set
  {p >= tau} shrinks, and past the largest p the fallback is the cheapest of the best-p
  experts, the last set's cheapest), and it changes only at the values of p. So a binary
  search over the sorted p values (on device, one `select` per step) is exact; the returned
  tau is the largest p value that fits.

`saturated` reports a target the router will not spend: even lam = 0 (the best p everywhere)
or the top tau costs less than the target. Under-spending is fine; the value is then the
most-spending one. A target outside the feasible range (the cheapest available expert
everywhere .. the dearest everywhere) is a one-line `ConfigError`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from leeroo_jax.errors import ConfigError
from leeroo_jax.orchestrator.select import Budget, batch_lambda, select

CAL_MODES = ("tradeoff", "quality")


@dataclasses.dataclass(frozen=True)
class Calibration:
    mode: str  # "tradeoff" or "quality"
    value: float  # lam or tau (a float32 value, exactly what `select` compares with)
    fit_mean_cost: float  # mean chosen cost on the calibration questions, USD per query
    saturated: bool  # the most-spending value still spends less than the target

    def budget(self) -> Budget:
        return Budget(self.mode, self.value)


def _as_arrays(cost_be, available):
    """(cost [B, E] float32, avail as given ([E] or [B, E]), avail [B, E]); every question needs
    an available expert. The kernel gets avail unbroadcast (see `select`)."""
    c = np.asarray(cost_be, np.float32)
    if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] == 0:
        raise ValueError(f"calibrate: cost {c.shape} must be a non-empty [B, E] array")
    given = np.ones(c.shape[1], bool) if available is None else np.asarray(available, bool)
    try:
        avail = np.broadcast_to(given, c.shape)
    except ValueError:
        raise ValueError(f"calibrate: available {given.shape} does not broadcast to {c.shape}") from None
    none = int((~avail.any(1)).sum())
    if none:
        raise ConfigError(f"calibrate: {none} of {c.shape[0]} questions have no available expert; "
                          "drop them or make an expert available")
    return c, given, avail


def feasible_range(cost_be, available=None) -> tuple[float, float]:
    """(lo, hi) USD per query: the mean over questions of the cheapest available expert's cost,
    and of the dearest's. cost_be: [B, E]; available: None (all), [E] or [B, E] bool."""
    c, _, avail = _as_arrays(cost_be, available)
    c = c.astype(np.float64)  # the float32 costs the kernel sees, averaged exactly
    lo = np.where(avail, c, np.inf).min(1).mean()
    hi = np.where(avail, c, -np.inf).max(1).mean()
    return float(lo), float(hi)


def _usd(x: float) -> str:
    return f"{x:.3g}"


def _check_target(target: float, lo: float, hi: float, n: int) -> None:
    span = (f"the feasible range {_usd(lo)}..{_usd(hi)} USD/query ({_usd(lo * 1e3)}..{_usd(hi * 1e3)} USD per 1k "
            f"queries) of these {n} questions (the cheapest available expert everywhere .. the dearest)")
    if not target >= 0:  # also NaN
        raise ConfigError(f"budget target {target} USD/query is negative or NaN; {span}; pick a target inside it")
    if target < lo or target > hi:
        side = "below" if target < lo else "above"
        raise ConfigError(f"budget target {_usd(target)} USD/query ({_usd(target * 1e3)} USD per 1k queries) is "
                          f"{side} {span}; pick a target inside it")


def check_target(target: float, cost_be, available=None) -> None:
    """One-line ConfigError unless `target` (USD/query) lies in feasible_range(cost_be): the
    check `calibrate` makes, available before any model has predicted anything."""
    c, _, avail = _as_arrays(cost_be, available)
    _check_target(float(target), *feasible_range(c, avail), n=c.shape[0])


def _mean_cost(p, c, avail, budget):
    return jnp.mean(select(p, c, avail, budget).cost)


@jax.jit
def _fit_tradeoff(p, c, avail, target):
    """(lam, C(lam), C(0)), each a scalar."""
    lam = batch_lambda(p, c, avail, target)
    return lam, _mean_cost(p, c, avail, Budget.tradeoff(lam)), _mean_cost(p, c, avail, Budget.tradeoff(0.0))


@jax.jit
def _fit_quality(p, c, avail, target):
    """(tau, C(tau), C(top tau)): tau the largest candidate whose mean cost fits (the smallest
    candidate if none does, which only float rounding at the range's low end can cause)."""
    # Candidates: every available p (unavailable ones as 0, which acts like the smallest p:
    # every expert qualifies, the cheapest wins). C is non-decreasing along the sorted array.
    cand = jnp.sort(jnp.where(avail, p, 0.0).ravel())  # [B*E]
    n = cand.shape[0]

    def step(_, lo_hi):  # invariant: cand[lo] fits (or lo = -1), cand[hi] does not (or hi = n)
        lo, hi = lo_hi
        mid = jnp.clip((lo + hi) // 2, 0, n - 1)
        fits = _mean_cost(p, c, avail, Budget.quality(cand[mid])) <= target
        done = hi - lo <= 1
        return (jnp.where(done | ~fits, lo, mid), jnp.where(done | fits, hi, mid))

    steps = max(1, math.ceil(math.log2(n + 1)))
    lo, _ = lax.fori_loop(0, steps, step, (jnp.int32(-1), jnp.int32(n)))
    tau = cand[jnp.maximum(lo, 0)]
    return tau, _mean_cost(p, c, avail, Budget.quality(tau)), _mean_cost(p, c, avail, Budget.quality(cand[-1]))


def calibrate(p_val, cost_val, target_mean_cost: float, mode: str = "tradeoff", available=None) -> Calibration:
    """Fit the `mode` budget value ("tradeoff" lam or "quality" tau) on held-out questions so
    that the mean chosen cost meets `target_mean_cost` (USD per query).

    p_val, cost_val: [B, E]; available: None (all), [E] or [B, E] bool. Apply the result on
    new questions with `select(p, cost, available, cal.budget())`.
    """
    if mode not in CAL_MODES:
        raise ConfigError(f"calibrate: mode {mode!r} is not one of {CAL_MODES}; batch_budget needs no calibration")
    c, given, avail = _as_arrays(cost_val, available)
    p = np.asarray(p_val, np.float32)
    if p.shape != c.shape:
        raise ValueError(f"calibrate: p {p.shape} and cost {c.shape} must both be [B, E]")
    target = float(target_mean_cost)
    _check_target(target, *feasible_range(c, avail), n=c.shape[0])
    fit = _fit_tradeoff if mode == "tradeoff" else _fit_quality
    value, fit_cost, top_cost = (float(x) for x in fit(p, c, given, np.float32(target)))
    return Calibration(mode, value, fit_cost, saturated=top_cost < target)
