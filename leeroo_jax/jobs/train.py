"""The main job: train the orchestrator, then report it beside the reference routers.

    python -m leeroo_jax.train --config=configs/mmlu.py [--config.train.steps=600 ...]

Writes checkpoints/<run_name>/: config.json, ckpt/ (Orbax), metrics.jsonl, tb/,
report.{json,md}, frontier.png, routes.jsonl, and what deployment reads: calibration.json (the
per-expert probability maps fitted on VAL) and policy.json (which router serves which budget,
decided on VAL). Rerunning the same command resumes from the last checkpoint.
"""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np

from leeroo_jax import distributed, fileio
from leeroo_jax.data.dataset import Dataset
from leeroo_jax.eval import evaluate, guarantees
from leeroo_jax.eval import report as report_lib
from leeroo_jax.jobs import common, crossfit, tune
from leeroo_jax.orchestrator import pcal, policy, select
from leeroo_jax.training import loop, trainer as trainer_lib
from leeroo_jax.training.checkpoint import Checkpointer


def routes(cfg, ds: Dataset, rows: np.ndarray, router_p: dict[str, np.ndarray], pol: policy.Policy) -> list[dict]:
    """Per evaluation question: the chosen expert and its cost under batch budgets equal to the
    mean cost of the cheapest expert, the weak expert, 40% of the strong one, and the strong one,
    each routed by the router the policy deploys at that budget (router_p: router -> p [Q, E])."""
    names = ds.names
    cost = ds.cost[rows]
    budgets = {"cheapest": cost.mean(0).min(), "weak": cost[:, names.index(cfg.eval.weak)].mean(),
               "strong_x0.4": 0.4 * cost[:, names.index(cfg.eval.strong)].mean(),
               "strong": cost[:, names.index(cfg.eval.strong)].mean()}
    avail = jnp.ones(len(names), bool)
    picks = {k: np.asarray(select.select(jnp.asarray(router_p[pol.router_for(b)], jnp.float32),
                                         jnp.asarray(cost, jnp.float32), avail,
                                         select.Budget.batch_budget(float(b))).choice) for k, b in budgets.items()}
    out = []
    for i, r in enumerate(rows):
        rec = {"id": ds.questions[r].id}
        for k, choice in picks.items():
            e = int(choice[i])
            rec[k] = {"expert": names[e], "cost_usd": float(cost[i, e]), "correct": float(ds.outcome[r, e]),
                      "router": pol.router_for(budgets[k])}
        out.append(rec)
    return out


def calibration_section(ds: Dataset, ev, cal: pcal.Calibration, raw, p, raw_val, p_val) -> dict:
    """ECE of the orchestrator's p before and after calibration: on the evaluated split (out
    of sample) and on VAL (where the maps were fitted), over the graded pairs."""
    val = ds.rows("val")
    ece = lambda q, rows: pcal.ece(q, ds.outcome[rows], ds.observed[rows])  # noqa: E731
    per = {n: {"before": pcal.ece(raw[:, e], ds.outcome[ev.rows, e]), "after": pcal.ece(p[:, e], ds.outcome[ev.rows, e])}
           for e, n in ((e, ds.names[e]) for e in ev.experts)}
    return {"kind": cal.kind, "split": ev.split, "ece_before": ece(raw, ev.rows), "ece_after": ece(p, ev.rows),
            "val_ece_before": ece(raw_val, val), "val_ece_after": ece(p_val, val), "per_expert": per}


def deployment_policy(cfg, ds: Dataset, val_p: dict[str, np.ndarray], oof: tuple | None = None) -> policy.Policy:
    """The decision made before TEST: per budget, the router (ours or a reference one) whose
    deployed accuracy is highest on VAL's fully graded questions, and, given `oof` = (rows,
    {router: p}), on TRAIN's out-of-fold predictions too (crossfit.py). val_p: router -> p
    over every VAL question (`ds.rows("val")`)."""
    val = ds.rows("val")
    vev = ds.eval_set("val")
    pick = np.searchsorted(val, vev.rows)  # the fully graded VAL questions, within val
    cols = vev.experts
    rows, p = vev.rows, {n: q[pick] for n, q in val_p.items()}
    if oof is not None:
        o_rows, o_p = oof
        keep = ds.observed[np.ix_(o_rows, cols)].all(1)
        rows = np.concatenate([rows, o_rows[keep]])
        p = {n: np.concatenate([p[n], o_p[n][keep]]) for n in p}
    cost, outcome = ds.cost[np.ix_(rows, cols)], ds.outcome[np.ix_(rows, cols)]
    return policy.fit({n: q[:, cols] for n, q in p.items()}, cost, outcome)


def out_of_fold(cfg, ds: Dataset, out, cal: pcal.Calibration) -> tuple | None:
    """TRAIN's out-of-fold predictions for the policy (config.eval.policy_folds folds; frozen
    mode), the orchestrator trained as many steps as the run's best checkpoint, calibrated."""
    k = int(cfg.eval.policy_folds)
    if k < 2 or cfg.train.mode != "frozen":
        return None
    ckpt = Checkpointer(out / "ckpt")
    steps = ckpt.best_step()
    ckpt.close()
    rows, p = crossfit.out_of_fold(cfg, ds, k, cfg.train.steps if steps is None else steps)
    p["orchestrator"] = cal.apply(p["orchestrator"])
    return rows, p


def report_budgets(cost: np.ndarray, names: list[str], strong: str) -> dict[str, float]:
    """Every expert's mean cost (equal costs once) and 0.4x the strong expert's: the budgets at
    which the deployed policy must match the best single expert it can afford."""
    out, c = {}, cost.mean(0)
    for e in np.argsort(c, kind="stable"):
        same = np.flatnonzero(np.abs(c - c[e]) <= 1e-12 * max(c[e], 1e-30))
        if same[0] == e:  # experts at one price: one budget, named by the first
            more = f" (+{len(same) - 1} at that price)" if len(same) > 1 else ""
            out[names[e].split("/")[-1] + more] = float(c[e])
    share = 0.4 * float(cost[:, names.index(strong)].mean())
    if share > c.min():  # below the cheapest expert no routing fits
        out[f"0.4x {strong.split('/')[-1]}"] = share
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def deployment_section(cfg, ds: Dataset, ev, pol: policy.Policy, test_p: dict[str, np.ndarray]) -> dict:
    """What the VAL-decided policy delivers on the evaluated split (eval/guarantees.py)."""
    cols = ev.experts
    names = [ds.names[e] for e in cols]
    cost, outcome = ds.cost[np.ix_(ev.rows, cols)], ds.outcome[np.ix_(ev.rows, cols)]
    budgets = report_budgets(cost, names, cfg.eval.strong) if cfg.eval.strong in names else {}
    sec = guarantees.section(pol, {n: q[:, cols] for n, q in test_p.items()}, cost, outcome, names, budgets)
    sec["checks"] = guarantees.checks(sec)
    return sec


def run(cfg) -> str:
    out = common.output_dir(cfg)
    ds = common.load_dataset(cfg)
    if cfg.train.tune:  # the sweep's winner replaces the config's head settings (a rerun reuses tune.json)
        cfg = tune.saved_config(cfg, out) or tune.tuned_config(cfg, ds, out)
    loop.check_resume(cfg, out)  # a refused resume must not overwrite the run's config.json
    common.write_config(cfg, out)
    ev = ds.eval_set(cfg.eval.split)  # fails now, not after training, when nothing can be evaluated
    trainer = trainer_lib.build(cfg, ds)
    trainer = loop.fit(cfg, trainer, out, evaluate.val_hook(ds, cfg.eval.weak, trainer.predict))

    val = ds.rows("val")
    raw, raw_val = trainer.predict(ev.rows), trainer.predict(val)
    cal = pcal.fit(cfg.train.calibration, raw_val, ds.outcome[val], ds.observed[val])
    p, p_val = cal.apply(raw), cal.apply(raw_val)
    routers = evaluate.with_references(cfg, ds, ev, {"orchestrator": (p, p_val)})
    rep = evaluate.evaluate(cfg, ds, ev, routers)
    rep["calibration"] = calibration_section(ds, ev, cal, raw, p, raw_val, p_val)
    pol = deployment_policy(cfg, ds, {n: pv for n, (_, pv) in routers.items()}, out_of_fold(cfg, ds, out, cal))
    rep["deployment"] = deployment_section(cfg, ds, ev, pol, {n: pe for n, (pe, _) in routers.items()})
    if not distributed.is_main_process():
        return ""
    fileio.write_json(out / "calibration.json", cal.to_json())
    fileio.write_json(out / "policy.json", pol.to_json(), indent=1)
    md = report_lib.write(rep, out, at=cfg.eval.weak, reach=cfg.eval.strong)
    fileio.write_text(out / "routes.jsonl", "".join(json.dumps(r) + "\n" for r in routes(cfg, ds, ev.rows, {n: pe for n, (pe, _) in routers.items()}, pol)))
    print(md)
    print(f"wrote {out}/report.json, report.md, frontier.png, routes.jsonl, metrics.jsonl, tb/, ckpt/")
    return md
