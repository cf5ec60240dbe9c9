"""The main job: train the orchestrator, then report it beside the reference routers.

    python -m leeroo_jax.train --config=configs/mmlu.py [--config.train.steps=600 ...]

Writes checkpoints/<run_name>/: config.json, ckpt/ (Orbax), metrics.jsonl, tb/,
report.{json,md}, frontier.png, routes.jsonl, and what deployment reads: calibration.json (the
per-expert probability maps fitted on VAL) and policy.json (which router serves which budget,
decided on VAL). Rerunning the same command resumes from the last checkpoint.
"""

from __future__ import annotations

import json

import numpy as np

from leeroo_jax import distributed, fileio
from leeroo_jax.data.dataset import Dataset
from leeroo_jax.eval import evaluate
from leeroo_jax.eval import report as report_lib
from leeroo_jax.jobs import common, deployment, tune
from leeroo_jax.orchestrator import pcal, policy
from leeroo_jax.training import loop, trainer as trainer_lib


def routes(cfg, ds: Dataset, rows: np.ndarray, router_p: dict[str, np.ndarray], pol: policy.Policy) -> list[dict]:
    """Per evaluation question: the chosen expert and its cost under batch budgets equal to the
    mean cost of the cheapest expert, the weak expert, 40% of the strong one, and the strong one,
    each routed by the router the policy deploys at that budget (router_p: router -> p [Q, E])."""
    names = ds.names
    cost = ds.cost[rows]
    budgets = {"cheapest": cost.mean(0).min(), "weak": cost[:, names.index(cfg.eval.weak)].mean(),
               "strong_x0.4": 0.4 * cost[:, names.index(cfg.eval.strong)].mean(),
               "strong": cost[:, names.index(cfg.eval.strong)].mean()}
    picks = {k: policy.deployed_choice(router_p[pol.router_for(b)], cost, b, pol.router_for(b)) for k, b in budgets.items()}
    out = []
    for i, r in enumerate(rows):
        rec = {"id": ds.questions[r].id}
        for k, choice in picks.items():
            e = int(choice[i])
            rec[k] = {"expert": names[e], "cost_usd": float(cost[i, e]), "correct": float(ds.outcome[r, e]),
                      "router": pol.router_for(budgets[k])}
        out.append(rec)
    return out


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
    test_p, val_p = ({n: v[i] for n, v in routers.items()} for i in (0, 1))
    oof = deployment.out_of_fold(cfg, ds, out)
    rep["calibration"] = deployment.calibration_section(ds, ev, cal, raw, p, raw_val, p_val)
    pol = deployment.fit_policy(cfg, ds, val_p, deployment.calibrated(oof, cal))
    rep["deployment"] = deployment.section(cfg, ds, ev, pol, test_p)
    if not distributed.is_main_process():
        return ""
    fileio.write_json(out / "calibration.json", cal.to_json())
    fileio.write_json(out / "policy.json", pol.to_json(), indent=1)
    md = report_lib.write(rep, out, at=cfg.eval.weak, reach=cfg.eval.strong)
    fileio.write_text(out / "routes.jsonl", "".join(json.dumps(r) + "\n" for r in routes(cfg, ds, ev.rows, test_p, pol)))
    print(md)
    print(f"wrote {out}/report.json, report.md, frontier.png, routes.jsonl, metrics.jsonl, tb/, ckpt/")
    return md
