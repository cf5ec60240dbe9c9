"""Per-pool tuning (`--config.train.tune=true`): a small sweep, scored without TEST, then the
winner is trained as usual.

The default recipe was chosen on one pool; another pool (two experts, seven equal-priced ones,
another price table) can want another head. Each trial is a frozen-mode head trained in
memory (crossfit.fit_in_memory) and scored by hull AIQ on held-out questions:

  VAL         when VAL has at least `tune_min_val` questions graded by every expert: trained on
              TRAIN, scored on VAL at its last step;
  k-fold      otherwise: TRAIN's out-of-fold predictions (crossfit.py, `tune_folds` folds),
              pooled into one AIQ; VAL is too small to rank trials apart from noise.

The sweep is a coordinate search from the config's own values: each axis in `AXES` in turn,
every value tried with the others at the best so far, the best kept. Then the winner under
`SEEDS` more seeds (the seed-to-seed spread, shown beside the sweep's differences, never
chosen), and the winner as an ensemble of 1 + len(SEEDS) heads (config.train.ensemble,
averaged in p), trained and scored like any trial and kept if it scores higher. The table of every trial goes to tune.json / tune.md in the run directory; the
returned overrides are what the main run trains with.
"""

from __future__ import annotations

import copy
import json
import time

import numpy as np

from leeroo_jax import distributed, fileio
from leeroo_jax.data.dataset import Dataset
from leeroo_jax.eval import frontier as fr
from leeroo_jax.jobs import crossfit
from leeroo_jax.training.trainer import Trainer, make_mesh, side_features

# axis -> the values tried; "side" names a (side_knn, side_prior) pair
AXES = {
    "hidden": (32, 64, 128),
    "steps": (150, 300, 600),
    "dropout": (0.1, 0.3, 0.5),
    "weight_decay": (0.01, 0.1, 0.3),
    "side": ("knn+prior", "prior", "none"),
    "anchor": ("", "prior"),
}
SIDES = {"knn+prior": ((20, 100), True), "prior": ((), True), "none": ((), False)}
SEEDS = (1, 2)


def _side_name(cfg) -> str:
    for name, (ks, prior) in SIDES.items():
        if tuple(cfg.train.side_knn) == ks and bool(cfg.train.side_prior) == prior:
            return name
    return "custom"


def _apply(cfg, trial: dict):
    c = copy.deepcopy(cfg)
    for k, v in trial.items():
        if k == "side":
            c.train.side_knn, c.train.side_prior = SIDES[v]
        else:
            c.train[k] = v
    if not c.train.side_prior and c.train.anchor == "prior":  # an anchor needs its side feature
        c.train.anchor = ""
    return c


def _aiq(ds: Dataset, rows: np.ndarray, experts: np.ndarray, p: np.ndarray) -> float:
    cost, outcome = ds.cost[np.ix_(rows, experts)], ds.outcome[np.ix_(rows, experts)]
    return fr.summarize(fr.sweep(p[:, experts], cost, outcome), [ds.names[e] for e in experts], cost, outcome).aiq


class Scorer:
    """Scores a config by held-out AIQ; caches side features per (side setting, fold)."""

    def __init__(self, cfg, ds: Dataset):
        self.ds, self.mesh = ds, make_mesh(cfg)
        vev = ds.eval_set("val")
        self.k = int(cfg.train.tune_folds)
        self.mode = "val" if len(vev.rows) >= cfg.train.tune_min_val or self.k < 2 else f"{self.k}-fold"
        if self.mode == "val":
            self.rows, self.experts = vev.rows, vev.experts
            self.views = [(ds, vev.rows)]
        else:
            self.rows, self.experts, self.views = crossfit.folds(ds, self.k)
        self._side: dict = {}

    def predict(self, cfg) -> np.ndarray:
        """p [len(self.rows), E] of a frozen-mode head under cfg, each row held out."""
        out = []
        for i, (view, held) in enumerate(self.views):
            key = (tuple(cfg.train.side_knn), bool(cfg.train.side_prior), i)
            if key not in self._side:
                self._side[key] = side_features(cfg, view)
            trainer = crossfit.fit_in_memory(Trainer(cfg, view, self._side[key], self.mesh), cfg.train.steps)
            out.append(trainer.predict(held))
        return np.concatenate(out)

    def aiq(self, p: np.ndarray) -> float:
        return _aiq(self.ds, self.rows, self.experts, p)


def sweep(cfg, ds: Dataset) -> tuple[dict, list[dict], Scorer]:
    """(the winning overrides, every trial as {trial, label, aiq, seconds}, the scorer)."""
    scorer = Scorer(cfg, ds)
    table: list[dict] = []

    def run(trial: dict, label: str = "") -> tuple[float, np.ndarray]:
        t0 = time.perf_counter()
        p = scorer.predict(_apply(cfg, trial))
        aiq = scorer.aiq(p)
        table.append({"trial": dict(trial), "label": label, "aiq": aiq, "seconds": time.perf_counter() - t0})
        if distributed.is_main_process():
            print(f"tune {len(table):2d} ({scorer.mode}): AIQ {aiq:.4f} in {table[-1]['seconds']:.0f} s  {trial}", flush=True)
        return aiq, p

    t = cfg.train
    best = {"hidden": t.hidden, "steps": t.steps, "dropout": t.dropout, "weight_decay": t.weight_decay,
            "side": _side_name(cfg), "anchor": t.anchor}
    if best["side"] == "custom":
        best.pop("side")
    best_aiq, _ = run(best, "config")
    tried = [best]
    for axis, values in AXES.items():
        if axis not in best:
            continue
        for v in values:
            trial = {**best, axis: v}
            if trial.get("anchor") == "prior" and not SIDES[trial.get("side", "prior")][1]:
                trial["anchor"] = ""  # no prior feature to anchor at: _apply would train the free head again
            if trial in tried:
                continue
            tried.append(trial)
            aiq, _ = run(trial)
            if aiq > best_aiq:
                best, best_aiq = trial, aiq
    for s in SEEDS:  # how much of the sweep's differences one seed moves: shown, never chosen
        run({**best, "seed": s}, f"seed {s}")
    trial = {**best, "ensemble": 1 + len(SEEDS)}  # the winner as an ensemble, trained as the train job would
    aiq, _ = run(trial, "ensemble")
    if aiq > best_aiq:
        best = trial
    return best, table, scorer


def write(out, best: dict, table: list[dict], mode: str, rows: int) -> None:
    """tune.json and tune.md in the run directory (process 0)."""
    if not distributed.is_main_process():
        return
    fileio.write_json(out / "tune.json", {"mode": mode, "rows": rows, "best": best, "trials": table}, indent=1)
    keys = list(AXES) + ["seed", "ensemble"]
    lines = [f"# Tuning: hull AIQ on {rows} held-out questions ({mode})", "",
             "| " + " | ".join(keys) + " | AIQ | s | |", "|" + "---|" * (len(keys) + 3)]
    for r in table:
        mark = "**chosen**" if r["trial"] == best else r["label"]
        lines.append("| " + " | ".join(str(r["trial"].get(k, "")) for k in keys) +
                     f" | {r['aiq']:.4f} | {r['seconds']:.1f} | {mark} |")
    fileio.write_text(out / "tune.md", "\n".join(lines) + "\n")


def saved_config(cfg, out):
    """cfg with the winner of the sweep already in `out`/tune.json (None if there is none)."""
    path = out / "tune.json"
    if not path.exists():
        return None
    return _apply(cfg, json.loads(path.read_text())["best"])


def tuned_config(cfg, ds: Dataset, out):
    """cfg with the sweep's winner applied (the table written to `out`)."""
    best, table, scorer = sweep(cfg, ds)
    write(out, best, table, scorer.mode, len(scorer.rows))
    return _apply(cfg, best)
