"""What a trained run hands to deployment, fitted without TEST, and what it delivers on TEST.

  calibration_section  ECE of the orchestrator's p before and after its per-expert maps
                       (orchestrator/pcal.py, fitted on VAL by the train job)
  fit_policy           the router deployed per mean budget (orchestrator/policy.py), decided
                       on VAL's fully graded questions plus TRAIN's out-of-fold predictions
  section              the report's "deployment" part: per budget what the policy deployed
                       against the best affordable single expert (eval/guarantees.py)
"""

from __future__ import annotations

import numpy as np

from leeroo_jax.data.dataset import Dataset
from leeroo_jax.eval import guarantees
from leeroo_jax.jobs import crossfit
from leeroo_jax.orchestrator import pcal, policy
from leeroo_jax.training.checkpoint import Checkpointer


def calibration_section(ds: Dataset, ev, cal: pcal.Calibration, raw, p, raw_val, p_val, folds: int = 5) -> dict:
    """ECE of the orchestrator's p before and after calibration: on the evaluated split (out
    of sample), on VAL (where the maps were fitted), and per kind cross-fitted on VAL
    (`folds` folds by question id, each calibrated by maps fitted on the others): the
    evidence, without TEST, for which kind the run should use."""
    val = ds.rows("val")
    ece = lambda q, rows: pcal.ece(q, ds.outcome[rows], ds.observed[rows])  # noqa: E731
    per = {n: {"before": pcal.ece(raw[:, e], ds.outcome[ev.rows, e]), "after": pcal.ece(p[:, e], ds.outcome[ev.rows, e])}
           for e, n in ((e, ds.names[e]) for e in ev.experts)}
    out = {"kind": cal.kind, "split": ev.split, "ece_before": ece(raw, ev.rows), "ece_after": ece(p, ev.rows),
           "val_ece_before": ece(raw_val, val), "val_ece_after": ece(p_val, val), "per_expert": per}
    fold = crossfit.fold_of(ds, folds)[val]
    out["val_cross_fitted"] = {kind: ece(pcal.cross_fitted(kind, raw_val, ds.outcome[val], ds.observed[val], fold), val)
                               for kind in pcal.KINDS}
    return out


def fit_policy(cfg, ds: Dataset, val_p: dict[str, np.ndarray], oof: tuple | None = None) -> policy.Policy:
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


def out_of_fold(cfg, ds: Dataset, out) -> tuple | None:
    """(rows, {router: p}) of TRAIN's out-of-fold predictions for the policy
    (config.eval.policy_folds folds; frozen mode), the orchestrator trained as many steps as
    the run's best checkpoint; its p uncalibrated (`calibrated` applies the run's maps)."""
    k = int(cfg.eval.policy_folds)
    if k < 2 or cfg.train.mode != "frozen":
        return None
    ckpt = Checkpointer(out / "ckpt")
    steps = ckpt.best_step()
    ckpt.close()
    return crossfit.out_of_fold(cfg, ds, k, cfg.train.steps if steps is None else steps)


def calibrated(oof: tuple | None, cal: pcal.Calibration) -> tuple | None:
    """`oof` with the orchestrator's p through the run's calibration maps."""
    if oof is None:
        return None
    rows, p = oof
    return rows, {**p, "orchestrator": cal.apply(p["orchestrator"])}


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


def section(cfg, ds: Dataset, ev, pol: policy.Policy, test_p: dict[str, np.ndarray]) -> dict:
    """What the VAL-decided policy delivers on the evaluated split (eval/guarantees.py)."""
    cols = ev.experts
    names = [ds.names[e] for e in cols]
    cost, outcome = ds.cost[np.ix_(ev.rows, cols)], ds.outcome[np.ix_(ev.rows, cols)]
    budgets = report_budgets(cost, names, cfg.eval.strong) if cfg.eval.strong in names else {}
    sec = guarantees.section(pol, {n: q[:, cols] for n, q in test_p.items()}, cost, outcome, names, budgets)
    sec["checks"] = guarantees.checks(sec)
    return sec
