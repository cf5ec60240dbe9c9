"""Routing throughput of the server under load: dynamic batching against one request a batch.

Workload: the server on loopback routing the default run (checkpoints/mmlu, `make run`);
64 concurrent clients (one asyncio process, httpx2) post real MMLU TEST questions as free
text (no subject: each is embedded, its subject voted by its TRAIN neighbours) to /v1/route
(routing only, no expert is called) with model leeroo-cost1k-1.0, for 30 s each side.
Ours: `--max-batch=64 --max-wait-ms=5`; baseline: the same server with `--max-batch=1`
(each request scored alone, as a server without dynamic batching does). Both compile every
shape at start-up (not timed) and run on the same machine as the clients.
Printed: requests/s, p50/p99 latency, the mean scoring batch and the scoring worker's time
per query and share of the wall (from /metrics), and the backbone's matmul FLOP/s as a share
of this CPU's f32 matmul ceiling measured in the run (useful FLOPs: each query's own tokens,
not the padding). The worker's time per query, batch 1 against batched, is what batching can
save on the device; the rest of the gain is the per-request work it shares. RESULT: the
requests/s ratio (target >= 3). About 2.5 minutes; it stops by itself.

    .venv/bin/python bench/serve_load.py [--checkpoint checkpoints/mmlu] [--seconds 30] [--clients 64]
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import httpx2 as httpx  # noqa: E402
import numpy as np  # noqa: E402

from bench import common  # noqa: E402

ROOT = os.path.dirname(_HERE)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(checkpoint: str, max_batch: int, log: str, max_wait_ms: float = 5.0) -> tuple[subprocess.Popen, str]:
    port = _port()
    proc = subprocess.Popen([sys.executable, "-m", "leeroo_jax.serve", f"--checkpoint={checkpoint}", f"--port={port}",
                             f"--max-batch={max_batch}", f"--max-wait-ms={max_wait_ms}", "--route-only"],
                            cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    end = time.time() + 600
    while time.time() < end:
        if proc.poll() is not None:
            sys.exit(f"server exited {proc.returncode}: see {log}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    sys.exit(f"server not ready in 600 s: see {log}")


async def load(url: str, texts: list[str], clients: int, seconds: float) -> tuple[list[float], int, list[int]]:
    """(latencies of the successful requests, failures, indices of the texts routed)."""
    lat, failed, done = [], 0, []
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def one(c: int):
            nonlocal failed
            i = c
            while time.perf_counter() < deadline:
                body = {"model": "leeroo-cost1k-1.0", "messages": [{"role": "user", "content": texts[i % len(texts)]}]}
                t0 = time.perf_counter()
                try:
                    r = await client.post(url + "/v1/route", content=json.dumps(body),
                                          headers={"content-type": "application/json"})
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    lat.append(time.perf_counter() - t0)
                    done.append(i % len(texts))
                else:
                    failed += 1
                i += clients
        await asyncio.gather(*(one(c) for c in range(clients)))
    return lat, failed, done


def side(name: str, checkpoint: str, max_batch: int, texts, tokens, args, ceiling) -> float:
    proc, url = start(checkpoint, max_batch, f"/tmp/serve_load_{max_batch}.log", args.max_wait_ms)
    try:
        asyncio.run(load(url, texts, args.clients, 2.0))  # a short warm-up load (not counted)
        before = _batches(url)
        t0 = time.perf_counter()
        lat, failed, done = asyncio.run(load(url, texts, args.clients, args.seconds))
        wall = time.perf_counter() - t0
        count, total, busy = (a - b for a, b in zip(_batches(url), before))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    rps, worker_ms = len(lat) / wall, 1e3 * busy / max(total, 1)
    flops = sum(2 * args.layer_params * tokens[i] for i in done)  # useful matmul FLOPs, no padding
    print(f"{name}: {rps:.1f} requests/s ({len(lat)} in {wall:.1f} s, {failed} failed), latency p50 "
          f"{1e3 * np.percentile(lat, 50):.1f} ms p99 {1e3 * np.percentile(lat, 99):.1f} ms, mean scoring batch "
          f"{total / max(count, 1):.1f}, scoring {worker_ms:.1f} ms a query (worker busy {busy / wall:.0%} of the "
          f"wall); backbone {ceiling.share('jax', flops, wall)}", flush=True)
    return rps, worker_ms


def _batches(url: str) -> tuple[float, float, float]:
    """(scoring batches, queries in them, the worker's seconds on them) so far."""
    text = httpx.get(url + "/metrics").text
    return tuple(float(re.search(rf"leeroo_route_batch_{m} (\S+)", text).group(1))
                 for m in ("size_count", "size_sum", "seconds_sum"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default="checkpoints/mmlu")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--n", type=int, default=2000, help="distinct TEST questions cycled through")
    ap.add_argument("--max-wait-ms", type=float, default=5.0, help="the batching window (both sides)")
    args = ap.parse_args()
    if not os.path.isdir(os.path.join(args.checkpoint, "ckpt")):
        sys.exit(f"{args.checkpoint} is not a trained run: run `make run` first")
    from leeroo_jax.data import mmlu, splits
    from leeroo_jax.data.pool import query_text
    from leeroo_jax.weights import assets
    from leeroo_jax.weights.loader import load as load_weights

    questions = [q for q in mmlu.load_questions(mmlu.DEFAULT_PATH) if splits.split_of(q.id) is splits.Split.TEST]
    texts = [query_text(q) for q in questions[: args.n]]
    minilm = load_weights(assets.minilm_dir())
    cfg = json.load(open(os.path.join(args.checkpoint, "config.json")))
    max_len = int(cfg["backbone"]["max_length"])
    tokens = [min(len(t), max_len) for t in minilm.tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]]
    hidden, inter = minilm.config.hidden_size, minilm.config.intermediate_size
    args.layer_params = minilm.config.num_layers * (4 * hidden * hidden + 2 * hidden * inter)
    print(f"context: cpus={os.cpu_count()}; {len(texts)} TEST questions, mean {np.mean(tokens):.0f} tokens "
          f"(max {max_len}); {args.clients} clients x {args.seconds:.0f} s per side", flush=True)
    ceiling = common.Ceiling()
    ceiling.jax = common.jax_matmul_gflops(repeats=5)
    print(f"context: f32 matmul 2048^2: jax {ceiling.jax:.0f} GFLOP/s", flush=True)
    ours, ours_ms = side(f"dynamic batching (max 64, {args.max_wait_ms:g} ms)", args.checkpoint, 64, texts, tokens,
                         args, ceiling)
    base, base_ms = side("batch size 1", args.checkpoint, 1, texts, tokens, args, ceiling)
    print(f"context: scoring a query costs the worker {base_ms:.1f} ms alone and {ours_ms:.1f} ms in a batch "
          f"({base_ms / ours_ms:.2f}x): batching saves that much device time; the rest is per-request work shared",
          flush=True)
    print(f"RESULT name=serve_route_rps ours={ours:.1f} baseline={base:.1f} unit=requests/s ratio={ours / base:.2f}",
          flush=True)


if __name__ == "__main__":
    main()
