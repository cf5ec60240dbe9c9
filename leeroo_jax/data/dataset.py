"""The one dataset object every job reads: questions + pool + graded records + splits (+ embeddings).

    ds = dataset.load(cfg, records_dir, embed)   # embed: texts -> [N, D], e.g. orchestrator.backbone.Embedder

`load` reads the questions, builds the pool and its cost matrix, imports the graded outcomes
into the run's record store (once; later runs read the store), splits the questions by id
alone (splits.py), and embeds them through `embed` when given. Nothing here knows about
models: the embedding function comes from the caller, so the import graph runs one way.

Which questions a split *evaluates* a pool on is `eval_set`: the split's questions graded by
every pool expert that has outcomes on that split. An expert with no outcomes there yet (a
live model about to be scored) is left out of the evaluation and named, instead of emptying it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
from typing import Callable, Sequence

import numpy as np
from absl import logging
from etils import epath

from leeroo_jax import distributed
from leeroo_jax.data import mmlu, records, splits
from leeroo_jax.data.pool import Pool, query_text
from leeroo_jax.errors import DataError

VENDORED_OUTCOMES = pathlib.Path(mmlu.__file__).parent / "assets" / "outcomes.csv.gz"


@dataclasses.dataclass
class EvalSet:
    """The questions and experts a split evaluates on."""

    split: str
    rows: np.ndarray  # [N] question rows, every one graded by every expert below
    experts: np.ndarray  # [E'] pool indices of the evaluated experts
    excluded: list[str]  # pool experts with no outcome on this split (not evaluated)


@dataclasses.dataclass
class Dataset:
    questions: list[mmlu.Question]
    pool: Pool
    cost: np.ndarray  # [Q, E] USD per query
    outcome: np.ndarray  # [Q, E] graded outcome (0 where unobserved)
    soft: np.ndarray  # [Q, E] soft label, NaN where none
    observed: np.ndarray  # [Q, E] bool
    split: np.ndarray  # [Q] "train" / "val" / "test", from the question id alone
    subjects: np.ndarray  # [Q]
    vecs: np.ndarray | None = None  # [Q, D] frozen-backbone embeddings, when loaded with `embed`

    @property
    def names(self) -> list[str]:
        return list(self.pool.names)

    @property
    def texts(self) -> list[str]:
        return [query_text(q) for q in self.questions]

    def rows(self, split: str) -> np.ndarray:
        """Every question of `split`, graded or not."""
        return np.flatnonzero(self.split == split)

    def eval_set(self, split: str) -> EvalSet:
        rows = self.rows(split)
        has = self.observed[rows].any(0)  # [E] experts with some outcome on the split
        experts = np.flatnonzero(has)
        full = rows[self.observed[np.ix_(rows, experts)].all(1)] if len(experts) else rows[:0]
        if not len(full):
            raise DataError(f"the {split} split has no question graded by every evaluated expert "
                            f"({len(rows)} questions, {len(experts)} experts with outcomes there); "
                            "grade the pool on shared questions or evaluate another split")
        return EvalSet(split, full, experts, [self.names[e] for e in np.flatnonzero(~has)])


def open_records(cfg, records_dir: pathlib.Path, questions, pool: Pool, cost: np.ndarray | None = None
                 ) -> records.RecordStore:
    """The run's record store, created by importing the outcomes CSV on first use.

    The store and the pool must agree: every recorded expert of the pool needs its records
    there (else the store was written for another pool); a live expert the store has never
    seen joins its vocabulary with no records yet, and the scoring job fills them in.
    Every process of a job calls it: process 0 imports, the others then open what it wrote.
    """
    return distributed.main_first("records", lambda: _open_records(cfg, pathlib.Path(records_dir), questions, pool,
                                                                    cost))


def _open_records(cfg, records_dir: pathlib.Path, questions, pool: Pool, cost: np.ndarray | None
                  ) -> records.RecordStore:
    if not (records_dir / "manifest.json").exists():
        _import(records_dir, cfg.data.outcomes, questions, pool, pool.costs(questions) if cost is None else cost,
                cfg.data.extra_experts == "skip")
    store = records.RecordStore(records_dir)
    lacking = [e.name for e in pool.experts if not e.live and e.name not in store.experts]
    if lacking:
        raise DataError(f"{records_dir} holds the records of another pool: it has none of recorded expert(s) "
                        f"{', '.join(lacking)}; point config.data.records at this pool's store or use a new run_name")
    store.add_experts([e.name for e in pool.experts if e.live])
    return store


def _import(records_dir: pathlib.Path, outcomes: str, questions, pool: Pool, cost: np.ndarray, skip_unknown: bool) -> None:
    src = VENDORED_OUTCOMES if outcomes == "vendored" else pathlib.Path(outcomes)
    if not src.exists():
        raise DataError(f"config.data.outcomes={outcomes!r} does not exist; pass a graded-outcomes CSV or 'vendored'")
    tmp = records_dir.with_name(records_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)  # a crashed import starts over
    store = records.RecordStore(tmp, pool.names)
    idx = {q.id: i for i, q in enumerate(questions)}
    name_idx = {n: j for j, n in enumerate(pool.names)}

    class _Costs(dict):  # cost of a CSV row, looked up in the [Q, E] matrix on demand
        def __missing__(self, key):
            return cost[idx[key[0]], name_idx[key[1]]]

    try:
        records.import_outcomes(store, src, _Costs(), idx, skip_unknown_experts=skip_unknown)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a refused CSV leaves nothing behind
        raise
    graded = {store.experts[i] for i in np.unique(store.read(["expert"])["expert"])}
    ungraded = [e.name for e in pool.experts if not e.live and e.name not in graded]
    if ungraded:  # allowed (an expert graded later, by probes or self-play), but a misspelt name looks the same
        logging.warning("%s grades none of pool expert(s) %s; they stay out of evaluation until graded (check the "
                        "names against the CSV's if that is not intended)", src.name, ", ".join(ungraded))
    os.replace(tmp, records_dir)  # the store appears whole or not at all


def restrict_to_probes(observed: np.ndarray, questions, names: list[str], probes: dict[str, list[str]]) -> np.ndarray:
    """observed [Q, E] with expert e's column kept only on its probe question ids."""
    ids = {q.id: i for i, q in enumerate(questions)}
    out = observed.copy()
    for name, qids in probes.items():
        keep = np.zeros(len(questions), bool)
        keep[[ids[q] for q in qids]] = True
        out[:, names.index(name)] &= keep
    return out


def load(cfg, records_dir: str | os.PathLike, embed: Callable[[Sequence[str]], np.ndarray] | None = None,
         extra_questions: Sequence[mmlu.Question] = ()) -> Dataset:
    """The dataset of `cfg.data` and `cfg.pool`, its records kept in `records_dir`;
    extra_questions (generated by self-play) join the source's, after them."""
    questions = mmlu.load_questions(cfg.data.source)
    if not questions:
        raise DataError(f"config.data.source={cfg.data.source!r} holds no questions; pass a non-empty question set")
    have = {q.id for q in questions}
    questions = questions + [q for q in extra_questions if q.id not in have]
    pool = Pool.from_config(cfg.pool)
    cost = pool.costs(questions)
    store = open_records(cfg, records_dir, questions, pool, cost)
    dense = store.dense([q.id for q in questions], list(pool.names))
    observed = dense.observed
    if cfg.data.probes:  # experts added from a few probes: only those outcomes are known (splits unchanged)
        probes = json.loads(epath.Path(cfg.data.probes).read_text())  # in the run directory: maybe a bucket
        observed = restrict_to_probes(observed, questions, list(pool.names), probes)
    ds = Dataset(questions, pool, cost, dense.outcome, dense.soft, observed,
                 splits.split_array([q.id for q in questions]), np.array([q.subject for q in questions]))
    if embed is not None:  # a coordinated embedder shares the work over the processes; any other runs in
        # process 0 first (it fills the cache), then in the others (they read it)
        vecs = embed(ds.texts) if getattr(embed, "coordinated", False) else distributed.main_first(
            "embed", lambda: embed(ds.texts))
        ds.vecs = np.asarray(vecs, np.float32)
    return ds
