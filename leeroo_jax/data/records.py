"""Append-only store of graded expert calls, on tensorstore (zarr3), crash-safe.

One row per (query, expert) call; the columns (`COLUMNS`, zarr3 arrays under `<dir>/columns/`):
qid, expert, outcome in [0, 1], soft label, cost in USD, round, source, and the live-call
details choice, letters [rows, 10], in_tokens, out_tokens, wall_s, grader. `<dir>/manifest.json`
names the experts, sources and graders and holds the committed row count. A row that lacks a
detail (imports; stores written before the detail columns existed) reads that column's fill
value: -1 for choice/tokens/grader, NaN for letters/wall_s. Opening an older store creates its
missing detail columns sized to its committed rows; they read as fill values (zarr3 `fill_value`).

Why it survives a crash anywhere: an append (1) validates the whole batch, (2) writes rows
[n, n + k) of every column (fill values included) past the committed count n, (3) replaces
manifest.json atomically (write a temp file, fsync, os.replace) with count n + k. Readers see
only rows below the committed count, so a writer killed in (2) leaves unreferenced bytes that
the next append overwrites, and a writer killed in (3) leaves either the old or the new
manifest. Committed rows are never rewritten. A column created on open is created whole at its
final size, so a kill there leaves no column (created again next time) or a complete one.
One writer at a time.
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

N_LETTERS = 10  # answer letters A..J
COLUMNS = {  # name -> (dtype, trailing shape, fill value; None: the column is required)
    "qid": (np.uint64, (), None),  # int(id, 16) of the 16-hex-char question id
    "expert": (np.int32, (), None),  # index into manifest["experts"]
    "outcome": (np.float32, (), None),  # graded outcome in [0, 1]
    "soft": (np.float32, (), None),  # soft label in [0, 1] (e.g. the gold letter's probability), NaN if none
    "cost": (np.float64, (), None),  # USD for this call
    "round": (np.int32, (), None),  # self-play round (0 = imported)
    "source": (np.int32, (), None),  # index into manifest["sources"]
    "choice": (np.int8, (), -1),  # option index the expert answered (0..9), -1 if none/unparseable
    "letters": (np.float32, (N_LETTERS,), np.nan),  # [rows, 10] P(letter A..J), NaN past the options/unknown
    "in_tokens": (np.int32, (), -1),  # input tokens of the call, -1 if unknown
    "out_tokens": (np.int32, (), -1),  # output tokens of the call, -1 if unknown
    "wall_s": (np.float32, (), np.nan),  # wall seconds attributed to the call, NaN if unknown
    # index into manifest["graders"] ("gold", "import", "judge:majority", ...); -1: not recorded
    # (rows written before graders were; `grader_names` reports them as "")
    "grader": (np.int32, (), -1),
}
_CHUNK = 1 << 16


class Dense(NamedTuple):
    """outcome[Q, E] (mean over repeated calls), soft[Q, E] (NaN where none), observed[Q, E]."""

    outcome: np.ndarray
    soft: np.ndarray
    observed: np.ndarray



class RecordStore:
    """Open (or create) a store. `experts` fixes the expert vocabulary on creation; on an existing
    store it is ignored (grow the vocabulary with `add_experts`; `dense` maps experts by name)."""

    def __init__(self, directory: str | os.PathLike, experts: Sequence[str] | None = None):
        self.dir = pathlib.Path(directory)
        self._manifest_path = self.dir / "manifest.json"
        if self._manifest_path.exists():
            try:
                self.manifest = json.loads(self._manifest_path.read_text())
                self.manifest["rows"] = int(self.manifest["rows"])
            except (ValueError, KeyError):
                raise DataError(f"{self._manifest_path} is unreadable; restore it from a backup or start a new store") from None
            self.manifest.setdefault("graders", [])  # stores written before graders were recorded
            create = False
        else:
            if experts is None:
                raise DataError(f"{self.dir} holds no record store; create one by passing the pool's expert names")
            self.manifest = {"experts": list(experts), "sources": [], "graders": [], "rows": 0}
            create = True
        self.dir.mkdir(parents=True, exist_ok=True)
        self._cols = {}
        # a missing column is created covering the committed rows (whole chunks, as `append` grows)
        size = math.ceil(len(self) / _CHUNK) * _CHUNK
        for name, (dtype, trail, fill) in COLUMNS.items():
            path = self.dir / "columns" / name
            spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path.resolve())}}
            if not create and (path / "zarr.json").exists():
                self._cols[name] = ts.open(spec).result()
                continue
            if fill is None and len(self):
                raise DataError(f"{self.dir} lacks its {name!r} column; restore the store from a backup or start a new one")
            kw = {} if fill is None else {"fill_value": np.array(fill, dtype)}  # zarr3 default fill is 0
            self._cols[name] = ts.open(spec, create=True, delete_existing=True, dtype=ts.dtype(np.dtype(dtype).name),
                                       shape=[size, *trail], **kw,
                                       chunk_layout=ts.ChunkLayout(chunk_shape=[_CHUNK, *trail])).result()  # one chunk, no shard index
        if create:
            fileio.write_json(self._manifest_path, self.manifest)

    @property
    def experts(self) -> list[str]:
        return list(self.manifest["experts"])

    def __len__(self) -> int:
        return self.manifest["rows"]

    # --- writing ---------------------------------------------------------------------------

    def add_experts(self, names: Sequence[str]) -> list[str]:
        """Append the names not yet in the vocabulary (committed atomically); returns it."""
        if isinstance(names, str) or not all(isinstance(e, str) and e for e in names):
            raise DataError("add_experts: pass a list of non-empty expert names")
        new = [e for e in dict.fromkeys(names) if e not in self.manifest["experts"]]
        if new:
            fileio.write_json(self._manifest_path, {**self.manifest, "experts": self.manifest["experts"] + new})
            self.manifest["experts"] = self.manifest["experts"] + new  # only once committed
        return self.experts

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
        choice: Sequence[int] | None = None,
        letters: Sequence[Sequence[float]] | np.ndarray | None = None,
        in_tokens: Sequence[int] | None = None,
        out_tokens: Sequence[int] | None = None,
        wall_s: Sequence[float] | None = None,
        grader: str = "gold",
    ) -> int:
        """Validate then append k rows; returns the new committed row count. All or nothing.

        Optional per-row details (None: the column's fill value): choice [k] in -1..9, letters
        [k, m <= 10] (padded with NaN to 10), in_tokens/out_tokens [k] >= -1, wall_s [k] >= 0 or
        NaN; grader names who graded the whole batch.
        """
        k = len(qids)
        given = dict(experts=experts, outcomes=outcomes, costs=costs, soft=soft, choice=choice, letters=letters,
                     in_tokens=in_tokens, out_tokens=out_tokens, wall_s=wall_s)
        for arg, v in given.items():
            if v is not None and len(v) != k:
                raise DataError(f"append: {arg} has {len(v)} entries for {k} qids; pass one per row")
        if not isinstance(grader, str) or not grader:
            raise DataError(f"append: grader={grader!r} is not a name; pass e.g. 'gold' or 'judge:majority'")
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
        details = _details(k, choice, letters, in_tokens, out_tokens, wall_s)

        if source not in self.manifest["sources"]:
            self.manifest["sources"].append(source)
        if grader not in self.manifest["graders"]:
            self.manifest["graders"].append(grader)
        rows = {
            "qid": qid_arr,
            "expert": np.array([index[e] for e in experts], np.int32),
            "outcome": out.astype(np.float32),
            "soft": soft_arr.astype(np.float32),
            "cost": cost,
            "round": np.full(k, round, np.int32),
            "source": np.full(k, self.manifest["sources"].index(source), np.int32),
            "grader": np.full(k, self.manifest["graders"].index(grader), np.int32),
            **details,
        }
        n = len(self)
        for name, col in self._cols.items():  # every column, so no stale uncommitted bytes get committed
            if col.shape[0] < n + k:  # grow in whole chunks: fewer metadata writes
                size = math.ceil((n + k) / _CHUNK) * _CHUNK
                col = self._cols[name] = col.resize(exclusive_max=[size] + [None] * (col.rank - 1)).result()
            col[n:n + k].write(rows[name]).result()
        self.manifest["rows"] = n + k
        fileio.write_json(self._manifest_path, self.manifest)  # the commit point
        return n + k

    # --- reading ---------------------------------------------------------------------------

    def read(self, columns: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Committed rows as numpy columns [n] (letters [n, 10]; qid as 16-hex-char strings)."""
        n = len(self)
        cols = {name: np.asarray(self._cols[name][:n].read().result()) for name in (columns or self._cols)}
        if "qid" in cols:
            cols["qid"] = np.array([f"{int(x):016x}" for x in cols["qid"]], dtype="U16")
        return cols

    def grader_names(self, grader: np.ndarray) -> np.ndarray:
        """read()["grader"] [n] as names; "" for rows written before graders were recorded."""
        return np.array([""] + self.manifest["graders"], dtype=object)[np.asarray(grader) + 1]

    def done(self, expert: str) -> set[str]:
        """Question ids with at least one committed record of `expert` (empty if it has none)."""
        if expert not in self.manifest["experts"]:
            return set()
        rows = self.read(["qid", "expert"])
        return set(rows["qid"][rows["expert"] == self.manifest["experts"].index(expert)].tolist())

    def dense(self, qids: Sequence[str], experts: Sequence[str] | None = None, upto_round: int | None = None) -> Dense:
        """outcome/soft/observed [Q, E] for the given question order and expert order, from
        the rows of rounds <= upto_round (every row when None)."""
        experts = list(experts or self.experts)
        rows = self.read(["qid", "expert", "outcome", "soft"] + (["round"] if upto_round is not None else []))
        q_index = {q: i for i, q in enumerate(qids)}
        store_to_e = np.array([experts.index(e) if e in experts else -1 for e in self.experts], np.int64)
        qi = np.array([q_index.get(q, -1) for q in rows["qid"]], np.int64)
        ei = store_to_e[rows["expert"]] if len(rows["expert"]) else np.zeros(0, np.int64)
        keep = (qi >= 0) & (ei >= 0)
        if upto_round is not None:
            keep &= rows["round"] <= upto_round
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


def _details(k: int, choice, letters, in_tokens, out_tokens, wall_s) -> dict[str, np.ndarray]:
    """The validated detail columns of a k-row batch, fill values where not given."""
    def floats(v, name):  # [k] float64, NaN where not given
        try:
            return np.full(k, np.nan) if v is None else np.asarray(v, np.float64)
        except (TypeError, ValueError):
            raise DataError(f"append: {name} holds a non-number; pass numbers, the fill value when unknown") from None

    def ints(v, name, lo, hi, dtype):
        arr = np.full(k, COLUMNS[name][2], np.float64) if v is None else floats(v, name)
        bad = np.flatnonzero(~((arr >= lo) & (arr <= hi) & (arr == np.round(arr))))  # NaN too
        if bad.size:
            raise DataError(f"append: {name} {arr[bad[0]]} (row {bad[0]}) is not an integer in {lo}..{hi}; "
                            f"pass {lo} when unknown")
        return arr.astype(dtype)

    if letters is None:
        let = np.full((k, N_LETTERS), np.nan)
    else:
        try:
            let = np.asarray(letters, np.float64)
        except (TypeError, ValueError):
            let = np.zeros(0)  # ragged rows: reported as a bad shape below
        if let.ndim != 2 or not 1 <= let.shape[1] <= N_LETTERS:
            raise DataError(f"append: letters has shape {let.shape}; pass [{k}, m <= {N_LETTERS}] probabilities")
        let = np.pad(let, ((0, 0), (0, N_LETTERS - let.shape[1])), constant_values=np.nan)
        bad = np.argwhere(~np.isnan(let) & ~((let >= 0) & (let <= 1)))
        if bad.size:
            raise DataError(f"append: letters[{bad[0][0]}, {bad[0][1]}] = {let[tuple(bad[0])]} is outside [0, 1]; "
                            "pass probabilities (NaN when unknown)")
    wall = floats(wall_s, "wall_s")
    bad = np.flatnonzero(~np.isnan(wall) & ~(np.isfinite(wall) & (wall >= 0)))
    if bad.size:
        raise DataError(f"append: wall_s {wall[bad[0]]} (row {bad[0]}) is negative or infinite; pass seconds (NaN when unknown)")
    return {"choice": ints(choice, "choice", -1, N_LETTERS - 1, np.int8), "letters": let.astype(np.float32),
            "in_tokens": ints(in_tokens, "in_tokens", -1, 2**31 - 1, np.int32),
            "out_tokens": ints(out_tokens, "out_tokens", -1, 2**31 - 1, np.int32), "wall_s": wall.astype(np.float32)}


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
    unpriced = sorted({r[1] for r in rows} - set(store.experts))
    if unpriced:  # every one at once: a user fixing a price table should not meet them one run at a time
        raise DataError(f"{pathlib.Path(path).name} grades {len(unpriced)} model(s) the pool does not price: "
                        f"{', '.join(map(repr, unpriced))}; add each to config.pool (or the price table) with "
                        "input_price/output_price, or set config.data.extra_experts=skip to leave them out")
    for qid, model, correct, prob, where in rows:
        if not 0 <= correct <= 1 or (not math.isnan(prob) and not 0 <= prob <= 1):
            raise DataError(f"{where}: outcome {correct} / prob {prob} outside [0, 1]; fix the row")
        if qid not in known_ids:
            raise DataError(f"{where}: question id {qid} is not in the question set; check the data source")
    qids, models, correct, prob, _ = zip(*rows) if rows else ((),) * 5
    return store.append(list(qids), list(models), list(correct), [costs[(q, m)] for q, m in zip(qids, models)],
                        round=0, source=f"import:{pathlib.Path(path).name}", soft=list(prob), known_ids=known_ids,
                        grader="import")
