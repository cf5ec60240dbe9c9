"""The reference routers alone (`score.py --config.job=baselines`): zero, constant, subject
prior, kNN and the oracle on the configured split -> report.{json,md}, frontier.png."""

from __future__ import annotations

from leeroo_jax import distributed
from leeroo_jax.eval import evaluate
from leeroo_jax.eval import report as report_lib
from leeroo_jax.jobs import common


def run(cfg) -> str:
    out = common.output_dir(cfg)
    ds = common.load_dataset(cfg, embed=len(cfg.eval.knn_ks) > 0)
    ev = ds.eval_set(cfg.eval.split)
    rep = evaluate.evaluate(cfg, ds, ev, evaluate.with_references(cfg, ds, ev))
    if not distributed.is_main_process():
        return ""
    md = report_lib.write(rep, out, at=cfg.eval.weak, reach=cfg.eval.strong)
    print(md)
    print(f"wrote {out}/report.json, report.md, frontier.png")
    return md
