"""The selection kernel: ours (jitted JAX) vs a clean vectorized NumPy version, ms per batch.

Workload: B = 1,000,000 queries x E = 16 experts, fixed seed. Costs are a per-expert price
(log-uniform 1e-6..1e-2 USD) times a per-query length factor; p rises with price on
average, so the budget modes have real trade-offs. Every mode runs on both sides with the
same semantics (the same tie-breaking; batch_budget bisects the same float32 bit patterns
for the same 31 steps); choices are compared and the agreement printed.

Ours: `leeroo_jax.orchestrator.select.select`, compiled and warm, inputs already on device,
`block_until_ready`, best of --repeats. NumPy: float32, best of --np-repeats. The last line is

    RESULT name=select_batch_budget ours=<ms> baseline=<ms> unit=ms ratio=<baseline/ours>

    python bench/select_kernel.py [--b 1000000] [--e 16] [--repeats 5] [--np-repeats 3]
"""

from __future__ import annotations

import os
import sys

# Run with the repository root on the path instead of bench/ (a bench/ file named like a
# stdlib module would shadow it), so `bench.common` imports as a package module.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [x for x in sys.path if os.path.abspath(x or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from bench.common import best_of  # noqa: E402

LO_BITS, HI_BITS, STEPS = -1, 0x7F7FFFFF, 31  # the kernel's bisection bracket (see select.py)
FLT_MAX = np.finfo(np.float32).max


# ---- NumPy reference: what a careful NumPy user writes, same semantics as the kernel ----

def np_lexbest(k1, k2):
    """Row-wise best of [B, E] keys: k1 largest, then k2 smallest, then the lowest index."""
    top = k1 == k1.max(1, keepdims=True)
    k2 = np.where(top, k2, np.inf)
    return (top & (k2 == k2.min(1, keepdims=True))).argmax(1)


def np_lagrangian(p, c, avail, lam):
    """The kernel's keys for argmax p - lam*cost: lam*cost saturates at FLT_MAX."""
    with np.errstate(over="ignore"):
        return np.where(avail, p - np.minimum(np.float32(lam) * c, FLT_MAX), -np.inf), c


def np_batch_lambda(p, c, avail, budget):
    """The kernel's bisection over float32 bit patterns: the smallest lam whose greedy choice
    has mean cost <= budget."""
    lo, hi = LO_BITS, HI_BITS
    for _ in range(STEPS):
        mid = lo + (hi - lo + 1) // 2
        s, _ = np_lagrangian(p, c, avail, np.array(mid, np.int32).view(np.float32))
        cost_b = np.where(s == s.max(1, keepdims=True), c, np.inf).min(1)  # ties -> the cheaper
        if cost_b.mean() <= budget:
            hi = mid
        else:
            lo = mid
    return np.array(hi, np.int32).view(np.float32)


def np_select(p, c, avail, mode, v):
    v = np.float32(v)
    avail = np.broadcast_to(avail, p.shape)
    if mode == "cap":  # best p among cost <= cap (then cheaper), else cheapest (then best p)
        fits = avail & (c <= v)
        return np.where(fits.any(1), np_lexbest(np.where(fits, p, -np.inf), c),
                        np_lexbest(np.where(avail, -c, -np.inf), -p))
    if mode == "quality":  # cheapest with p >= tau (then best p), else best p (then cheaper)
        meets = avail & (p >= v)
        return np.where(meets.any(1), np_lexbest(np.where(meets, -c, -np.inf), -p),
                        np_lexbest(np.where(avail, p, -np.inf), c))
    lam = min(v, FLT_MAX) if mode == "tradeoff" else np_batch_lambda(p, c, avail, v)
    return np_lexbest(*np_lagrangian(p, c, avail, lam))


def workload(b, e, seed=0):
    rng = np.random.default_rng(seed)
    price = np.sort(10.0 ** rng.uniform(-6, -2, e))  # USD per query of mean length
    length = rng.lognormal(0.0, 0.5, b)
    cost = (length[:, None] * price[None]).astype(np.float32)  # [B, E]
    skill = np.linspace(-1.0, 2.0, e) + rng.normal(0, 0.3, e)  # pricier experts: better on average
    logit = skill[None] - rng.normal(0, 1.0, (b, 1)) + rng.normal(0, 1.0, (b, e))
    p = (1 / (1 + np.exp(-logit))).astype(np.float32)  # [B, E]
    return p, cost, np.ones(e, bool)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--b", type=int, default=1_000_000)
    ap.add_argument("--e", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--np-repeats", type=int, default=3)
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp

    from leeroo_jax.orchestrator.select import Budget, select

    p, cost, avail = workload(args.b, args.e)
    rows = np.arange(args.b)
    c_cheap = cost.min(1).mean()
    c_best = cost[rows, p.argmax(1)].mean()
    budgets = {
        "cap": float(np.median(cost)),
        "tradeoff": float(1.0 / np.median(cost) / 10),  # 0.1 accuracy points per median cost
        "quality": 0.8,
        "batch_budget": float(c_cheap + 0.2 * (c_best - c_cheap)),
    }
    print(f"context: B={args.b} E={args.e} cpus={os.cpu_count()} jax={jax.__version__} "
          f"devices={jax.devices()} numpy={np.__version__}")
    print(f"context: mean cost cheapest-everywhere={c_cheap:.3e} "
          f"best-p-everywhere={c_best:.3e} USD")
    pd, cd, ad = jnp.asarray(p), jnp.asarray(cost), jnp.asarray(avail)  # on device, untimed
    res = {}
    for mode, v in budgets.items():
        bud = Budget(mode, v)
        run = lambda: jax.block_until_ready(select(pd, cd, ad, bud))  # noqa: E731
        t0 = time.perf_counter()
        run()
        compile_s = time.perf_counter() - t0
        t_ours, sel = best_of(run, args.repeats)
        t_np, ch_np = best_of(lambda: np_select(p, cost, avail, mode, v), args.np_repeats)
        ch = np.asarray(sel.choice)
        agree = (ch == ch_np).mean()
        extra = ""
        if mode == "batch_budget":
            ours_cost = np.asarray(sel.cost).astype(np.float64).mean()
            np_cost = cost[rows, ch_np].astype(np.float64).mean()
            extra = (f" budget={v:.4e} mean_cost={ours_cost:.4e} numpy_mean_cost={np_cost:.4e}"
                     f" acc={float(np.asarray(sel.p).mean()):.4f}")
        print(f"select mode={mode} ours={t_ours * 1e3:.1f}ms numpy={t_np * 1e3:.1f}ms "
              f"ratio={t_np / t_ours:.2f} agree={agree:.6f} first_call={compile_s:.2f}s{extra}",
              flush=True)
        res[mode] = (t_ours * 1e3, t_np * 1e3)
    ours, base = res["batch_budget"]
    print(f"RESULT name=select_batch_budget ours={ours:.1f} baseline={base:.1f} unit=ms "
          f"ratio={base / ours:.2f}", flush=True)


if __name__ == "__main__":
    main()
