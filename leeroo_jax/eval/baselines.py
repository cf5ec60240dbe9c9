"""The data every evaluation shares, and the reference-router report (`--config.job=baselines`).

`prepare(cfg)` loads the questions, the pool and its cost matrix, imports the graded
outcomes into the run's record store (once), splits the questions, and embeds them with
the frozen backbone through the on-disk cache. `run(cfg)` evaluates the reference routers
on the configured split and writes report.json / report.md / frontier.png.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import numpy as np

from leeroo_jax import config as config_lib
from leeroo_jax.data import mmlu
from leeroo_jax.data.embed_cache import EmbeddingCache
from leeroo_jax.eval import frontier as fr
from leeroo_jax.eval import report as report_lib
from leeroo_jax.eval import routers
from leeroo_jax.experts.pool import Pool, query_text
from leeroo_jax.selfplay import records
from leeroo_jax.weights import assets

VENDORED_OUTCOMES = pathlib.Path(mmlu.__file__).parent / "assets" / "outcomes.csv.gz"


@dataclasses.dataclass
class Prepared:
    questions: list[mmlu.Question]
    pool: Pool
    cost: np.ndarray  # [Q, E] USD per query
    outcome: np.ndarray  # [Q, E] graded outcome (0 where unobserved)
    soft: np.ndarray  # [Q, E] soft label, NaN where none
    observed: np.ndarray  # [Q, E] bool
    split: np.ndarray  # [Q] of mmlu.Split values ("train" / "val" / "test")
    subjects: np.ndarray  # [Q]

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)


def load_records(cfg, questions, pool, cost) -> records.RecordStore:
    """The run's record store, created by importing the outcomes CSV on first use."""
    path = config_lib.run_dir(cfg) / "records"
    if (path / "manifest.json").exists():
        return records.RecordStore(path, pool.names)
    src = VENDORED_OUTCOMES if cfg.data.outcomes == "vendored" else pathlib.Path(cfg.data.outcomes)
    tmp = path.with_name("records.partial")
    store = records.RecordStore(tmp, pool.names)
    idx = {q.id: i for i, q in enumerate(questions)}
    name_idx = {n: j for j, n in enumerate(pool.names)}

    class _Costs(dict):  # cost of a CSV row, looked up in the [Q, E] matrix on demand
        def __missing__(self, key):
            return cost[idx[key[0]], name_idx[key[1]]]

    records.import_outcomes(store, src, _Costs(), idx, skip_unknown_experts=cfg.data.extra_experts == "skip")
    tmp.rename(path)  # the store appears whole or not at all
    return records.RecordStore(path, pool.names)


def embed(cfg, texts: list[str]) -> np.ndarray:
    """Frozen-backbone embeddings [N, D], cached on disk by backbone and text."""
    from leeroo_jax.orchestrator.backbone import Backbone
    from leeroo_jax.weights.loader import load

    path = config_lib.backbone_path(cfg.backbone.path)
    bb_cfg = cfg.backbone
    key = f"{pathlib.Path(path).name}|{bb_cfg.pooling}|{bb_cfg.max_length}"
    state: dict = {}

    def compute(missing):
        t0 = time.perf_counter()
        state["bb"] = Backbone(load(path), bb_cfg.pooling, bb_cfg.max_length, bb_cfg.batch_size)
        vecs = state["bb"].encode(missing)
        print(f"embedded {len(missing)} texts with {pathlib.Path(path).name} in {time.perf_counter() - t0:.0f}s")
        return vecs

    from leeroo_jax.weights.loader import read_hf_config, resolve

    dim = int(read_hf_config(resolve(path)).hidden_size)
    return EmbeddingCache(assets.cache_root() / "embeddings", key, dim).get(texts, compute)


def prepare(cfg) -> Prepared:
    questions = mmlu.load_questions(cfg.data.source)
    pool = Pool.from_config(cfg.pool)
    cost = pool.costs(questions)
    store = load_records(cfg, questions, pool, cost)
    dense = store.dense([q.id for q in questions], list(pool.names))
    full = dense.observed.all(axis=1)
    split = np.array([mmlu.split_of(q.id, bool(f)).value for q, f in zip(questions, full)])
    observed = dense.observed
    if cfg.data.probes:  # experts added from a few probes: only those outcomes are known (splits unchanged)
        observed = restrict_to_probes(observed, questions, list(pool.names), json.loads(pathlib.Path(cfg.data.probes).read_text()))
    return Prepared(questions, pool, cost, dense.outcome, dense.soft, observed, split,
                    np.array([q.subject for q in questions]))


def restrict_to_probes(observed: np.ndarray, questions, names: list[str], probes: dict[str, list[str]]) -> np.ndarray:
    """observed [Q, E] with expert e's column kept only on its probe question ids."""
    ids = {q.id: i for i, q in enumerate(questions)}
    out = observed.copy()
    for name, qids in probes.items():
        keep = np.zeros(len(questions), bool)
        keep[[ids[q] for q in qids]] = True
        out[:, names.index(name)] &= keep
    return out


def reference_routers(cfg, data: Prepared, eval_rows: np.ndarray, vecs: np.ndarray | None) -> dict[str, np.ndarray]:
    """p[Q_eval, E] of each reference router, fitted on TRAIN."""
    tr = data.rows("train")
    out = {
        "subject_prior": routers.subject_prior(data.subjects[tr], data.outcome[tr], data.observed[tr],
                                               data.subjects[eval_rows], cfg.eval.subject_strength),
    }
    if vecs is not None:
        for k in cfg.eval.knn_ks:
            out[f"knn{k}"] = routers.knn(vecs[tr], data.outcome[tr], data.observed[tr], vecs[eval_rows], int(k))
    return out


def evaluate(cfg, data: Prepared, eval_rows: np.ndarray, router_p: dict[str, np.ndarray]) -> dict:
    """Frontiers of the zero router, the given routers and the oracle -> the report dict."""
    cost, outcome = data.cost[eval_rows], data.outcome[eval_rows]
    fronts = {"zero": fr.experts_frontier(cost, outcome)}
    fronts.update({name: fr.sweep(p, cost, outcome) for name, p in router_p.items()})
    fronts["oracle"] = fr.sweep(outcome.astype(np.float64), cost, outcome)
    return report_lib.build(cfg.eval.split, list(data.pool.names), cost, outcome, fronts, cfg.eval.weak, cfg.eval.strong)


def run(cfg) -> str:
    data = prepare(cfg)
    eval_rows = data.rows(cfg.eval.split)
    vecs = embed(cfg, [query_text(q) for q in data.questions]) if len(cfg.eval.knn_ks) else None
    rep = evaluate(cfg, data, eval_rows, reference_routers(cfg, data, eval_rows, vecs))
    md = report_lib.write(rep, config_lib.run_dir(cfg), at=cfg.eval.weak, reach=cfg.eval.strong)
    print(md)
    print(f"wrote {config_lib.run_dir(cfg)}/report.json, report.md, frontier.png")
    return md
