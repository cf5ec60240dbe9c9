"""The main job: train the orchestrator on graded calls, evaluate on VAL, report on TEST.

In frozen-backbone mode the backbone's pooled embeddings come from the on-disk cache, so a
step is one small jitted update and a rerun skips the backbone entirely; the fine-tuning
modes run it inside the step (trainer.py). Exact resume: the batch of step s is drawn from
`default_rng([seed, s])` and dropout from `fold_in(key, s)`, so the step number alone fixes
all randomness, and a restarted run that restores step s continues exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from leeroo_jax import config as config_lib
from leeroo_jax import distributed
from leeroo_jax.eval import baselines
from leeroo_jax.eval import report as report_lib
from leeroo_jax.experts.pool import query_text
from leeroo_jax.orchestrator import select
from leeroo_jax.training import optim, step
from leeroo_jax.training.checkpoint import Checkpointer, abstract_like
from leeroo_jax.training.metrics_writer import MetricWriter
from leeroo_jax.training.trainer import Trainer, make_mesh, side_features


def fit(cfg, trainer: Trainer, out: pathlib.Path) -> Trainer:
    """Run (or resume) training; returns the trainer holding the best-by-VAL state."""
    t = cfg.train
    ckpt = Checkpointer(out / "ckpt", keep=t.keep)
    start = 0
    if ckpt.latest_step() is not None:
        restored, meta = ckpt.restore(ckpt.latest_step(), abstract_like(nnx.to_pure_dict(trainer.state)))
        nnx.replace_by_pure_dict(trainer.state, restored)
        start = meta["step"]
        print(f"resumed from step {start}")
    elif t.init_head_from:
        warm_start_head(trainer, t.init_head_from)
    with jax.set_mesh(trainer.mesh):
        _train(cfg, trainer, ckpt, out, start)
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
    from leeroo_jax.errors import ConfigError

    src = Checkpointer(pathlib.Path(run_dir) / "ckpt")
    step = src.best_step() or src.latest_step()
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


def _train(cfg, trainer: Trainer, ckpt: Checkpointer, out: pathlib.Path, start: int) -> None:
    t = cfg.train
    compiled = step.train_step.lower(trainer.graphdef, trainer.state, trainer.batch(start), trainer.key).compile()
    mem = compiled.memory_analysis()
    if mem is not None:  # fine-tuning batches vary in length: this is the first bucket's program
        print(f"train_step compiled: {getattr(mem, 'temp_size_in_bytes', 0) / 2**20:.1f} MiB temp, "
              f"{getattr(mem, 'argument_size_in_bytes', 0) / 2**20:.1f} MiB arguments")
    from tqdm import tqdm

    sched = optim.schedule(trainer.opt_cfg)
    t0 = time.perf_counter()
    with MetricWriter(out) as writer:
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
                val = trainer.val_metrics()
                writer.write(done, val)
                ckpt.save(done, nnx.to_pure_dict(trainer.state), {"step": done, "seed": t.seed}, metrics=val)
            if done == t.fault_at_step:  # fault injection for the resume test: die like a preempted VM
                import os
                import signal

                os.kill(os.getpid(), signal.SIGKILL)


def routes(cfg, data: baselines.Prepared, rows: np.ndarray, p: np.ndarray) -> list[dict]:
    """Per TEST question: the chosen expert and its cost under batch budgets equal to the mean
    cost of the cheapest expert, the weak expert, 40% of the strong one, and the strong one."""
    names = list(data.pool.names)
    cost = data.cost[rows]
    budgets = {"cheapest": cost.mean(0).min(), "weak": cost[:, names.index(cfg.eval.weak)].mean(),
               "strong_x0.4": 0.4 * cost[:, names.index(cfg.eval.strong)].mean(),
               "strong": cost[:, names.index(cfg.eval.strong)].mean()}
    avail = jnp.ones(len(names), bool)
    picks = {k: select.select(jnp.asarray(p, jnp.float32), jnp.asarray(cost, jnp.float32), avail,
                              select.Budget.batch_budget(float(b))) for k, b in budgets.items()}
    out = []
    for i, r in enumerate(rows):
        rec = {"id": data.questions[r].id}
        for k, sel in picks.items():
            e = int(sel.choice[i])
            rec[k] = {"expert": names[e], "cost_usd": float(cost[i, e]), "correct": float(data.outcome[r, e])}
        out.append(rec)
    return out


def build(cfg, data: baselines.Prepared, vecs: np.ndarray) -> Trainer:
    """The Trainer for cfg.train.mode, loading the backbone for the fine-tuning modes."""
    mesh = make_mesh(cfg)
    side = side_features(cfg, data, vecs)
    if cfg.train.mode == "frozen":
        return Trainer(cfg, data, vecs, side, mesh)
    from leeroo_jax.orchestrator.backbone import Backbone
    from leeroo_jax.weights.loader import load

    loaded = load(config_lib.backbone_path(cfg.backbone.path), mesh)
    bb = Backbone(loaded, cfg.backbone.pooling, cfg.backbone.max_length)
    table = bb.token_table([query_text(q) for q in data.questions], bucket_step=32)  # few programs to compile
    return Trainer(cfg, data, vecs, side, mesh, loaded, table)


def run(cfg) -> str:
    out = config_lib.run_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(cfg.to_json_best_effort(indent=1))  # what route/add_expert rebuild from
    data = baselines.prepare(cfg)
    vecs = baselines.embed(cfg, [query_text(q) for q in data.questions])
    trainer = fit(cfg, build(cfg, data, vecs), out)

    rows = data.rows(cfg.eval.split)
    p = trainer.predict(rows)
    router_p = {"orchestrator": p, **baselines.reference_routers(cfg, data, rows, vecs)}
    rep = baselines.evaluate(cfg, data, rows, router_p)
    md = report_lib.write(rep, out, at=cfg.eval.weak, reach=cfg.eval.strong)
    lines = "".join(json.dumps(r) + "\n" for r in routes(cfg, data, rows, p))
    (out / "routes.jsonl").write_text(lines)
    print(md)
    print(f"wrote {out}/report.json, report.md, frontier.png, routes.jsonl, metrics.jsonl, tb/, ckpt/")
    return md
