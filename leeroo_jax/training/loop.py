"""The main job: train the orchestrator head on graded calls, evaluate on VAL, report on TEST.

Frozen-backbone mode: the backbone's pooled embeddings come from the on-disk cache, so a
step is one small jitted update and a rerun skips the backbone entirely. Exact resume: the
batch of step s is drawn from `default_rng([seed, s])` and dropout from `fold_in(key, s)`,
so the step number alone fixes all randomness, and a restarted run that restores step s
continues exactly as an uninterrupted one would.
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
from leeroo_jax.eval import frontier as fr
from leeroo_jax.eval import report as report_lib
from leeroo_jax.experts.pool import query_text
from leeroo_jax.orchestrator import features, select
from leeroo_jax.orchestrator.model import Head, HeadConfig, Orchestrator
from leeroo_jax.training import optim, step
from leeroo_jax.training.checkpoint import BEST_METRIC, Checkpointer, abstract_like


def side_features(cfg, data: baselines.Prepared, vecs: np.ndarray) -> np.ndarray:
    """[Q, E, P] side features from TRAIN records (leave-one-out for TRAIN queries)."""
    tr, e = data.rows("train"), len(data.pool)
    cols = []
    ks = tuple(int(k) for k in cfg.train.side_knn)
    if ks:
        knn = features.neighbour_outcomes(vecs, tr, data.outcome, data.observed, ks)
        cols += [knn[:, i * e:(i + 1) * e] for i in range(len(ks))]
    if cfg.train.side_prior:
        cols.append(features.subject_prior_loo(data.subjects, tr, data.outcome, data.observed, cfg.eval.subject_strength))
    return np.stack(cols, axis=-1).astype(np.float32) if cols else np.zeros((len(vecs), e, 0), np.float32)


class Trainer:
    def __init__(self, cfg, data: baselines.Prepared, vecs: np.ndarray, side: np.ndarray):
        self.cfg, self.data, self.vecs, self.side = cfg, data, vecs.astype(np.float32), side
        t = cfg.train
        head_cfg = HeadConfig(vecs.shape[1], len(data.pool), side.shape[-1], t.hidden, t.dropout)
        model = Orchestrator(Head(head_cfg, rngs=nnx.Rngs(t.seed)))
        self.opt_cfg = optim.OptimConfig(lr=t.lr, warmup_steps=t.warmup_steps, total_steps=t.steps,
                                         weight_decay=t.weight_decay, clip_norm=t.clip_norm)
        opt = nnx.Optimizer(model, optim.make(self.opt_cfg), wrt=nnx.Param)
        self.graphdef, self.state = nnx.split((model, opt))
        self.key = jax.random.key(t.seed)
        self.train_rows = data.rows("train")
        self.target = data.outcome.astype(np.float32)
        if t.soft_weight > 0:  # blend in the soft label (gold-letter probability) where recorded
            soft = np.nan_to_num(data.soft, nan=-1.0)
            self.target = np.where(soft >= 0, (1 - t.soft_weight) * self.target + t.soft_weight * soft, self.target)

    def batch(self, s: int) -> dict:
        rng = np.random.default_rng([self.cfg.train.seed, s])
        idx = self.train_rows[rng.integers(0, len(self.train_rows), self.cfg.train.batch_size)]
        return {"q": self.vecs[idx], "side": self.side[idx], "target": self.target[idx],
                "mask": self.data.observed[idx].astype(np.float32)}

    def predict(self, rows: np.ndarray, state=None) -> np.ndarray:
        out = []
        for s in range(0, len(rows), 4096):
            r = rows[s:s + 4096]
            out.append(np.asarray(step.predict(self.graphdef, state or self.state, {"q": self.vecs[r], "side": self.side[r]})))
        return np.concatenate(out)

    def val_metrics(self) -> dict:
        rows = self.data.rows("val")
        cost, outcome = self.data.cost[rows], self.data.outcome[rows]
        summ = fr.summarize(fr.sweep(self.predict(rows), cost, outcome), list(self.data.pool.names), cost, outcome)
        return {BEST_METRIC: summ.aiq, "val_acc_at_weak_cost": summ.acc_at_cost_of[self.cfg.eval.weak]}


def _log(path: pathlib.Path, record: dict) -> None:
    if distributed.is_main_process():
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


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
    compiled = step.train_step.lower(trainer.graphdef, trainer.state, trainer.batch(0), trainer.key).compile()
    mem = compiled.memory_analysis()
    if mem is not None:
        print(f"train_step compiled: {getattr(mem, 'temp_size_in_bytes', 0) / 2**20:.1f} MiB temp, "
              f"{getattr(mem, 'argument_size_in_bytes', 0) / 2**20:.1f} MiB arguments")
    from tqdm import tqdm

    t0 = time.perf_counter()
    for s in tqdm(range(start, t.steps), initial=start, total=t.steps, desc="train", disable=not distributed.is_main_process()):
        trainer.state, metrics = step.train_step(trainer.graphdef, trainer.state, trainer.batch(s),
                                                 jax.random.fold_in(trainer.key, s))
        done = s + 1
        if done % t.log_every == 0 or done == t.steps:
            _log(out / "metrics.jsonl", {"step": done, "loss": float(metrics["loss"]), "grad_norm": float(metrics["grad_norm"]),
                                         "lr": float(optim.schedule(trainer.opt_cfg)(s)),
                                         "examples_per_s": t.batch_size * (done - start) / (time.perf_counter() - t0)})
        if done % t.eval_every == 0 or done == t.steps:
            val = trainer.val_metrics()
            _log(out / "metrics.jsonl", {"step": done, **val})
            ckpt.save(done, nnx.to_pure_dict(trainer.state), {"step": done, "seed": t.seed}, metrics=val)
        if done == t.fault_at_step:  # fault injection for the resume test: die like a preempted VM
            import os
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
    ckpt.wait()
    best = ckpt.best_step()
    if best is not None:
        restored, _ = ckpt.restore(best, abstract_like(nnx.to_pure_dict(trainer.state)))
        nnx.replace_by_pure_dict(trainer.state, restored)
        print(f"best VAL checkpoint: step {best}")
    ckpt.close()
    return trainer


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


def run(cfg) -> str:
    out = config_lib.run_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    data = baselines.prepare(cfg)
    vecs = baselines.embed(cfg, [query_text(q) for q in data.questions])
    trainer = fit(cfg, Trainer(cfg, data, vecs, side_features(cfg, data, vecs)), out)

    rows = data.rows(cfg.eval.split)
    p = trainer.predict(rows)
    router_p = {"orchestrator": p, **baselines.reference_routers(cfg, data, rows, vecs)}
    rep = baselines.evaluate(cfg, data, rows, router_p)
    md = report_lib.write(rep, out, at=cfg.eval.weak, reach=cfg.eval.strong)
    lines = "".join(json.dumps(r) + "\n" for r in routes(cfg, data, rows, p))
    (out / "routes.jsonl").write_text(lines)
    print(md)
    print(f"wrote {out}/report.json, report.md, frontier.png, routes.jsonl, metrics.jsonl, ckpt/")
    return md
