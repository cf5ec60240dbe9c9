"""The dataset: splits by question id alone, evaluation sets that survive a growing pool, and
training that never reads a VAL or TEST outcome. Golden numbers come from the CSV and the split
rule of the data README, recomputed here."""

import csv
import dataclasses
import gzip
import json
from collections import defaultdict

import numpy as np
import pytest

from configs import tiny
from leeroo_jax.data import dataset, splits
from leeroo_jax.jobs import train as train_job
from leeroo_jax.training import trainer as trainer_lib

NEW = "acme/new-model-7b"


def _rule(qid: str) -> str:  # the data README's split rule, written out again
    r = int(qid, 16) % 10
    return "test" if r <= 2 else "val" if r == 3 else "train"


def _graded_by_all():
    graded = defaultdict(set)
    with gzip.open(dataset.VENDORED_OUTCOMES, "rt") as f:
        for row in csv.DictReader(f):
            graded[row["id"]].add(row["model"])
    return {q for q, m in graded.items() if len(m) == 9}


def _cfg(tmp_path, name, extra_expert=False, outcomes="vendored"):
    cfg = tiny.get_config()
    cfg.output_root, cfg.run_name, cfg.data.outcomes = str(tmp_path), name, outcomes
    if extra_expert:
        cfg.pool = list(cfg.pool) + [dict(name=NEW, input_price=0.1, output_price=0.1)]
    return cfg


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    return dataset.load(_cfg(out, "base"), out / "base" / "records")


def test_splits_follow_the_id_rule(base):
    assert [splits.split_of(q.id).value for q in base.questions] == [_rule(q.id) for q in base.questions]
    assert list(base.split) == [_rule(q.id) for q in base.questions]
    ev = base.eval_set("test")
    graded = _graded_by_all()
    want = sorted(i for i, q in enumerate(base.questions) if q.id in graded and _rule(q.id) == "test")
    assert list(ev.rows) == want and len(want) == 1912 and ev.excluded == []


def test_an_expert_graded_on_another_subset_keeps_every_split(base, tmp_path):
    """The new expert is graded on half of the questions (its own subset): no question moves, and
    evaluation narrows to the questions every evaluated expert answered."""
    mine = {q.id for q in base.questions if int(q.id, 16) % 7 < 3}
    path = tmp_path / "outcomes.csv"
    with gzip.open(dataset.VENDORED_OUTCOMES, "rt") as f:
        text = f.read()
    rows = "".join(f"{q},{NEW},{int(q, 16) % 2},\n" for q in sorted(mine))
    path.write_text(text + rows)
    ds = dataset.load(_cfg(tmp_path, "subset", True, str(path)), tmp_path / "subset" / "records")
    np.testing.assert_array_equal(ds.split, base.split)
    ev = ds.eval_set("test")
    want = [r for r in base.eval_set("test").rows if base.questions[r].id in mine]
    assert list(ev.rows) == want and 0 < len(want) < 1912 and ev.excluded == []
    assert ds.observed[ev.rows].all()


def test_an_expert_without_outcomes_keeps_splits_and_the_train_job_runs(base, tmp_path):
    cfg = _cfg(tmp_path, "grown", extra_expert=True)
    cfg.train.steps, cfg.train.eval_every = 10, 10
    train_job.run(cfg)
    rep = json.loads((tmp_path / "grown" / "report.json").read_text())
    assert rep["n_questions"] == 1912 and rep["excluded_experts"] == [NEW] and NEW not in rep["experts"]
    assert "Not evaluated (no outcomes on this split): " + NEW in (tmp_path / "grown" / "report.md").read_text()
    for name in ("orchestrator", "subject_prior", "oracle", "zero"):
        assert {"deployed", "calibrated"} <= set(rep["routers"][name])
    ds = dataset.load(cfg, tmp_path / "grown" / "records")
    np.testing.assert_array_equal(ds.split, base.split)
    assert not ds.observed[:, -1].any()


def test_training_never_reads_val_or_test_outcomes(base):
    """Scramble every VAL and TEST outcome (and which pairs are observed): the side features and
    the training batches, the only things a training step reads, stay identical."""
    rng = np.random.default_rng(0)
    held = base.split != "train"
    vecs = np.random.default_rng(1).normal(size=(len(base.questions), 8)).astype(np.float32)
    mine = dataclasses.replace(base, vecs=vecs)
    other = dataclasses.replace(
        mine, outcome=np.where(held[:, None], rng.integers(0, 2, base.outcome.shape), base.outcome).astype(np.float32),
        observed=np.where(held[:, None], rng.uniform(size=base.observed.shape) < 0.5, base.observed))
    cfg = tiny.get_config()
    a, b = trainer_lib.build(cfg, mine), trainer_lib.build(cfg, other)
    np.testing.assert_array_equal(a.side, b.side)
    assert not np.array_equal(a.target[held], b.target[held])  # the scramble did change them
    for s in range(5):
        ba, bb = a.batch(s), b.batch(s)
        for k in ba:
            np.testing.assert_array_equal(np.asarray(ba[k]), np.asarray(bb[k]))
