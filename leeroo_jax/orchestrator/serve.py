"""A trained orchestrator, restored from its run directory, routing questions under a budget.

    python -m leeroo_jax.score --config=configs/mmlu.py --config.job=route \
        --config.checkpoint=checkpoints/mmlu [--config.route.questions=q.jsonl] \
        [--config.route.mode=cap --config.route.value=0.0001]

A run directory is self-describing: its config.json rebuilds the model, data and record store
it was trained with, and ckpt/ holds the weights (the best step by VAL AIQ). The scoring path
is one jitted program per length bucket (`score`): tokens [B, T] -> backbone -> pooled vector
-> logits [B, E] -> the selection kernel -> choice, p, cost. A frozen-mode run stored only its
head; routing attaches the pretrained backbone it was trained on. The retrieval side features
(outcomes of a question's nearest TRAIN neighbours) are looked up on the host, like a vector
index beside the model. `batch_budget` constrains the mean cost over *all* routed questions,
so that mode scores every bucket first and selects once over the whole set.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from leeroo_jax import sharding
from leeroo_jax.data import mmlu
from leeroo_jax.errors import ConfigError
from leeroo_jax.eval import baselines
from leeroo_jax.experts.pool import query_text
from leeroo_jax.orchestrator import select
from leeroo_jax.orchestrator.model import Orchestrator
from leeroo_jax.training.checkpoint import Checkpointer, abstract_like
from leeroo_jax.training.trainer import Trainer, side_features


@dataclasses.dataclass
class Run:
    cfg: ml_collections.ConfigDict  # the training config, as saved
    data: baselines.Prepared
    vecs: np.ndarray  # [Q, D] frozen-backbone embeddings of data.questions
    trainer: Trainer  # holding the restored state
    step: int


def train_config(run_dir: str | os.PathLike) -> ml_collections.ConfigDict:
    run_dir = pathlib.Path(run_dir)
    if not (run_dir / "config.json").exists() or not (run_dir / "ckpt").is_dir():
        raise ConfigError(f"config.checkpoint={str(run_dir)!r} is not a training run directory (no config.json "
                          "and ckpt/); pass checkpoints/<run_name> of a finished `leeroo_jax.train` run")
    cfg = ml_collections.ConfigDict(json.loads((run_dir / "config.json").read_text()))
    cfg.output_root, cfg.run_name = str(run_dir.parent), run_dir.name  # the run's own record store
    return cfg


def load_run(run_dir: str | os.PathLike) -> Run:
    """Rebuild a training run's model and data and restore its best (else latest) checkpoint."""
    from leeroo_jax.training import loop

    cfg = train_config(run_dir)
    data = baselines.prepare(cfg)
    vecs = baselines.embed(cfg, [query_text(q) for q in data.questions])
    trainer = loop.build(cfg, data, vecs)
    ckpt = Checkpointer(pathlib.Path(run_dir) / "ckpt")
    step = ckpt.best_step() or ckpt.latest_step()
    if step is None:
        raise ConfigError(f"{run_dir}/ckpt holds no checkpoint; train the run first")
    restored, _ = ckpt.restore(step, abstract_like(nnx.to_pure_dict(trainer.state)))
    ckpt.close()
    nnx.replace_by_pure_dict(trainer.state, restored)
    return Run(cfg, data, vecs, trainer, step)


def side_for(run: Run, vecs: np.ndarray, subjects: np.ndarray) -> np.ndarray:
    """[N, E, P] side features of questions outside the run's data (no records of their own)."""
    d, n, e = run.data, len(vecs), len(run.data.pool)
    ext = dataclasses.replace(
        d, outcome=np.concatenate([d.outcome, np.zeros((n, e))]), observed=np.concatenate([d.observed, np.zeros((n, e), bool)]),
        split=np.concatenate([d.split, np.full(n, "new")]), subjects=np.concatenate([d.subjects, subjects]))
    return side_features(run.cfg, ext, np.concatenate([run.vecs, vecs]))[len(d.questions):]


@functools.partial(jax.jit, static_argnums=0)
def score(graphdef, state, tokens_bt, attn_bt, side_bep, cost_be, available_e, budget: select.Budget):
    """The whole scoring path in one program: (p [B, E], Selection) for one token batch."""
    model = nnx.merge(graphdef, state)
    p = jax.nn.sigmoid(model(tokens_bt, attn_bt, side_bep))
    return p, select.select(p, cost_be, available_e, budget)


def scoring_model(run: Run) -> tuple[Orchestrator, object]:
    """(model with its backbone attached, a Backbone used only to tokenize and bucket)."""
    from leeroo_jax import config as config_lib
    from leeroo_jax.orchestrator.backbone import Backbone
    from leeroo_jax.weights.loader import load

    model = nnx.merge(run.trainer.graphdef, run.trainer.state)[0]
    loaded = run.trainer.backbone  # fine-tuning modes: the trainer loaded it (the trained weights are in model)
    if model.backbone is None:  # a frozen-mode run stored only its head: attach the pretrained backbone
        loaded = load(config_lib.backbone_path(run.cfg.backbone.path), run.trainer.mesh)
        model = Orchestrator(model.head, loaded.model, run.cfg.backbone.pooling)
    return model, Backbone(loaded, run.cfg.backbone.pooling, run.cfg.backbone.max_length)


def route_questions(run: Run, questions: list[mmlu.Question], cost: np.ndarray, budget: select.Budget,
                    batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(p [N, E], choice [N]) for any questions with costs [N, E] (float32), under `budget`."""
    index = {q.id: i for i, q in enumerate(run.data.questions)}
    known = np.array([q.id in index for q in questions])
    rows = np.array([index.get(q.id, -1) for q in questions])
    side = np.empty((len(questions), len(run.data.pool), run.trainer.side.shape[-1]), np.float32)
    side[known] = run.trainer.side[rows[known]]
    if (~known).any():
        new = [q for q, k in zip(questions, known) if not k]
        vecs = baselines.embed(run.cfg, [query_text(q) for q in new])
        side[~known] = side_for(run, vecs, np.array([q.subject for q in new]))
    model, bb = scoring_model(run)
    graphdef, state = nnx.split(model)
    table = bb.token_table([query_text(q) for q in questions], bucket_step=32)
    avail = jnp.ones(len(run.data.pool), bool)
    per_query = budget if budget.mode != "batch_budget" else select.Budget.tradeoff(0.0)
    p, choice = np.empty(cost.shape, np.float32), np.empty(len(questions), np.int32)
    mesh = run.trainer.mesh
    batch_size = -(-batch_size // run.trainer.n_data) * run.trainer.n_data  # splits over the data axes
    order = np.argsort(table.lengths, kind="stable")
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        tokens, attn = table.pack(idx, batch_size)  # fixed batch: one program per length bucket
        pad = lambda x: np.concatenate([x, np.repeat(x[-1:], batch_size - len(idx), 0)])  # noqa: E731
        batch = sharding.shard_batch((tokens, attn, pad(side[idx]), pad(cost[idx])), mesh)  # tables stay replicated
        with jax.set_mesh(mesh):
            pb, sel = score(graphdef, state, *batch, avail, per_query)
        p[idx], choice[idx] = np.asarray(pb)[: len(idx)], np.asarray(sel.choice)[: len(idx)]
    if budget.mode == "batch_budget":
        choice = np.asarray(select.select(jnp.asarray(p), jnp.asarray(cost), avail, budget).choice)
    return p, choice


def budget_from(cfg, cost: np.ndarray, names: list[str]) -> select.Budget:
    value = float(cfg.route.value)
    if value < 0:
        if cfg.route.mode not in ("batch_budget", "cap"):
            raise ConfigError(f"config.route.mode={cfg.route.mode} needs config.route.value (lam or tau) >= 0")
        value = float(cost[:, names.index(cfg.eval.weak)].mean())  # default: the weak expert's mean cost
    return select.Budget(cfg.route.mode, value)


def run_route(cfg) -> dict:
    """The `route` job: choices.jsonl (one line per question) and summary.json."""
    run = load_run(cfg.checkpoint)
    if cfg.route.questions:
        questions = mmlu.load_questions(cfg.route.questions)
    else:  # the run's evaluation split
        questions = [run.data.questions[r] for r in run.data.rows(run.cfg.eval.split)]
    names = list(run.data.pool.names)
    cost = run.data.pool.costs(questions).astype(np.float32)  # what the kernel sees, and what is reported
    budget = budget_from(cfg, cost, names)
    p, choice = route_questions(run, questions, cost, budget)
    index = {q.id: i for i, q in enumerate(run.data.questions)}
    lines, correct = [], []
    for i, q in enumerate(questions):
        e = int(choice[i])
        rec = {"id": q.id, "subject": q.subject, "expert": names[e], "p": round(float(p[i, e]), 5),
               "cost_usd": float(cost[i, e])}
        r = index.get(q.id)
        if r is not None and run.data.observed[r, e]:
            rec["correct"] = float(run.data.outcome[r, e])
            correct.append(rec["correct"])
        lines.append(json.dumps(rec))
    chosen = cost[np.arange(len(questions)), choice]
    summary = {"checkpoint": str(cfg.checkpoint), "step": run.step, "n_questions": len(questions),
               "budget": {"mode": budget.mode, "value": budget.value}, "mean_cost_usd": float(chosen.mean()),
               "cost_per_1k_usd": float(chosen.mean() * 1000), "mean_p": float(p[np.arange(len(questions)), choice].mean()),
               "choices": {n: int((choice == e).sum()) for e, n in enumerate(names)},
               "accuracy": float(np.mean(correct)) if len(correct) == len(questions) else None}
    out = pathlib.Path(cfg.route.output or pathlib.Path(cfg.checkpoint) / "route")
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("choices.jsonl", "\n".join(lines) + "\n"), ("summary.json", json.dumps(summary, indent=1))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)
    print(json.dumps(summary, indent=1))
    print(f"wrote {out}/choices.jsonl, summary.json")
    return summary
