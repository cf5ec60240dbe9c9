"""Probability calibration: per expert, a monotone map from the head's p to a calibrated p.

The deployed choice weighs p against cost (argmax p - lam * cost), so an expert whose p runs
high steals queries it then fails. Each expert gets its own map, fitted on the VAL questions it
was graded on (the budget calibration of calibrate.py fits on VAL too; neither sees TEST):

  platt     p' = sigmoid(a * logit(p) + b): two numbers, a Newton solve of the log loss
            (convex in (a, b)); temperature scaling with a bias. Robust on a few hundred
            outcomes, keeps the ranking within an expert (a > 0 is enforced).
  isotonic  the pool-adjacent-violators fit of outcome on p (the least-squares monotone
            step function), read between the block means by linear interpolation, so the
            map is continuous and non-decreasing. Needs more data than platt.
  none      the identity.

A map is arrays only (`Calibration.x`, `.y`: knots [E, K] for isotonic, `.a`, `.b` [E] for
platt), so it runs inside a jitted program (`apply`) as well as in NumPy, and is saved as JSON.
`ece` is the expected calibration error the report shows on TEST before and after.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from leeroo_jax.errors import ConfigError

KINDS = ("none", "platt", "isotonic")
_EPS = 1e-4  # calibrated p stays inside [eps, 1 - eps]: a certainty the data cannot show


def _logit(p):
    p = np.clip(np.asarray(p, np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def fit_platt(p: np.ndarray, y: np.ndarray, l2: float = 1e-3, iters: int = 50) -> tuple[float, float]:
    """(a, b) minimising the mean log loss of sigmoid(a * logit(p) + b) against y in [0, 1],
    plus l2/2 * (a - 1)^2 (a pull toward the identity for tiny samples). Newton's method."""
    z, y = _logit(p), np.asarray(y, np.float64)
    w = np.array([1.0, 0.0])
    for _ in range(iters):
        q = 0.5 * (1.0 + np.tanh(0.5 * (w[0] * z + w[1])))  # sigmoid, no overflow
        g = np.array([np.mean((q - y) * z) + l2 * (w[0] - 1.0), np.mean(q - y)])
        s = q * (1 - q)
        h = np.array([[np.mean(s * z * z) + l2, np.mean(s * z)], [np.mean(s * z), np.mean(s) + 1e-12]])
        step = np.linalg.solve(h, g)
        w = w - step
        if np.abs(step).max() < 1e-10:
            break
    return float(max(w[0], 1e-3)), float(w[1])


def fit_isotonic(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots (x [K], y [K]) of the pool-adjacent-violators fit of y on p: x the mean p of each
    block, y its mean outcome (non-decreasing)."""
    # Equal p values are one point (their outcomes averaged, weighted by their count), so the
    # knots' x are strictly increasing and the map is a function of p.
    xs, inv, cnt = np.unique(np.asarray(p, np.float64), return_inverse=True, return_counts=True)
    ysum = np.bincount(inv.ravel(), weights=np.asarray(y, np.float64).ravel(), minlength=len(xs))
    # Blocks as a stack of (sum_y, sum_x, count); merge while the last two violate the order.
    sy, sx, n = [], [], []
    for xi, yi, ci in zip(xs * cnt, ysum, cnt):
        sy.append(yi), sx.append(xi), n.append(float(ci))
        while len(sy) > 1 and sy[-2] / n[-2] >= sy[-1] / n[-1]:
            b_y, b_x, b_n = sy.pop(), sx.pop(), n.pop()
            sy[-1] += b_y
            sx[-1] += b_x
            n[-1] += b_n
    n = np.asarray(n)
    return np.asarray(sx) / n, np.asarray(sy) / n


@functools.partial(jax.tree_util.register_dataclass, data_fields=["a", "b", "x", "y"], meta_fields=["kind"])
@dataclasses.dataclass
class Calibration:
    """A pytree (kind static, arrays as leaves): pass it to a jitted program as an argument."""

    kind: str
    a: np.ndarray | None = None  # [E] platt slope
    b: np.ndarray | None = None  # [E] platt bias
    x: np.ndarray | None = None  # [E, K] isotonic knots (p), padded by repeating the last
    y: np.ndarray | None = None  # [E, K] isotonic knots (calibrated p)

    def apply(self, p):
        """p [..., E] -> calibrated p, NumPy in and out, or jax in and out (inside jit)."""
        xp = np if isinstance(p, np.ndarray) else jnp
        if self.kind == "none":
            return p
        if self.kind == "platt":
            q = xp.clip(p, _EPS, 1 - _EPS)
            z = xp.log(q) - xp.log1p(-q)
            return xp.clip(0.5 * (1.0 + xp.tanh(0.5 * (z * self.a + self.b))), _EPS, 1 - _EPS)  # sigmoid
        cols = [xp.interp(p[..., e], self.x[e], self.y[e]) for e in range(self.x.shape[0])]  # E is small
        return xp.clip(xp.stack(cols, axis=-1), _EPS, 1 - _EPS)

    @property
    def num_experts(self) -> int | None:
        v = self.a if self.kind == "platt" else self.x
        return None if v is None else int(np.shape(v)[0])

    def to_json(self) -> dict:
        out = {"kind": self.kind}
        for k in ("a", "b", "x", "y"):
            v = getattr(self, k)
            if v is not None:
                out[k] = np.asarray(v).tolist()
        return out

    @classmethod
    def from_json(cls, d: dict) -> "Calibration":
        if d.get("kind") not in KINDS:
            raise ConfigError(f"calibration kind {d.get('kind')!r} is not one of {', '.join(KINDS)}; "
                              "the run's calibration.json is damaged: retrain or delete it")
        return cls(d["kind"], **{k: np.asarray(d[k], np.float64) for k in ("a", "b", "x", "y") if k in d})


def fit(kind: str, p: np.ndarray, outcome: np.ndarray, observed: np.ndarray) -> Calibration:
    """Per-expert maps from p [N, E] and outcomes [N, E] on the pairs `observed` [N, E].
    An expert with fewer than 2 observed outcomes, or all equal, keeps the identity."""
    if kind not in KINDS:
        raise ConfigError(f"config.train.calibration={kind!r} is not one of {', '.join(KINDS)}")
    n_exp = p.shape[1]
    if kind == "none":
        return Calibration("none")
    usable = [observed[:, e].sum() >= 2 and np.ptp(outcome[observed[:, e], e]) > 0 for e in range(n_exp)]
    if kind == "platt":
        ab = [fit_platt(p[observed[:, e], e], outcome[observed[:, e], e]) if usable[e] else (1.0, 0.0)
              for e in range(n_exp)]
        return Calibration("platt", a=np.array([v[0] for v in ab]), b=np.array([v[1] for v in ab]))
    knots = [fit_isotonic(p[observed[:, e], e], outcome[observed[:, e], e]) if usable[e]
             else (np.array([0.0, 1.0]), np.array([0.0, 1.0])) for e in range(n_exp)]
    k = max(len(x) for x, _ in knots)
    pad = lambda v: np.concatenate([v, np.full(k - len(v), v[-1])])  # noqa: E731  a flat tail: same interp
    return Calibration("isotonic", x=np.stack([pad(x) for x, _ in knots]), y=np.stack([pad(y) for _, y in knots]))


def ece(p: np.ndarray, outcome: np.ndarray, observed: np.ndarray | None = None, bins: int = 15) -> float:
    """Expected calibration error over the observed pairs: sum over equal-width bins of
    (share of pairs) * |mean outcome - mean p|."""
    p, outcome = np.asarray(p, np.float64), np.asarray(outcome, np.float64)
    if observed is not None:
        p, outcome = p[observed], outcome[observed]
    p, outcome = p.ravel(), outcome.ravel()
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += m.mean() * abs(outcome[m].mean() - p[m].mean())
    return float(total)


def cross_fitted(kind: str, p: np.ndarray, outcome: np.ndarray, observed: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """p [N, E] with each fold's rows calibrated by maps fitted on the other folds (fold [N]):
    held-out evidence, on the questions the maps are fitted on, for choosing `kind`."""
    out = np.empty_like(p, dtype=np.float64)
    for f in np.unique(fold):
        own = fold == f
        out[own] = fit(kind, p[~own], outcome[~own], observed[~own]).apply(p[own].astype(np.float64))
    return out
