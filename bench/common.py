"""Shared helpers for the benchmarks in bench/: threads, timing, context lines, RESULT line.

Every benchmark measures ours (JAX/Flax) and its PyTorch baseline in the same process on the
same inputs, prints context lines (machine throughput, threads, compile time, parity), and
ends with exactly one line

    RESULT name=<name> ours=<value> baseline=<value> unit=<unit> ratio=<ours/baseline>

(higher is better), which is what CI and humans grep for.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np

from leeroo_jax.data.buckets import plan_batches

length_buckets = plan_batches  # the product's batching rule (data/buckets.py), used by the benches

# The baseline runs torch on this many threads (the machine's cores unless overridden).
THREADS = int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))


def setup_torch():
    """Import torch pinned to THREADS intra-op threads (and 1 inter-op), grad off."""
    import torch

    torch.set_num_threads(THREADS)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set by an earlier call in this process
        pass
    torch.set_grad_enabled(False)
    return torch


def best_of(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Run fn `repeats` times; return the fastest wall time (s) and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def warm_up(calls: list[Callable[[], object]], shapes: list) -> dict[int, float]:
    """Call the first batch of each distinct shape once (compiling it, or loading it from the
    persistent cache); returns {batch index: seconds}, for `compile_seconds`."""
    first = {}
    for i, shape in enumerate(shapes):
        first.setdefault(shape, i)
    times = {}
    for i in first.values():
        t0 = time.perf_counter()
        calls[i]()
        times[i] = time.perf_counter() - t0
    return times


def compile_seconds(warm: dict[int, float], best: list[float]) -> float:
    """Compile (or cache-load) time: each warm-up call minus that batch's best timed call."""
    return sum(max(0.0, t - best[i]) for i, t in warm.items())


def time_batches(sides: dict[str, list[Callable[[], object]]], repeats: int) -> dict[str, tuple[float, list, list, list]]:
    """Time each side's per-batch calls, the sides interleaved call by call.

    Returns {side: (seconds, outputs, per-batch best seconds, per-pass seconds)}, where seconds
    is the sum over batches of each batch's fastest call across `repeats` passes, and per-pass
    seconds the sum of each pass's calls (for the spread of per-pass ratios). On a shared
    2-core machine noise only ever adds time and comes in bursts (someone's test run, a
    compile), so each pass merges the sides' calls in proportion (torch batch i sits among the
    ours batches covering the same fraction of the work list) and a burst hits both sides
    alike; the per-batch minimum then discards what a burst added. Each call must block until
    done.
    """
    schedule = sorted((i / len(calls), k, i) for k, calls in sides.items() for i in range(len(calls)))
    best = {k: [float("inf")] * len(calls) for k, calls in sides.items()}
    passes: dict[str, list[float]] = {k: [] for k in sides}
    outs: dict[str, list] = {k: [None] * len(calls) for k, calls in sides.items()}
    for _ in range(repeats):
        total = dict.fromkeys(sides, 0.0)
        for _, k, i in schedule:
            t0 = time.perf_counter()
            outs[k][i] = sides[k][i]()
            dt = time.perf_counter() - t0
            best[k][i] = min(best[k][i], dt)
            total[k] += dt
        for k in sides:
            passes[k].append(total[k])
    return {k: (sum(best[k]), outs[k], best[k], passes[k]) for k in sides}


def jax_matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """f32 n x n matmul throughput of XLA's CPU backend, GFLOP/s (2 n^3 flops a product)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()  # compile
    t, _ = best_of(lambda: f(a).block_until_ready(), repeats)
    return 2 * n**3 / t / 1e9


def torch_matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    torch = setup_torch()
    a = torch.randn(n, n)
    a @ a  # warm the thread pool
    t, _ = best_of(lambda: a @ a, repeats)
    return 2 * n**3 / t / 1e9


class Ceiling:
    """The f32 matmul ceiling of each side, measured in this run: the best GFLOP/s of a 2048^2
    matmul, XLA for ours and torch for the baseline. `measure` adds rounds (call it again at
    the end of a run: on a shared machine the best round is the closest to the hardware's)."""

    def __init__(self):
        self.jax = self.torch = 0.0

    def measure(self, rounds: int = 3) -> "Ceiling":
        for _ in range(rounds):  # interleaved, so a burst of other work hits both alike
            self.jax = max(self.jax, jax_matmul_gflops(repeats=3))
            self.torch = max(self.torch, torch_matmul_gflops(repeats=3))
        return self

    def share(self, side: str, flops: float, seconds: float) -> str:
        """'<GFLOP/s> GFLOP/s = <x>% of the <side> matmul ceiling' for `flops` done in `seconds`."""
        gf = flops / seconds / 1e9
        top = self.jax if side == "jax" else self.torch
        return f"{gf:.0f} GFLOP/s = {100 * gf / top:.0f}% of the {side} f32 matmul ceiling ({top:.0f} GFLOP/s)"


def transformer_flops(rows: int, length: int, *, layers: int, layer_params: int, attn_width: int,
                      head_params: int = 0, head_rows: int | None = None) -> float:
    """Matmul FLOPs of one forward pass of a [rows, length] batch, padding included (the work
    done): 2 x the layers' weight-matrix parameters per token, plus attention's two [T, T]
    products (QK^T and PV: 4 x T^2 x attn_width per row and layer, full square, as both sides
    compute it), plus 2 x head_params per row of the output head (head_rows rows; default all
    tokens). Norms, softmax and embeddings lookups are not counted."""
    tokens = rows * length
    f = 2 * layer_params * layers * tokens + 4 * rows * length * length * attn_width * layers
    return f + 2 * head_params * (tokens if head_rows is None else head_rows)


def print_machine_context() -> Ceiling:
    """Context lines every benchmark prints: matmul GFLOP/s on both sides, thread counts.
    Returns the measured matmul ceiling (Ceiling)."""
    import jax

    torch = setup_torch()
    print(f"context: cpus={os.cpu_count()} jax={jax.__version__} devices={jax.devices()} "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(f"context: torch={torch.__version__} threads={torch.get_num_threads()} "
          f"interop={torch.get_num_interop_threads()}")
    ceiling = Ceiling().measure()
    print(f"context: f32 matmul 2048^2 (best of 3 rounds x 3): jax {ceiling.jax:.0f} GFLOP/s, "
          f"torch {ceiling.torch:.0f} GFLOP/s", flush=True)
    return ceiling


def spread(ratios) -> str:
    """'min a median b max c over n rounds' of per-round ratios."""
    import statistics

    r = sorted(ratios)
    return f"min {r[0]:.2f} median {statistics.median(r):.2f} max {r[-1]:.2f} over {len(r)} rounds"


def result(name: str, ours: float, baseline: float, unit: str) -> str:
    """Print the load average (other work on the machine skews timings), then the RESULT line."""
    load = os.getloadavg()
    print("context: load average (1, 5, 15 min) %.2f %.2f %.2f (this run alone adds ~%d)" % (*load, THREADS))
    if load[1] > THREADS + 1:
        # Other work was running: torch's OpenMP team stalls on a descheduled thread far more
        # than XLA's work-stealing pool, so the ratio comes out too high. Rerun when idle.
        print("WARNING: machine busy during the run; the ratio is unreliable (inflated)")
    line = f"RESULT name={name} ours={ours:.1f} baseline={baseline:.1f} unit={unit} ratio={ours / baseline:.2f}"
    print(line, flush=True)
    return line


def scatter_rows(n: int, width: int, batches_rows, outs) -> np.ndarray:
    """[n, width] f32 from per-batch outputs: batch i's first len(rows_i) rows go to rows_i
    (the rest of a batch is padding)."""
    out = np.empty((n, width), np.float32)
    for rows, o in zip(batches_rows, outs):
        out[rows] = np.asarray(o)[:len(rows)]
    return out
