"""Append-only store of graded expert calls, on tensorstore (zarr3), crash-safe.

One row per (query, expert) call: query id, expert, outcome in [0, 1], soft label (NaN when
absent), cost in USD, round, source. Columns are 1-D zarr3 arrays under `<dir>/columns/`;
`<dir>/manifest.json` names the experts and sources and holds the committed row count.

Why it survives a crash anywhere: an append (1) validates the whole batch, (2) writes rows
[n, n + k) past the committed count n, (3) replaces manifest.json atomically (write a temp
file, fsync, os.replace) with count n + k. Readers see only rows below the committed count,
so a writer killed in (2) leaves unreferenced bytes that the next append overwrites, and a
writer killed in (3) leaves either the old or the new manifest. Committed rows are never
rewritten.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import pathlib
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import tensorstore as ts

from leeroo_jax import fileio
from leeroo_jax.errors import DataError

COLUMNS = {  # name -> dtype
    "qid": np.uint64,  # int(id, 16) of the 16-hex-char question id
    "expert": np.int32,  # index into manifest["experts"]
    "outcome": np.float32,  # graded outcome in [0, 1]
    "soft": np.float32,  # soft label in [0, 1] (e.g. the gold letter's probability), NaN if none
    "cost": np.float64,  # USD for this call
    "round": np.int32,  # self-play round (0 = imported)
    "source": np.int32,  # index into manifest["sources"]
}
_CHUNK = 1 << 16


class Dense(NamedTuple):
    """outcome[Q, E] (mean over repeated calls), soft[Q, E] (NaN where none), observed[Q, E]."""

    outcome: np.ndarray
    soft: np.ndarray
    observed: np.ndarray



class RecordStore:
    """Open (or create) a store; `experts` fixes the expert vocabulary on creation."""

    def __init__(self, directory: str | os.PathLike, experts: Sequence[str] | None = None):
        self.dir = pathlib.Path(directory)
        self._manifest_path = self.dir / "manifest.json"
        if self._manifest_path.exists():
            try:
                self.manifest = json.loads(self._manifest_path.read_text())
                self.manifest["rows"] = int(self.manifest["rows"])
            except (ValueError, KeyError):
                raise DataError(f"{self._manifest_path} is unreadable; restore it from a backup or start a new store") from None
            if experts is not None and list(experts) != self.manifest["experts"][: len(experts)]:
                have, want = self.manifest["experts"], list(experts)
                missing, extra = [e for e in have if e not in want], [e for e in want if e not in have]
                raise DataError(f"{self.dir} holds the records of another pool (config.pool lacks {missing}, adds "
                                f"{extra}, or orders them differently); use the run's own pool or a new --config.run_name")
            create = False
        else:
            if experts is None:
                raise DataError(f"{self.dir} holds no record store; create one by passing the pool's expert names")
            self.manifest = {"experts": list(experts), "sources": [], "rows": 0}
            create = True
        self.dir.mkdir(parents=True, exist_ok=True)
        self._cols = {}
        for name, dtype in COLUMNS.items():
            spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str((self.dir / "columns" / name).resolve())}}
            if create or not (self.dir / "columns" / name / "zarr.json").exists():
                self._cols[name] = ts.open(spec, create=True, delete_existing=True, dtype=ts.dtype(np.dtype(dtype).name),
                                           shape=[0], chunk_layout=ts.ChunkLayout(write_chunk_shape=[_CHUNK])).result()
            else:
                self._cols[name] = ts.open(spec).result()
        if create:
            fileio.write_json(self._manifest_path, self.manifest)

    @property
    def experts(self) -> list[str]:
        return list(self.manifest["experts"])

    def __len__(self) -> int:
        return self.manifest["rows"]

    # --- writing ---------------------------------------------------------------------------

    def append(
        self,
        qids: Sequence[str],
        experts: Sequence[str],
        outcomes: Sequence[float],
        costs: Sequence[float],
        *,
        round: int = 0,
        source: str = "selfplay",
        soft: Sequence[float] | None = None,
        known_ids: Mapping[str, object] | set | None = None,
    ) -> int:
        """Validate then append k rows; returns the new committed row count. All or nothing."""
        k = len(qids)
        if not (len(experts) == len(outcomes) == len(costs) == k) or (soft is not None and len(soft) != k):
            raise DataError("append: qids, experts, outcomes, costs (and soft) must have the same length")
        if k == 0:
            return len(self)
        index = {n: i for i, n in enumerate(self.manifest["experts"])}
        bad = sorted({e for e in experts if e not in index})
        if bad:
            raise DataError(f"unknown expert {bad[0]!r} (store experts: {', '.join(index)}); add it to the pool first")
        if known_ids is not None:
            missing = [q for q in qids if q not in known_ids]
            if missing:
                raise DataError(f"question id {missing[0]} is not in the question set ({len(missing)} such rows); check the data source")
        try:
            qid_arr = np.array([int(q, 16) for q in qids], np.uint64)
        except (TypeError, ValueError):
            raise DataError("a question id is not 16 hex characters; use data.mmlu.question_id") from None
        out = np.asarray(outcomes, np.float64)
        bad_rows = np.flatnonzero(~((out >= 0) & (out <= 1)))  # catches NaN too
        if bad_rows.size:
            raise DataError(f"outcome {out[bad_rows[0]]} for {qids[bad_rows[0]]} is NaN or outside [0, 1]; grade outcomes in [0, 1]")
        soft_arr = np.full(k, np.nan, np.float32) if soft is None else np.asarray(soft, np.float64)
        bad_soft = np.flatnonzero(~np.isnan(soft_arr) & ~((soft_arr >= 0) & (soft_arr <= 1)))
        if bad_soft.size:
            raise DataError(f"soft label {soft_arr[bad_soft[0]]} for {qids[bad_soft[0]]} is outside [0, 1]")
        cost = np.asarray(costs, np.float64)
        if not np.all(np.isfinite(cost) & (cost >= 0)):
            raise DataError("a cost is negative or not finite; costs are USD per call")

        if source not in self.manifest["sources"]:
            self.manifest["sources"].append(source)
        rows = {
            "qid": qid_arr,
            "expert": np.array([index[e] for e in experts], np.int32),
            "outcome": out.astype(np.float32),
            "soft": soft_arr.astype(np.float32),
            "cost": cost,
            "round": np.full(k, round, np.int32),
            "source": np.full(k, self.manifest["sources"].index(source), np.int32),
        }
        n = len(self)
        for name, col in self._cols.items():
            if col.shape[0] < n + k:  # grow in whole chunks: fewer metadata writes
                col = self._cols[name] = col.resize(exclusive_max=[math.ceil((n + k) / _CHUNK) * _CHUNK]).result()
            col[n:n + k].write(rows[name]).result()
        self.manifest["rows"] = n + k
        fileio.write_json(self._manifest_path, self.manifest)  # the commit point
        return n + k

    # --- reading ---------------------------------------------------------------------------

    def read(self) -> dict[str, np.ndarray]:
        """All committed rows as numpy columns (qid as 16-hex-char strings)."""
        n = len(self)
        cols = {name: np.asarray(col[:n].read().result()) for name, col in self._cols.items()}
        cols["qid"] = np.array([f"{int(x):016x}" for x in cols["qid"]], dtype="U16")
        return cols

    def dense(self, qids: Sequence[str], experts: Sequence[str] | None = None) -> Dense:
        """outcome/soft/observed [Q, E] for the given question order and expert order."""
        experts = list(experts or self.experts)
        rows = self.read()
        q_index = {q: i for i, q in enumerate(qids)}
        store_to_e = np.array([experts.index(e) if e in experts else -1 for e in self.experts], np.int64)
        qi = np.array([q_index.get(q, -1) for q in rows["qid"]], np.int64)
        ei = store_to_e[rows["expert"]] if len(rows["expert"]) else np.zeros(0, np.int64)
        keep = (qi >= 0) & (ei >= 0)
        shape = (len(qids), len(experts))
        total, count = np.zeros(shape), np.zeros(shape)
        np.add.at(total, (qi[keep], ei[keep]), rows["outcome"][keep])
        np.add.at(count, (qi[keep], ei[keep]), 1)
        soft_total, soft_count = np.zeros(shape), np.zeros(shape)
        has_soft = keep & ~np.isnan(rows["soft"])
        np.add.at(soft_total, (qi[has_soft], ei[has_soft]), rows["soft"][has_soft])
        np.add.at(soft_count, (qi[has_soft], ei[has_soft]), 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            outcome = np.where(count > 0, total / count, 0.0).astype(np.float32)
            soft = np.where(soft_count > 0, soft_total / soft_count, np.nan).astype(np.float32)
        return Dense(outcome, soft, count > 0)


def read_outcomes_csv(path: str | os.PathLike) -> Iterable[tuple[str, str, float, float, str]]:
    """Rows (id, model, correct, prob or NaN, "file:line") of the graded-outcomes CSV."""
    path = pathlib.Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"id", "model", "correct"} <= set(reader.fieldnames):
            raise DataError(f"{path.name}: expected columns id, model, correct[, prob]; got {reader.fieldnames}")
        for n, row in enumerate(reader, 2):
            where = f"{path.name}:{n}"
            try:
                correct = float(row["correct"])
                prob = float(row["prob"]) if row.get("prob") not in (None, "") else math.nan
            except ValueError:
                raise DataError(f"{where}: correct/prob are not numbers; fix the row") from None
            yield row["id"], row["model"], correct, prob, where


def import_outcomes(store: RecordStore, path: str | os.PathLike, costs: Mapping[tuple[str, str], float],
                    known_ids: Mapping[str, object] | set, skip_unknown_experts: bool = False) -> int:
    """Append every graded answer of an outcomes CSV (correct -> outcome, prob -> soft label).

    `costs[(qid, expert)]` gives each call's cost. The whole file is validated before anything
    is written, so a bad row leaves the store untouched. skip_unknown_experts: drop the rows of
    experts outside the store's pool (training on a sub-pool) instead of failing on them.
    """
    rows = list(read_outcomes_csv(path))
    if skip_unknown_experts:
        rows = [r for r in rows if r[1] in store.experts]
    for qid, model, correct, prob, where in rows:
        if not 0 <= correct <= 1 or (not math.isnan(prob) and not 0 <= prob <= 1):
            raise DataError(f"{where}: outcome {correct} / prob {prob} outside [0, 1]; fix the row")
        if model not in store.experts:
            raise DataError(f"{where}: unknown expert {model!r}; add it to the pool (config.pool) first")
        if qid not in known_ids:
            raise DataError(f"{where}: question id {qid} is not in the question set; check the data source")
    qids, models, correct, prob, _ = zip(*rows) if rows else ((),) * 5
    return store.append(list(qids), list(models), list(correct), [costs[(q, m)] for q, m in zip(qids, models)],
                        round=0, source=f"import:{pathlib.Path(path).name}", soft=list(prob), known_ids=known_ids)
