"""The selection kernel: per query, pick one expert from `p[B, E]` and `cost[B, E]` under a budget.

One jitted function, `select(p, cost, available, budget)`, with four budget modes:

- `cap`       best p among available experts with cost <= cap; none fits -> the cheapest.
- `tradeoff`  argmax_e p - lam * cost.
- `batch_budget`  mean chosen cost over the batch <= B (see below).
- `quality`   cheapest available expert with p >= tau; none meets it -> the best p.

Ties are deterministic: when maximising quality (or p - lam*cost) equal scores go to the
cheaper expert; when minimising cost, equal costs go to the higher p; then the lower index.
The budget's mode is static (pytree metadata) and its value dynamic, so sweeping a budget
value never recompiles. Inputs: p in [0, 1], cost >= 0, both finite.

Performance (XLA CPU, 1M x 16): every mode is two or three fused passes over [B, E] (see
`_reduce2` for why the passes look the way they do); a bisection step is one pass.

Batch budget. Choosing one expert per query to maximise mean p subject to mean cost <= B is
a multiple-choice knapsack (NP-hard). We solve its Lagrangian relaxation: for a multiplier
lam every query independently takes argmax_e p - lam*cost, and the chosen mean cost C(lam)
is non-increasing in lam. Bisection finds the smallest lam* with C(lam*) <= B, so the budget
is never exceeded (unless even the cheapest expert everywhere exceeds it; then that is what
we return). This is the LP relaxation's solution rounded down: the LP optimum equals our
choice except on the queries whose choice flips at lam* (generically one), where the LP mixes
two experts. Hence LP* - max(p)/B_q <= ours <= integer optimum <= LP*, with B_q the number of
queries (by weak duality the gap is at most lam* * (B - C(lam*))).

Bisection runs on the *bit patterns* of non-negative float32 lam (they order like the
floats), so 31 fixed steps of a `lax.fori_loop` land on adjacent floats whatever the scale
of the costs (1e-6..1e-2 USD a query puts lam anywhere from ~1 to ~1e8): no range guess, no
lost resolution. Each step is one fused pass over [B, E] plus a global mean: with the batch
sharded over devices jit makes that mean an all-reduce, so lam* is the same on every device
and equals the single-device answer.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from leeroo_jax.errors import ConfigError

MODES = ("cap", "tradeoff", "batch_budget", "quality")

# Bisection bracket, as int32 bit patterns of float32 lam: -1 stands for "below 0" (never
# evaluated); 0x7F7FFFFF is FLT_MAX, where lam*cost saturates (see `_lagrangian`) and the
# cheapest expert wins everywhere. hi - lo = 2**31 - 2**23 halves (rounding up) to 1 in 31.
_LO_BITS, _HI_BITS, _STEPS = -1, 0x7F7FFFFF, 31
_FLT_MAX = float(jnp.finfo(jnp.float32).max)


@dataclasses.dataclass(frozen=True)
class Budget:
    """mode (static: one compiled program per mode) and value (dynamic: cap, lam, B or tau)."""

    mode: str
    value: Any

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"budget mode {self.mode!r} is not one of {MODES}")

    @classmethod
    def cap(cls, max_cost) -> "Budget":
        return cls("cap", max_cost)

    @classmethod
    def tradeoff(cls, lam) -> "Budget":
        return cls("tradeoff", lam)

    @classmethod
    def batch_budget(cls, mean_cost) -> "Budget":
        return cls("batch_budget", mean_cost)

    @classmethod
    def quality(cls, tau) -> "Budget":
        return cls("quality", tau)


jax.tree_util.register_dataclass(Budget, data_fields=["value"], meta_fields=["mode"])


class Selection(NamedTuple):
    choice: jax.Array  # [B] int32 expert index; -1 if no expert is available
    p: jax.Array  # [B] f32 p of the choice (NaN if none)
    cost: jax.Array  # [B] f32 cost of the choice (NaN if none)


def _reduce2(k1, k2):
    """Row-wise lexicographic best of [B, E] keys: k1 largest, then k2 smallest.

    Returns (k1, k2) at the best, each [B]. One 2-operand variadic reduce. Measured on XLA's
    CPU backend (1M x 16): one vectorized pass (~8 ms) as long as the fused producer of k1,
    k2 stays small (about six elementwise ops); past that, with a third operand, or as a
    plain f32 max, the same reduce takes 50-100 ms. So the kernel is built from small-key
    reduce2s and int32 mins.
    """

    def combine(a, b):
        take_a = (a[0] > b[0]) | ((a[0] == b[0]) & (a[1] < b[1]))
        return jnp.where(take_a, a[0], b[0]), jnp.where(take_a, a[1], b[1])

    init = (jnp.float32(-jnp.inf), jnp.float32(jnp.inf))  # the identity: everything beats it
    return lax.reduce((k1, k2), init, combine, (k1.ndim - 1,))


def _first(hit):
    """[B] int32: the lowest expert index where hit [B, E] is True (E if none)."""
    idx = lax.broadcasted_iota(jnp.int32, hit.shape, hit.ndim - 1)
    return jnp.min(jnp.where(hit, idx, hit.shape[-1]), axis=-1)


def _lexbest(k1, k2):
    """[B] int32 index of the best (k1 largest, k2 smallest) per row; then the lowest index."""
    m1, m2 = _reduce2(k1, k2)
    return _first((k1 == m1[:, None]) & (k2 == m2[:, None]))


def _lagrangian(p, c, avail, lam):
    """Keys (k1 [B, E] to maximise, k2 = cost to minimise on ties) for argmax p - lam*cost.

    lam*cost saturates at FLT_MAX instead of overflowing to inf, so every available expert
    scores finite and never ties an unavailable one (-inf), and at lam = FLT_MAX the order
    is by cost alone. Ties go to the cheaper expert, which makes the chosen mean cost C(lam)
    right-continuous: the smallest feasible lam exists. Unavailable experts are masked inside
    the fused pass; a masked copy of p, made once, would cost more (a 64 MB write) than the
    select does in every pass.
    """
    return jnp.where(avail, p - jnp.minimum(lam * c, _FLT_MAX), -jnp.inf), c


def _batch_lambda(p, c, avail, mean_budget):
    """Smallest float32 lam >= 0 whose greedy choice has mean cost <= mean_budget.

    p, c: [B, E]; avail: [E] or [B, E] bool. Returns a scalar (FLT_MAX if no lam fits).
    """

    def mean_cost(lam):  # [] the chosen mean cost at lam; the mean is over the global batch
        _, cost_b = _reduce2(*_lagrangian(p, c, avail, lam))  # [B], one pass, no index
        return jnp.mean(cost_b)

    def step(_, lo_hi):
        lo, hi = lo_hi
        mid = lo + (hi - lo + 1) // 2  # in (lo, hi]: never the -1 sentinel; no overflow
        fits = mean_cost(lax.bitcast_convert_type(mid, jnp.float32)) <= mean_budget
        return jnp.where(fits, lo, mid), jnp.where(fits, mid, hi)

    _, hi = lax.fori_loop(0, _STEPS, step, (jnp.int32(_LO_BITS), jnp.int32(_HI_BITS)))
    # Invariant: hi fits, or is FLT_MAX (cheapest everywhere): the returned choice fits.
    return lax.bitcast_convert_type(hi, jnp.float32)


@jax.jit
def batch_lambda(p, cost, available, mean_budget) -> jax.Array:
    """The batch-budget multiplier lam*: the smallest float32 lam >= 0 whose `tradeoff` choice
    (argmax p - lam*cost, ties to the cheaper) has mean cost <= mean_budget over the batch.

    p, cost: [B, E]; available: [E] or [B, E] bool; mean_budget: scalar (USD per query).
    Returns a float32 scalar; FLT_MAX when no lam fits (the cheapest expert everywhere).
    `select(.., Budget.batch_budget(B))` is `select(.., Budget.tradeoff(batch_lambda(.., B)))`.
    """
    return _batch_lambda(jnp.asarray(p, jnp.float32), jnp.asarray(cost, jnp.float32),
                         jnp.asarray(available, bool), jnp.asarray(mean_budget, jnp.float32))


def _best(p, c, cand, cheapest):
    """(found, p, cost) [B] of the best candidate of each row: the highest p, then cheaper;
    or with `cheapest`, the lowest cost, then higher p. cand: [B, E] bool."""
    if cheapest:
        m1, neg_p = _reduce2(jnp.where(cand, -c, -jnp.inf), -p)
        return m1 > -jnp.inf, -neg_p, -m1
    m1, cost = _reduce2(jnp.where(cand, p, -jnp.inf), c)
    return m1 > -jnp.inf, m1, cost


def _gated(p, c, avail, ok, ok_cheapest):
    """The best expert among the ok ones, else among all available (cap, quality).

    ok_cheapest: whether "best" among the ok ones is the cheapest (quality) or the highest p
    (cap); the fallback uses the other order. No single 2-key order expresses this exactly,
    so two reduce2 passes give both candidates' (p, cost), each row picks one, and a last
    pass finds the lowest available index with exactly that (p, cost) (any such expert is an
    equally valid pick: same p, same cost, same ok-ness). Returns (choice, p, cost), each [B].
    """
    any_ok, p1, c1 = _best(p, c, avail & ok, ok_cheapest)
    _, p2, c2 = _best(p, c, avail, not ok_cheapest)
    p_b, c_b = jnp.where(any_ok, p1, p2), jnp.where(any_ok, c1, c2)
    return _first(avail & (p == p_b[:, None]) & (c == c_b[:, None])), p_b, c_b


@jax.jit(static_argnames=("from_logits",))
def select(p, cost, available, budget: Budget, *, from_logits: bool = False) -> Selection:
    """Pick one expert per query.

    p: [B, E] probabilities (or logits with from_logits=True; sigmoid is applied).
    cost: [B, E] cost of asking expert e query b (e.g. USD), >= 0.
    available: [E] (or [B, E]) bool; an unavailable expert is never chosen.
    budget: a `Budget`. Returns `Selection(choice [B] int32, p [B], cost [B])`.
    """
    p = jnp.asarray(p, jnp.float32)
    c = jnp.asarray(cost, jnp.float32)
    if p.ndim != 2 or p.shape != c.shape:
        raise ValueError(f"select: p {p.shape} and cost {c.shape} must both be [B, E]")
    if from_logits:
        p = jax.nn.sigmoid(p)
    # [E] (or [B, E]); left unbroadcast: XLA would hoist a [B, E] broadcast out of the
    # bisection loop and re-read it every step (~50% slower per step).
    avail = jnp.asarray(available, bool)
    if jnp.broadcast_shapes(avail.shape, p.shape) != p.shape:
        raise ValueError(f"select: available {avail.shape} does not broadcast to {p.shape}")
    v = jnp.asarray(budget.value, jnp.float32)

    if budget.mode == "cap":  # best p with cost <= cap, else the cheapest
        choice, p_b, c_b = _gated(p, c, avail, c <= v, ok_cheapest=False)  # each [B]
    elif budget.mode == "quality":  # cheapest with p >= tau, else the best p
        choice, p_b, c_b = _gated(p, c, avail, p >= v, ok_cheapest=True)
    else:  # tradeoff, batch_budget: argmax p - lam*cost, ties -> the cheaper
        if budget.mode == "tradeoff":
            lam = jnp.minimum(v, _FLT_MAX)
        else:
            lam = _batch_lambda(p, c, avail, v)
        choice = _lexbest(*_lagrangian(p, c, avail, lam))  # [B]
        p_b = jnp.take_along_axis(p, choice[:, None], -1)[:, 0]  # [B]
        c_b = jnp.take_along_axis(c, choice[:, None], -1)[:, 0]  # [B]
    none = ~avail.any(-1)  # [] or [B]: a row with no available expert gets -1
    return Selection(jnp.where(none, -1, choice), jnp.where(none, jnp.nan, p_b),
                     jnp.where(none, jnp.nan, c_b))
