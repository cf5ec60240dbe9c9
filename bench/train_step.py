"""One orchestrator train step (frozen backbone, the default config): ours (JAX) vs torch, steps/s.

Workload: the default config (configs/mmlu.py): batch 256, head hidden 64, dropout 0.3,
AdamW (lr 1e-3, weight decay 0.1) on linear warmup (20 steps) + cosine (to 300), global-norm
clip 1.0, masked BCE. A batch is q [256, 384] (MiniLM pooled embeddings), side [256, 9, 3]
(neighbour outcomes at k=20/100 and the subject prior), target [256, 9] in {0, 1} and mask
[256, 9] (the observed pairs). By default the data are real: TRAIN rows of MMLU, the cached
MiniLM embeddings (jobs.common.load_dataset, a few seconds with a warm .cache/embeddings) and
`trainer.side_features`, as the training job builds them. `--synthetic`: random data of the same
shapes and observed fraction (no cache needed). Step s's rows are drawn as Trainer.batch
draws them (`default_rng([seed, s])`), the same rows on both sides.

Ours: `leeroo_jax.training.step.train_step` on the model and `nnx.Optimizer(optim.make(..))`
that `trainer.Trainer` builds (its code, not a copy), state donated, fed exactly as loop.fit
feeds it: trainer.batch(s) and the jitted step.step_key(key, s) (see feed; an earlier
per-array device_put and an eager fold_in cost 0.7 ms a step of host work, which on 2 cores
competes with the ~0.8 ms step itself). Steps are dispatched asynchronously; a timed call of --steps-per-call
steps ends by blocking on the state (a loop that reads its loss every few steps).
Baseline: `TorchHead` below, Head.__call__'s math in a torch `nn.Module`, f32 on CPU with
2 threads (BENCH_THREADS), `torch.optim.AdamW(fused=True)` (the same betas, eps, decoupled
weight decay on every parameter) with the same schedule via `LambdaLR`, `clip_grad_norm_`,
masked `binary_cross_entropy_with_logits`; its batch is the same NumPy gather, as tensors
by `torch.from_numpy` (zero-copy).
Timing: after a warm-up (compile, thread pools), --rounds rounds of one call a side back to
back, the order alternating each round; RESULT: each side's fastest call; also printed: the
spread (min / quartiles / median / max) of the per-round ratios. Parity, first: from our
initial weights copied into torch, dropout off, --parity-steps steps on the same batches:
each step's loss, the parameter updates and the parameters, ours vs torch (the test
tests/training/test_torch_parity_step.py runs the same check). About 30 s.

    .venv/bin/python bench/train_step.py [--synthetic] [--rounds 60] [--steps-per-call 25]
"""

from __future__ import annotations

import os
import sys

# Run with the repository root on the path instead of bench/ (a bench/ file named like a
# stdlib module would shadow it), so `bench.common` imports as a package module.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))
os.environ.setdefault("BENCH_THREADS", "2")  # the baseline's torch threads (before bench.common reads it)

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench import common  # noqa: E402

PARAMS = ("w1", "b1", "w2", "b2", "experts", "bias", "side_w")  # Head's parameters, same names and layouts


# ---- the baseline: the same head, loss and optimizer in torch ------------------------------

class TorchHead(torch.nn.Module):
    """Head.__call__ in torch: logits[b, e] = <h_b, u_e> + bias_e + <w, logit(f[b, e, :])>."""

    def __init__(self, params: dict[str, np.ndarray], dropout: float, eps: float = 0.02):
        super().__init__()
        for k in PARAMS:
            setattr(self, k, torch.nn.Parameter(torch.tensor(np.array(params[k], np.float32))))
        self.dropout, self.eps = dropout, eps

    def forward(self, q, side):
        p = side.clamp(self.eps, 1 - self.eps)
        side_logit = torch.log(p) - torch.log1p(-p)  # [B, E, P]
        x = torch.cat([q, side_logit.reshape(q.shape[0], -1)], dim=-1)
        h = F.gelu(x @ self.w1 + self.b1, approximate="tanh")  # jax.nn.gelu's default
        h = F.dropout(h, self.dropout, self.training)
        h = F.gelu(h @ self.w2 + self.b2, approximate="tanh")
        return h @ self.experts.T + self.bias + side_logit @ self.side_w


def torch_masked_bce(logits, target, mask):
    per = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (per * mask).sum() / mask.sum().clamp(min=1.0)


def lr_factor(s: int, warmup: int, total: int, end_frac: float = 0.01) -> float:
    """optim.schedule(cfg)(s) / lr, written out: linear 0 -> 1 over `warmup` steps, then cosine
    down to end_frac over the remaining total - warmup steps, flat after."""
    warmup = max(warmup, 1)
    if s < warmup:
        return s / warmup
    decay = max(total, warmup + 1) - warmup
    return end_frac + (1 - end_frac) * 0.5 * (1 + math.cos(math.pi * min(s - warmup, decay) / decay))


class TorchTrainer:
    """The baseline's training step: AdamW + LambdaLR (warmup + cosine) + clip_grad_norm_."""

    def __init__(self, params: dict[str, np.ndarray], dropout: float, opt_cfg):
        self.head = TorchHead(params, dropout).train()
        self.clip = opt_cfg.clip_norm
        # optax.adamw's defaults (b1 .9, b2 .999, eps 1e-8); decay applied to every parameter.
        # fused: torch's fastest AdamW on CPU (the default for-loop version is ~15% slower a step here)
        self.opt = torch.optim.AdamW(self.head.parameters(), lr=opt_cfg.lr, betas=(0.9, 0.999), eps=1e-8,
                                     weight_decay=opt_cfg.weight_decay, fused=True)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(s, opt_cfg.warmup_steps, opt_cfg.total_steps))

    def step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.enable_grad():
            self.opt.zero_grad(set_to_none=True)
            loss = torch_masked_bce(self.head(batch["q"], batch["side"]), batch["target"], batch["mask"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.head.parameters(), self.clip)
            self.opt.step()
            self.sched.step()
        return loss.detach()

    def params(self) -> dict[str, np.ndarray]:
        return {k: getattr(self.head, k).detach().numpy().copy() for k in PARAMS}


def to_torch(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in batch.items()}  # zero-copy views of the host batch


# ---- ours: the Trainer's model and optimizer, step.train_step -------------------------------

def head_params(trainer) -> dict[str, np.ndarray]:
    from flax import nnx

    model, _ = nnx.merge(trainer.graphdef, trainer.state)
    return {k: np.asarray(getattr(model.head, k)[...]) for k in PARAMS}


def real_data(cfg):
    """(Dataset, vecs [Q, 384], side [Q, 9, 3]) exactly as the training job builds them."""
    from leeroo_jax.jobs import common
    from leeroo_jax.training import trainer

    data = common.load_dataset(cfg)
    return data, data.vecs, trainer.side_features(cfg, data)


def synthetic_data(cfg, n: int = 4096, dim: int = 384, seed: int = 0):
    """Random data of the real shapes: unit-norm q, side in [0, 1], outcomes {0, 1}, ~47% observed."""
    from leeroo_jax.data.dataset import Dataset
    from leeroo_jax.data.pool import Pool

    rng = np.random.default_rng(seed)
    pool = Pool.from_config(cfg.pool)
    e, p = len(pool), len(cfg.train.side_knn) + int(cfg.train.side_prior)
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    observed = rng.uniform(size=(n, e)) < 0.47
    outcome = ((rng.uniform(size=(n, e)) < 0.7) & observed).astype(np.float32)
    data = Dataset(questions=[], pool=pool, cost=np.ones((n, e), np.float32), outcome=outcome,
                   soft=np.full((n, e), np.nan, np.float32), observed=observed,
                   split=np.full(n, "train"), subjects=np.full(n, "x"), vecs=vecs)
    return data, vecs, rng.uniform(size=(n, e, p)).astype(np.float32)


def make_trainer(cfg, data, vecs, side):
    """trainer.Trainer: the training job's own model, nnx.Optimizer(optim.make(...)) and batches."""
    import dataclasses

    from leeroo_jax.training import trainer

    return trainer.Trainer(cfg, dataclasses.replace(data, vecs=vecs), side)


def mesh_of(trainer):
    """The context the training loop runs its steps in: the Trainer's mesh."""
    import jax

    return jax.set_mesh(trainer.mesh)


def host_batch(trainer, s: int) -> dict[str, np.ndarray]:
    """The rows of step s as NumPy, drawn as Trainer.batch draws them (default_rng([seed, s])),
    for torch: the baseline's data pipeline, a gather from the same host arrays."""
    from leeroo_jax.training import batches

    t = trainer.cfg.train
    idx = batches.uniform_rows(trainer.train_rows, t.batch_size, t.seed, s)
    return {"q": trainer.vecs[idx], "side": trainer.side[idx], "target": trainer.target[idx],
            "mask": trainer.data.observed[idx].astype(np.float32)}


def ours_steps(trainer, first_step: int, n: int):
    """Steps first_step .. first_step + n - 1 of train_step, each fed by feed() as loop.fit
    feeds it. Returns the last metrics, not blocked on."""
    from leeroo_jax.training import step

    metrics = None
    for s in range(first_step, first_step + n):
        batch, key = feed(trainer, s)
        trainer.state, metrics = step.train_step(trainer.graphdef, trainer.state, batch, key)
    return metrics


def feed(trainer, s: int):
    """The inputs of step s exactly as loop.fit makes them: trainer.batch(s) (the host gather,
    then sharding.shard_batch: the NumPy tree as is on one device, one device_put on a mesh)
    and the jitted step.step_key(key, s)."""
    from leeroo_jax.training import step

    return trainer.batch(s), step.step_key(trainer.key, s)


def torch_steps(ref: TorchTrainer, trainer, first_step: int, n: int):
    loss = None
    for s in range(first_step, first_step + n):
        loss = ref.step(to_torch(host_batch(trainer, s)))
    return loss


# ---- parity ---------------------------------------------------------------------------------

def parity(cfg, data, vecs, side, steps: int = 3) -> dict:
    """Dropout off; our initial weights in torch; `steps` steps of both on the same batches.

    Returns the worst relative loss difference over the steps; the worst relative difference
    of the parameter updates (param_after - param_init: max-abs over a tensor, relative to
    that tensor's largest torch update) and of the parameters themselves; the largest torch
    update (the schedule's lr is 0 at step 0: one step alone moves nothing); both sides' losses;
    and whether torch's batches, and feed()'s batches and keys, equal loop.fit's."""
    import jax

    from leeroo_jax.training import step

    cfg = cfg.copy_and_resolve_references()
    cfg.train.dropout = 0.0
    trainer = make_trainer(cfg, data, vecs, side)
    init = head_params(trainer)
    ref = TorchTrainer(init, 0.0, trainer.opt_cfg)
    loss_rel, losses, same_batches = 0.0, [], True
    with mesh_of(trainer):
        for s in range(steps):
            b, hb = trainer.batch(s), host_batch(trainer, s)
            fb, fk = feed(trainer, s)  # the benchmark's feed: the same batch and key as loop.fit's
            key = jax.random.fold_in(trainer.key, s)
            same_batches &= all(np.array_equal(np.asarray(b[k]), hb[k]) and np.array_equal(np.asarray(fb[k]), hb[k])
                                for k in hb)
            same_batches &= bool(np.array_equal(jax.random.key_data(fk), jax.random.key_data(key)))
            trainer.state, m = step.train_step(trainer.graphdef, trainer.state, b, key)
            lo, lt = float(m["loss"]), float(ref.step(to_torch(hb)))
            losses.append((lo, lt))
            loss_rel = max(loss_rel, abs(lo - lt) / abs(lt))
    ours, theirs = head_params(trainer), ref.params()
    upd_rel = param_rel = moved = 0.0
    for k in PARAMS:
        d_o, d_t = ours[k] - init[k], theirs[k] - init[k]
        moved = max(moved, float(np.abs(d_t).max()))
        upd_rel = max(upd_rel, float(np.abs(d_o - d_t).max() / max(np.abs(d_t).max(), 1e-30)))
        param_rel = max(param_rel, float(np.abs(ours[k] - theirs[k]).max() / np.abs(theirs[k]).max()))
    return {"loss_rel": loss_rel, "update_rel": upd_rel, "param_rel": param_rel, "max_update": moved,
            "losses": losses, "same_batches": same_batches}


# ---- the benchmark --------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--synthetic", action="store_true", help="random data of the real shapes instead of MMLU")
    ap.add_argument("--rounds", type=int, default=60, help="timed rounds, each one call a side")
    ap.add_argument("--steps-per-call", type=int, default=25)
    ap.add_argument("--parity-steps", type=int, default=25)
    args = ap.parse_args()

    torch_ = common.setup_torch()
    import time

    import jax

    from configs import mmlu
    from leeroo_jax import compile_cache

    compile_cache.enable()
    common.print_machine_context()
    cfg = mmlu.get_config()
    t = cfg.train

    t0 = time.perf_counter()
    data, vecs, side = synthetic_data(cfg) if args.synthetic else real_data(cfg)
    print(f"context: data {'synthetic' if args.synthetic else 'real MMLU TRAIN rows'}: q {vecs.shape} side {side.shape} "
          f"({time.perf_counter() - t0:.1f} s to load); batch {t.batch_size}, hidden {t.hidden}, dropout {t.dropout}, "
          f"lr {t.lr}, warmup {t.warmup_steps}/{t.steps}, wd {t.weight_decay}, clip {t.clip_norm}")

    par = parity(cfg, data, vecs, side, args.parity_steps)
    (l1o, l1t), (lno, lnt) = par["losses"][0], par["losses"][-1]
    print(f"parity ({args.parity_steps} steps, dropout 0, same init, same batches: {par['same_batches']}): "
          f"loss step 1 ours {l1o:.7f} torch {l1t:.7f}; step {args.parity_steps} ours {lno:.7f} torch {lnt:.7f}")
    ok = par["same_batches"] and par["loss_rel"] < 1e-5 and par["update_rel"] < 1e-3
    print(f"parity: max rel loss diff {par['loss_rel']:.2e} (want < 1e-5); parameter updates max rel diff "
          f"{par['update_rel']:.2e} (want < 1e-3); parameters max rel diff {par['param_rel']:.2e} "
          f"({'OK' if ok else 'FAIL'})", flush=True)

    # ---- timing: each side from the default config's init, dropout 0.3, steps 0, 1, 2, ... ----
    # "ours": train_step fed as loop.fit feeds it (feed)
    trainer = make_trainer(cfg, data, vecs, side)
    torch_.manual_seed(t.seed)  # torch's dropout masks: reproducible from run to run, as ours are
    ref = TorchTrainer(head_params(trainer), t.dropout, trainer.opt_cfg)
    k = args.steps_per_call
    done = {"ours": 0, "torch": 0}

    def advance(name):
        s = done[name]
        done[name] += k
        return s

    def ours_call():
        with mesh_of(trainer):
            m = ours_steps(trainer, advance("ours"), k)
            jax.block_until_ready(trainer.state)  # the call ends when its last update is done
        return m

    calls = {"torch": lambda: torch_steps(ref, trainer, advance("torch"), k), "ours": ours_call}
    t0 = time.perf_counter()
    with mesh_of(trainer):
        jax.block_until_ready(ours_steps(trainer, 0, 1))  # compile (or load from the persistent cache)
    t_compile = time.perf_counter() - t0
    for _ in range(3):  # warm-up: the rest of the compiles, thread pools, allocators, caches
        for call in calls.values():
            call()

    # Rounds of one call a side, back to back, the order alternating from round to round (a
    # drift in load or clock then favours neither side). Each round gives one ratio; the
    # RESULT takes each side's fastest call (best of --rounds: what noise on a shared machine
    # only ever adds to is discarded), and the per-round ratios show how stable that is.
    secs = {name: [] for name in calls}
    last = {}
    for r in range(args.rounds):
        for name in (("torch", "ours") if r % 2 else ("ours", "torch")):
            t0 = time.perf_counter()
            last[name] = calls[name]()
            secs[name].append(time.perf_counter() - t0)
    t_torch, t_ours = min(secs["torch"]), min(secs["ours"])
    ratios = [a / b for a, b in zip(secs["torch"], secs["ours"])]
    print(f"ours: compile (or persistent-cache load) + first step {t_compile:.1f} s, excluded")
    print(f"baseline: torch f32 {torch_.get_num_threads()} threads, fused AdamW: best of {args.rounds} calls of {k} "
          f"steps {1e3 * t_torch / k:.3f} ms/step (median {1e3 * statistics.median(secs['torch']) / k:.3f}); "
          f"last loss {float(last['torch']):.4f}")
    print(f"ours: jax f32, fed as loop.fit feeds it: best of {args.rounds} calls of {k} steps "
          f"{1e3 * t_ours / k:.3f} ms/step (median {1e3 * statistics.median(secs['ours']) / k:.3f}); "
          f"last loss {float(last['ours']['loss']):.4f}")
    q1, q3 = np.percentile(ratios, [25, 75])
    print(f"spread of per-round ratios (torch time / ours time, {k} steps a side a round): {common.spread(ratios)}, "
          f"quartiles {q1:.2f}-{q3:.2f}; ratio of medians {statistics.median(secs['torch']) / statistics.median(secs['ours']):.2f}")
    common.result("train_step", k / t_ours, k / t_torch, "steps/s")


if __name__ == "__main__":
    main()
