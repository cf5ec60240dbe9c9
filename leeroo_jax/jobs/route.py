"""Route questions with a trained run under a budget (`score.py --config.job=route`).

    python -m leeroo_jax.score --config=configs/mmlu.py --config.job=route \
        --config.checkpoint=checkpoints/mmlu [--config.route.questions=q.jsonl] \
        [--config.route.mode=cap --config.route.value=0.0001] \
        [--config.route.mode=tradeoff --config.route.calibrate_on=val --config.route.value=weak]

route.value is a number (USD cap or mean budget, lam, or tau, by mode) or a keyword naming
a mean cost on the routed questions: "weak" / "strong" (config.eval's experts). With
route.calibrate_on=val, value is a target mean cost and the per-query mode's lam (tradeoff)
or tau (quality) is fitted on the run's VAL questions to meet it (orchestrator/calibrate.py).
A budget no routing can meet is a one-line error naming the feasible range. Writes
<output>/choices.jsonl (one line per question) and summary.json. The checkpoint and the output
may be bucket URIs (gs://...); a run in a bucket whose record store was <run>/records reads a
local copy of it named by --config.data.records.

p goes through the run's calibration (calibration.json). A mean-cost budget (batch_budget,
or a calibrate_on=val target) is served by the router the run's VAL-decided policy names for
it (policy.json): the orchestrator, or a reference router where that one won on VAL. The
per-query modes (cap, a raw lam or tau) always use the orchestrator.
"""

from __future__ import annotations

import json
import math

import numpy as np
from etils import epath

from leeroo_jax import distributed, fileio
from leeroo_jax.data import mmlu
from leeroo_jax.data.dataset import Dataset
from leeroo_jax.data.pool import Pool, query_text
from leeroo_jax.errors import ConfigError, DataError
from leeroo_jax.eval import evaluate
from leeroo_jax.jobs import common
from leeroo_jax.jobs.runs import Run, load_run, scoring_model, train_config
from leeroo_jax.orchestrator import calibrate, policy, select
from leeroo_jax.orchestrator.backbone import Embedder
from leeroo_jax.orchestrator.router import route_texts
from leeroo_jax.training.trainer import side_features

KEYWORDS = ("weak", "strong")


def _value(cfg, cost: np.ndarray, names: list[str]) -> float:
    """route.value as a number: a keyword is that expert's mean cost on the routed questions."""
    raw = str(cfg.route.value).strip()
    if raw in KEYWORDS:
        return float(cost[:, names.index(cfg.eval[raw])].mean())
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"config.route.value={raw!r} is neither a number nor one of {', '.join(KEYWORDS)}; "
                          "pass e.g. --config.route.value=weak or --config.route.value=5e-5") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"config.route.value={raw} must be a finite number >= 0 (or {' / '.join(KEYWORDS)})")
    return value


def budget_from(cfg, cost: np.ndarray, names: list[str]) -> select.Budget:
    """The per-mode budget, checked against what the routed questions allow (cost [N, E])."""
    mode, value = cfg.route.mode, _value(cfg, cost, names)
    cheapest = cost.min(1)  # [N]
    if mode == "cap" and value < cheapest.max():
        short = int((cheapest > value).sum())
        raise ConfigError(f"cap {value:.3g} USD is below every expert's cost on {short} of {len(cost)} questions; "
                          f"the cap must be >= {cheapest.max():.3g} USD (the dearest question's cheapest expert), "
                          "or use --config.route.mode=batch_budget for a mean-cost budget")
    lo, hi = calibrate.feasible_range(cost)
    if mode == "batch_budget" and value < lo:
        raise ConfigError(f"batch budget {value:.3g} USD/query is below the cheapest routing ({lo:.3g} "
                          f"USD/query: the cheapest expert everywhere); the feasible range is {lo:.3g}..{hi:.3g} USD/query")
    if mode == "quality" and value > 1:
        raise ConfigError(f"config.route.value={value} is a quality threshold tau: choose it in [0, 1]")
    return select.Budget(mode, value)


def check_calibration_target(cfg, cost: np.ndarray, names: list[str], val_cost: np.ndarray) -> float:
    """The target mean cost of route.calibrate_on=val, checked against what VAL routing can spend."""
    if cfg.route.mode not in calibrate.CAL_MODES:
        raise ConfigError(f"config.route.calibrate_on needs a per-query mode ({' / '.join(calibrate.CAL_MODES)}), "
                          f"not {cfg.route.mode}; batch_budget meets its budget without calibration")
    target = _value(cfg, cost, names)  # a keyword: that expert's mean cost on the routed questions
    calibrate.check_target(target, val_cost)
    return target


def calibrated_budget(cfg, run: Run, target: float, router: str) -> tuple[select.Budget, dict]:
    """route.calibrate_on=val: the per-query mode's value fitted on the run's VAL questions,
    with the p of the router the policy deploys at the target."""
    val = run.data.rows("val")
    p_val = run.predict(val) if router == "orchestrator" else evaluate.reference_routers(run.cfg, run.data, val)[router]
    cal = calibrate.calibrate(p_val, run.data.cost[val].astype(np.float32), target, cfg.route.mode)
    info = {"on": "val", "n": int(len(val)), "target_mean_cost_usd": target, "value": cal.value,
            "val_mean_cost_usd": cal.fit_mean_cost, "saturated": cal.saturated}
    return cal.budget(), info


def _questions(cfg, tcfg) -> tuple[list[mmlu.Question], Dataset | None]:
    """The questions to route, and the run's dataset when it had to be loaded to find them."""
    if cfg.route.questions:
        questions = mmlu.load_questions(cfg.route.questions)
        if not questions:
            raise DataError(f"config.route.questions={cfg.route.questions!r} holds no questions; pass a non-empty file")
        return questions, None
    ds = common.load_dataset(tcfg, embed=False)
    return [ds.questions[r] for r in ds.eval_set(tcfg.eval.split).rows], ds  # the run's evaluation split


def route_questions(run: Run, questions: list[mmlu.Question], cost: np.ndarray, budget: select.Budget,
                    router: str = "orchestrator") -> tuple[np.ndarray, np.ndarray]:
    """(p [N, E], choice [N]) for any questions with costs [N, E] (float32), under `budget`,
    by `router`: the orchestrator (calibrated) or a reference router of the run's data."""
    d = run.data
    index = {q.id: i for i, q in enumerate(d.questions)}
    rows = np.array([index.get(q.id, -1) for q in questions])
    known = rows >= 0
    side = np.empty((len(questions), len(d.pool), run.trainer.side.shape[-1]), np.float32)
    side[known] = run.trainer.side[rows[known]]
    vecs = np.empty((len(questions), d.vecs.shape[1]), np.float32)
    vecs[known] = d.vecs[rows[known]]
    if (~known).any():  # new questions: embed them, look up their TRAIN neighbours
        new = [q for q, k in zip(questions, known) if not k]
        vecs[~known] = Embedder.from_config(run.cfg.backbone)([query_text(q) for q in new])
        side[~known] = side_features(run.cfg, d, vecs[~known], np.array([q.subject for q in new]))
    if router != "orchestrator":  # a reference router won this budget on VAL: no model to run
        p = evaluate.reference_p(run.cfg, d, np.array([q.subject for q in questions]), vecs)[router].astype(np.float32)
        if budget.mode == "batch_budget":  # the zero router deploys as an exact mix of single experts
            return p, policy.deployed_choice(p, cost, float(budget.value), router)
        return p, np.asarray(select.select(p, cost, np.ones(cost.shape[1], bool), budget).choice)
    model, bb = scoring_model(run)
    return route_texts(model, bb, [query_text(q) for q in questions], side, cost, budget, run.trainer.mesh,
                       cal=run.calibration)


def run_route(cfg) -> dict:
    """Every check that needs no model runs first: a bad budget fails in seconds."""
    out = fileio.writable_dir(cfg.route.output or epath.Path(cfg.checkpoint) / "route")
    tcfg = train_config(cfg.checkpoint, cfg.data.records)
    questions, ds = _questions(cfg, tcfg)
    pool = Pool.from_config(tcfg.pool)
    names = list(pool.names)
    cost = pool.costs(questions).astype(np.float32)  # what the kernel sees, and what is reported
    if cfg.route.calibrate_on:
        ds = ds if ds is not None else common.load_dataset(tcfg, embed=False)  # load_run reuses it
        target = check_calibration_target(cfg, cost, names, ds.cost[ds.rows("val")].astype(np.float32))
    else:
        budget = budget_from(cfg, cost, names)
    run = load_run(cfg.checkpoint, ds, cfg.data.records, mesh=cfg.mesh.to_dict())  # this command's devices
    calibration, router = None, "orchestrator"
    if cfg.route.calibrate_on:
        router = run.router_for(target)
        budget, calibration = calibrated_budget(cfg, run, target, router)
    elif budget.mode == "batch_budget":
        router = run.router_for(float(budget.value))
    p, choice = route_questions(run, questions, cost, budget, router)
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
               "budget": {"mode": budget.mode, "value": float(budget.value)}, "calibration": calibration,
               "router": router,
               "mean_cost_usd": float(chosen.mean()), "cost_per_1k_usd": float(chosen.mean() * 1000),
               "mean_p": float(p[np.arange(len(questions)), choice].mean()),
               "choices": {n: int((choice == e).sum()) for e, n in enumerate(names)},
               "n_graded": len(correct), "accuracy": float(np.mean(correct)) if len(correct) == len(questions) else None}
    if distributed.is_main_process():
        fileio.write_text(out / "choices.jsonl", "\n".join(lines) + "\n")
        fileio.write_json(out / "summary.json", summary, indent=1)
    print(json.dumps(summary, indent=1))
    print(f"wrote {out}/choices.jsonl, summary.json")
    return summary
