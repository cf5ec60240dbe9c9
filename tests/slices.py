"""Small slices of the real data (questions + graded outcomes) for jobs that must run in seconds."""

from __future__ import annotations

import collections
import gzip
import json
import pathlib

from leeroo_jax.data import mmlu, splits
from leeroo_jax.data.dataset import VENDORED_OUTCOMES

N_EXPERTS = 9


def _write_slice(out: pathlib.Path, questions: list[str], rows: dict[str, list[str]], header: str) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "questions.jsonl").write_text("".join(questions))
    ids = [json.loads(q)["id"] for q in questions]
    (out / "outcomes.csv").write_text(header + "".join(line for i in ids for line in rows[i]))
    return [f"--config.data.source={out / 'questions.jsonl'}", f"--config.data.outcomes={out / 'outcomes.csv'}"]


def real_slice(root: pathlib.Path, per_split: dict[str, int]) -> tuple[list[str], list[str]]:
    """A slice of the real data: the first per_split[s] questions of each split graded by all 9
    experts, with their outcome rows. Returns the --config.data.* args of the slice and of its
    TRAIN questions alone."""
    rows: dict[str, list[str]] = collections.defaultdict(list)
    with gzip.open(VENDORED_OUTCOMES, "rt") as f:
        header = f.readline()
        for line in f:
            rows[line.split(",", 1)[0]].append(line)
    graded = {q for q, r in rows.items() if len({line.split(",")[1] for line in r}) == N_EXPERTS}
    taken: collections.Counter = collections.Counter()
    picked = []
    with gzip.open(mmlu.DEFAULT_PATH, "rt") as f:
        for line in f:
            qid = json.loads(line)["id"]
            split = splits.split_of(qid).value
            if qid in graded and taken[split] < per_split[split]:
                taken[split] += 1
                picked.append(line)
            if taken == per_split:
                break
    assert taken == per_split, taken
    full = _write_slice(root / "full", picked, rows, header)
    train_only = [q for q in picked if splits.split_of(json.loads(q)["id"]) == splits.Split.TRAIN]
    assert len(train_only) == per_split["train"] and all(int(json.loads(q)["id"], 16) % 10 >= 4 for q in train_only)
    return full, _write_slice(root / "train_only", train_only, rows, header)




def assert_close_trees(a, b, atol: float = 1e-6, path: str = "") -> None:
    """Every number of two JSON trees within atol, everything else equal (a job's report as N
    processes against 1)."""
    import pytest

    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            assert_close_trees(a[k], b[k], atol, f"{path}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close_trees(x, y, atol, f"{path}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, abs=atol), path
    else:
        assert a == b, path
