"""The training loop: (resume,) step, evaluate on VAL every N steps, checkpoint, keep the best.

In frozen-backbone mode the backbone's pooled embeddings come from the on-disk cache, so a
step is one small jitted update; the fine-tuning modes run it inside the step (trainer.py).
Exact resume: the batch of step s is drawn from `default_rng([seed, s])` and dropout from
`fold_in(key, s)`, so the step number alone fixes all randomness, and a restarted run that
restores step s continues exactly as an uninterrupted one would. A checkpoint carries the
config fields that define the run (`checkpoint.identity`); resuming under a config that
differs in one of them is a one-line error naming the field.

The VAL evaluation is a hook (`evaluate(trainer) -> metrics`, with checkpoint.BEST_METRIC
among them) passed in by the job, so this package does not depend on the evaluation code.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Callable

import jax
from etils import epath
from flax import nnx
from tqdm import tqdm

from leeroo_jax import distributed
from leeroo_jax.errors import ConfigError
from leeroo_jax.training import optim, step
from leeroo_jax.training.checkpoint import Checkpointer, abstract_like, check_identity, identity
from leeroo_jax.training.metrics_writer import MetricWriter
from leeroo_jax.training.trainer import Trainer

Evaluate = Callable[[Trainer], dict]


def check_resume(cfg, out: epath.Path) -> None:
    """A one-line error, before anything is written, when `out` holds checkpoints of another config."""
    if not (out / "ckpt").is_dir():
        return
    ckpt = Checkpointer(out / "ckpt")
    latest = ckpt.latest_step()
    if latest is not None:
        check_identity(ckpt.meta(latest), cfg, ckpt.directory)
    ckpt.close()


def fit(cfg, trainer: Trainer, out: epath.Path, evaluate: Evaluate) -> Trainer:
    """Run (or resume) training; returns the trainer holding the best-by-VAL state."""
    t = cfg.train
    ckpt = Checkpointer(out / "ckpt", keep=t.keep)
    start = 0
    if ckpt.latest_step() is not None:
        latest = ckpt.latest_step()
        check_identity(ckpt.meta(latest), cfg, ckpt.directory)
        restored, meta = ckpt.restore(latest, abstract_like(nnx.to_pure_dict(trainer.state)))
        nnx.replace_by_pure_dict(trainer.state, restored)
        start = meta["step"]
        print(f"resumed from step {start}")
    elif t.init_head_from:
        warm_start_head(trainer, t.init_head_from)
    with jax.set_mesh(trainer.mesh):
        _train(cfg, trainer, ckpt, out, start, evaluate)
    ckpt.wait()
    best = ckpt.best_step()
    if best is not None:
        restored, _ = ckpt.restore(best, abstract_like(nnx.to_pure_dict(trainer.state)))
        nnx.replace_by_pure_dict(trainer.state, restored)
        print(f"best VAL checkpoint: step {best}")
    ckpt.close()
    return trainer


def warm_start_head(trainer: Trainer, run_dir: str) -> None:
    """Start from the head of another run's best checkpoint (e.g. a frozen-mode run, before
    fine-tuning the backbone under it: a fresh head on a moving backbone starts from noise)."""
    src = Checkpointer(epath.Path(run_dir) / "ckpt")
    step = src.best_step()
    step = src.latest_step() if step is None else step
    if step is None:
        raise ConfigError(f"config.train.init_head_from={run_dir!r} holds no checkpoint; pass a finished run directory")
    restored, _ = src.restore_as_saved(step)
    src.close()
    head = nnx.to_pure_dict(trainer.state[0]["head"])
    got = restored["0"]["head"]
    for k, v in head.items():
        if k not in got or got[k].shape != v.shape:
            raise ConfigError(f"config.train.init_head_from: head weight {k} {getattr(got.get(k), 'shape', None)} does not "
                              f"match this run's {v.shape}; use a run with the same pool, hidden and side features")
    nnx.replace_by_pure_dict(trainer.state[0]["head"], jax.device_put(got, jax.tree.map(lambda x: x.sharding, head)))
    print(f"head initialised from {run_dir} step {step}")


def _train(cfg, trainer: Trainer, ckpt: Checkpointer, out: epath.Path, start: int, evaluate: Evaluate) -> None:
    t = cfg.train
    compiled = step.train_step.lower(trainer.graphdef, trainer.state, trainer.batch(start), trainer.key).compile()
    mem = compiled.memory_analysis()
    if mem is not None:  # fine-tuning batches vary in length: this is the first bucket's program
        print(f"train_step compiled: {getattr(mem, 'temp_size_in_bytes', 0) / 2**20:.1f} MiB temp, "
              f"{getattr(mem, 'argument_size_in_bytes', 0) / 2**20:.1f} MiB arguments")
    sched = optim.schedule(trainer.opt_cfg)
    t0 = time.perf_counter()
    with MetricWriter(out) as writer:
        if start == 0 and (t.get("anchor", "") or t.init_head_from):  # the starting head is a candidate too
            val = evaluate(trainer)
            writer.write(0, val)
            ckpt.save(0, nnx.to_pure_dict(trainer.state), {"step": 0, "seed": t.seed, "config": identity(cfg)}, metrics=val)
        for s in tqdm(range(start, t.steps), initial=start, total=t.steps, desc="train",
                      disable=not distributed.is_main_process()):
            trainer.state, metrics = step.train_step(trainer.graphdef, trainer.state, trainer.batch(s),
                                                     step.step_key(trainer.key, s))
            done = s + 1
            if done % t.log_every == 0 or done == t.steps:
                writer.write(done, {"loss": metrics["loss"], "grad_norm": metrics["grad_norm"],
                                    "lr": sched(s // t.accumulate),
                                    "examples_per_s": t.batch_size * (done - start) / (time.perf_counter() - t0)})
            if done % t.eval_every == 0 or done == t.steps:
                val = evaluate(trainer)
                writer.write(done, val)
                ckpt.save(done, nnx.to_pure_dict(trainer.state), {"step": done, "seed": t.seed, "config": identity(cfg)},
                          metrics=val)
            if done == t.fault_at_step and t.fault_process in (-1, jax.process_index()):  # fault injection for
                # the resume tests: die like a preempted VM (one host of a pod with fault_process), after the
                # checkpoints saved so far are committed, so the step a rerun resumes from is known
                ckpt.wait()
                os.kill(os.getpid(), signal.SIGKILL)
