"""Evaluate routers on a split: hindsight frontiers beside deployed and VAL-calibrated numbers.

A router is given as p on the evaluation questions and p on the VAL calibration questions
(every VAL question: calibration needs predictions and costs, not outcomes). Every router,
the reference ones and the oracle included, gets the same columns (report.py).

Only the split's `EvalSet` is evaluated: its questions are graded by every evaluated expert,
and experts without outcomes on the split are left out (and named in the report).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from leeroo_jax.data.dataset import Dataset, EvalSet
from leeroo_jax.errors import ConfigError
from leeroo_jax.eval import deployed as dep
from leeroo_jax.eval import frontier as fr
from leeroo_jax.eval import report as report_lib
from leeroo_jax.eval import routers
from leeroo_jax.orchestrator import policy

RouterP = tuple[np.ndarray, np.ndarray]  # (p [N_eval, E], p [N_val, E]) over the pool's experts


def reference_routers(cfg, ds: Dataset, rows: np.ndarray) -> dict[str, np.ndarray]:
    """p[len(rows), E] of each reference router, fitted on TRAIN outcomes only."""
    return reference_p(cfg, ds, ds.subjects[rows], None if ds.vecs is None else ds.vecs[rows])


def reference_p(cfg, ds: Dataset, subjects: np.ndarray, vecs: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """p[N, E] of each reference router for any N queries (their subjects, and their frozen
    embeddings for the kNN routers), fitted on the dataset's TRAIN outcomes only."""
    tr = ds.rows("train")
    out = {"constant": routers.constant(ds.outcome[tr], ds.observed[tr], len(subjects)),
           "subject_prior": routers.subject_prior(ds.subjects[tr], ds.outcome[tr], ds.observed[tr], subjects,
                                                  cfg.eval.subject_strength)}
    if ds.vecs is not None and vecs is not None:
        for k in cfg.eval.knn_ks:
            out[f"knn{k}"] = routers.knn(ds.vecs[tr], ds.outcome[tr], ds.observed[tr], vecs, int(k))
    return out


def with_references(cfg, ds: Dataset, ev: EvalSet, mine: dict[str, RouterP] | None = None) -> dict[str, RouterP]:
    """`mine` followed by the reference routers, each with its eval and VAL predictions."""
    val = ds.rows("val")
    test_p, val_p = reference_routers(cfg, ds, ev.rows), reference_routers(cfg, ds, val)
    return {**(mine or {}), **{name: (test_p[name], val_p[name]) for name in test_p}}


def _check_pair(cfg, ds: Dataset, ev: EvalSet) -> list[str]:
    names = [ds.names[e] for e in ev.experts]
    for field in ("weak", "strong"):
        if cfg.eval[field] not in names:
            raise ConfigError(f"config.eval.{field}={cfg.eval[field]!r} has no outcomes on the {ev.split} split; "
                              f"name an evaluated expert ({', '.join(names)})")
    return names


def evaluate(cfg, ds: Dataset, ev: EvalSet, router_p: dict[str, RouterP]) -> dict:
    """The report dict: per router its hull summaries, deployed and calibrated numbers.

    router_p holds "constant" (with_references adds it): the zero router's deployable form.
    """
    names = _check_pair(cfg, ds, ev)
    cols = ev.experts
    cost, outcome = ds.cost[np.ix_(ev.rows, cols)], ds.outcome[np.ix_(ev.rows, cols)]
    val = ds.rows("val")
    graded_val = val[ds.observed[np.ix_(val, cols)].all(1)]  # the oracle's p is the outcome itself
    oracle = (ds.outcome[ev.rows].astype(np.float64), ds.outcome[graded_val].astype(np.float64))
    budget_p = {"zero": router_p["constant"], **{n: v for n, v in router_p.items() if n != "constant"}, "oracle": oracle}
    fronts = {"zero": fr.experts_frontier(cost, outcome)}
    fronts.update({n: fr.sweep(p[:, cols], cost, outcome) for n, (p, _) in budget_p.items() if n != "zero"})
    rep = report_lib.build(ev.split, names, cost, outcome, fronts, cfg.eval.weak, cfg.eval.strong)
    goals = dep.targets(cost, names, cfg.eval.weak, cfg.eval.strong)
    for name, (p, p_val) in budget_p.items():
        c_val = ds.cost[np.ix_(graded_val if name == "oracle" else val, cols)]
        p, p_val = p[:, cols], p_val[:, cols]
        kind = policy.ZERO if name == "zero" else name
        rep["routers"][name]["deployed"] = {k: dep.deployed(p, cost, outcome, b, kind) for k, b in goals.items()}
        rep["routers"][name]["calibrated"] = {k: dep.calibrated(p_val, c_val, p, cost, outcome, b)
                                              for k, b in goals.items()}
    w, s = names.index(cfg.eval.weak), names.index(cfg.eval.strong)
    aw, as_ = outcome[:, w].mean(), outcome[:, s].mean()
    for name, (p, _) in budget_p.items():  # RouteLLM's units: thresholds on p_strong - p_weak, share of calls
        curve = fr.strong_share_curve(p[:, cols], outcome, w, s)
        rep["routers"][name]["strong_share"] = {"apgr": fr.apgr(curve, (0.0, aw), (1.0, as_)),
                                                **{f"cpt{x}": fr.cpt(curve, (0.0, aw), (1.0, as_), x / 100)
                                                   for x in (50, 80)}}
    rep["n_calibration"] = {"val": int(len(val)), "val_graded_for_oracle": int(len(graded_val))}
    rep["excluded_experts"] = ev.excluded
    return rep


def val_hook(ds: Dataset, weak: str, predict: Callable[[np.ndarray], np.ndarray]) -> Callable[..., dict]:
    """The training loop's VAL evaluation: hull AIQ (the checkpoint metric) and accuracy at the
    weak expert's cost, on the VAL questions graded by every evaluated expert."""
    ev = ds.eval_set("val")
    names = [ds.names[e] for e in ev.experts]
    cost, outcome = ds.cost[np.ix_(ev.rows, ev.experts)], ds.outcome[np.ix_(ev.rows, ev.experts)]

    def hook(*_) -> dict:
        summ = fr.summarize(fr.sweep(predict(ev.rows)[:, ev.experts], cost, outcome), names, cost, outcome)
        out = {"val_aiq": summ.aiq}
        if weak in names:
            out["val_acc_at_weak_cost"] = summ.acc_at_cost_of[weak]
        return out

    return hook
