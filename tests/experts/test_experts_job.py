"""The live-expert scoring job on a slice of real MMLU with the real SmolLM2 weights: what it
records, that a rerun records nothing twice, that kill -9 loses at most the batch in flight,
and that training reads its records with no conversion step."""

from __future__ import annotations

import copy
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from configs import tiny
from leeroo_jax.data import mmlu
from leeroo_jax.data.records import RecordStore
from leeroo_jax.errors import ConfigError, DataError, WeightsError
from leeroo_jax.jobs import experts, train
from slices import real_slice

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Job subprocesses run on one CPU device: 8 fake devices on 2 cores only slow a 135M model down
# (the sharded path is tested in test_live.py on a data x fsdp x tensor mesh).
ONE_DEVICE = {**os.environ, "XLA_FLAGS": ""}
PER_SPLIT = {"train": 12, "val": 4, "test": 8}
LIVE = ("smollm2-135m-0shot", "smollm2-135m-5shot")


def _args_to_paths(args: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--config.data.").split("=", 1) for a in args)


def _cfg(root, data_args, **experts_kw):
    cfg = tiny.get_config("live")
    cfg.output_root = str(root)
    cfg.job = "experts"
    for k, v in _args_to_paths(data_args).items():
        cfg.data[k] = v
    cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = 2, 2, 2  # weights sharded, rows split over data x fsdp
    for k, v in experts_kw.items():
        cfg.experts[k] = v
    return cfg


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return real_slice(tmp_path_factory.mktemp("slice"), PER_SPLIT)[0]


def _score_cli(root, data, *extra) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "leeroo_jax.score", "--config=configs/tiny.py:live", "--config.job=experts",
           f"--config.output_root={root}", *data, *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=ONE_DEVICE)


@pytest.fixture(scope="module")
def scored(tmp_path_factory, data, smollm2_path):
    """The job through its CLI; (the same config in this process, its summary, the run dir)."""
    root = tmp_path_factory.mktemp("runs")
    proc = _score_cli(root, data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = _cfg(root, data)
    return cfg, json.loads((root / cfg.run_name / "experts_summary.json").read_text()), root / cfg.run_name


def _live_rows(store: RecordStore) -> dict[str, np.ndarray]:
    rows = store.read()
    keep = np.isin(rows["expert"], [store.experts.index(n) for n in LIVE])
    return {k: v[keep] for k, v in rows.items()}


def test_every_answer_is_recorded_with_its_grade_distribution_tokens_and_cost(scored, data):
    cfg, summary, run = scored
    questions = {q.id: q for q in mmlu.load_questions(_args_to_paths(data)["source"])}
    store = RecordStore(run / "records")
    rows = _live_rows(store)
    names = np.array(store.experts)[rows["expert"]]
    for name in LIVE:  # each question once per live expert
        assert sorted(rows["qid"][names == name]) == sorted(questions)
    gold = np.array([questions[q].answer for q in rows["qid"]])
    assert (rows["outcome"] == (rows["choice"] == gold)).all()  # graded against the gold letter
    assert (rows["choice"] == np.nanargmax(rows["letters"], 1)).all()
    np.testing.assert_allclose(np.nansum(rows["letters"], 1), 1, atol=1e-5)
    assert np.isnan(rows["letters"][:, 4:]).all()  # four options, four letters
    np.testing.assert_allclose(rows["soft"], rows["letters"][np.arange(len(gold)), gold], rtol=1e-6)
    assert (rows["out_tokens"] == 1).all() and (rows["wall_s"] > 0).all()
    np.testing.assert_allclose(rows["cost"], (rows["in_tokens"] + 1) * 0.10 / 1e6)
    assert set(store.grader_names(rows["grader"])) == {"gold"}
    by = {(n, q): t for n, q, t in zip(names, rows["qid"], rows["in_tokens"])}
    assert all(by[(LIVE[1], q)] > by[(LIVE[0], q)] + 200 for q in questions)  # 5 exemplars ride in the prompt
    for name in LIVE:
        s = summary[name]
        mine = names == name
        assert s["recorded"] == s["answered_now"] == len(questions) and s["unparsed_now"] == 0
        assert s["accuracy"] == pytest.approx(np.mean(rows["choice"][mine] == gold[mine]))
        assert s["tokens_per_s"] > 0 and s["usd_total"] == pytest.approx(rows["cost"][mine].sum())
    assert "| smollm2-135m-5shot | mmlu_5shot |" in (run / "experts_summary.md").read_text()


def test_rerun_records_nothing_twice(scored):
    cfg, _, run = scored
    before = len(RecordStore(run / "records"))
    again = experts.run(cfg)  # in this process, on its 8 devices: nothing left to answer
    assert len(RecordStore(run / "records")) == before
    assert all(again[n]["answered_now"] == 0 for n in LIVE)


def test_training_reads_the_scored_records_with_no_conversion(scored):
    cfg, _, run = scored
    cfg = tiny.get_config("live")
    cfg.output_root, cfg.data = scored[0].output_root, scored[0].data
    cfg.train.steps, cfg.train.eval_every, cfg.train.batch_size = 10, 10, 8
    train.run(cfg)
    rep = json.loads((run / "report.json").read_text())
    assert set(LIVE) <= set(rep["experts"]) and rep["excluded_experts"] == []
    assert rep["n_questions"] == PER_SPLIT["test"]


def test_kill_9_then_rerun_loses_and_duplicates_nothing(tmp_path, data, smollm2_path):
    cmd = [sys.executable, "-m", "leeroo_jax.score", "--config=configs/tiny.py:live", "--config.job=experts",
           f"--config.output_root={tmp_path}", "--config.experts.batch_size=2", *data]
    manifest = tmp_path / "tiny_live" / "records" / "manifest.json"
    imported = sum(PER_SPLIT.values()) * 9
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ONE_DEVICE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # kill right after the first live batch commits
        if manifest.exists() and json.loads(manifest.read_text())["rows"] > imported:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = json.loads(manifest.read_text())["rows"] - imported
    assert 0 < partial < 2 * sum(PER_SPLIT.values())
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=ONE_DEVICE)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _live_rows(RecordStore(tmp_path / "tiny_live" / "records"))
    pairs = list(zip(rows["expert"], rows["qid"]))
    assert len(pairs) == len(set(pairs)) == 2 * sum(PER_SPLIT.values())


@pytest.mark.parametrize("change, error, msg", [
    (lambda c: c.pool.__setitem__(-1, dict(c.pool[-1], checkpoint="/nonexistent/ckpt")), WeightsError, "does not exist"),
    (lambda c: c.pool.__setitem__(-1, dict(c.pool[-1], checkpoint="minilm")), ConfigError, "not a decoder"),
    (lambda c: setattr(c, "pool", c.pool[:9]), ConfigError, "no live expert"),
])
def test_bad_experts_fail_before_anything_is_recorded(tmp_path, data, minilm_path, change, error, msg):
    cfg = _cfg(tmp_path, data)
    change(cfg)
    with pytest.raises(error, match=msg):
        experts.run(cfg)
    assert not (tmp_path / cfg.run_name / "records").exists()


def test_a_store_of_another_pool_is_refused(tmp_path, data):
    RecordStore(tmp_path / "other", ["model-a", "model-b"])
    cfg = _cfg(tmp_path, data)
    cfg.data.records = str(tmp_path / "other")
    with pytest.raises(DataError, match="holds the records of another pool"):
        experts.run(cfg)
    assert len(RecordStore(tmp_path / "other")) == 0


def test_a_question_with_eleven_options_is_refused(tmp_path, data):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"subject": "x", "question": "q?", "choices": [str(i) for i in range(11)], "answer": 0}) + "\n")
    cfg = _cfg(tmp_path, data, questions=str(bad))
    with pytest.raises(DataError, match="11 choices"):
        experts.run(cfg)
    assert not (tmp_path / cfg.run_name / "records").exists()


def test_add_expert_adds_a_live_expert_from_its_scored_probes(scored, tmp_path):
    """A 9-expert run grows by the two SmolLM2 experts, fitted on K of their scored TRAIN answers."""
    from leeroo_jax.jobs import add_expert

    cfg9 = tiny.get_config()
    cfg9.output_root, cfg9.data = str(tmp_path), copy.deepcopy(scored[0].data)
    cfg9.data.records = ""  # the base run imports its own 9-expert store
    cfg9.train.steps, cfg9.train.eval_every, cfg9.train.batch_size = 10, 10, 8
    train.run(cfg9)
    cfg = tiny.get_config("live")
    cfg.output_root, cfg.job, cfg.checkpoint = str(tmp_path), "add_expert", str(tmp_path / "tiny")
    cfg.data = copy.deepcopy(scored[0].data)
    cfg.data.records = str(scored[2] / "records")  # what the scoring job recorded
    cfg.add_expert.probes = 8
    rep = add_expert.run(cfg)
    assert set(rep["added_experts"]) == set(LIVE) and set(LIVE) <= set(rep["experts"])
    probes = json.loads((tmp_path / "tiny+2" / "probes.json").read_text())
    done = RecordStore(scored[2] / "records")
    for name in LIVE:
        assert len(probes[name]) == 8 and set(probes[name]) <= done.done(name)
        assert all(int(q, 16) % 10 >= 4 for q in probes[name])  # TRAIN questions only


def test_a_k_shot_expert_without_enough_exemplars_is_refused(tmp_path, data):
    """A question file of a subject the bank holds no TRAIN questions of: 5-shot cannot be built."""
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps({"subject": "quantum_gastronomy", "question": "Which is a fruit?",
                               "choices": ["carrot", "apple", "leek", "kale"], "answer": 1}) + "\n")
    cfg = _cfg(tmp_path, data, questions=str(new))
    with pytest.raises(ConfigError, match="needs 5 TRAIN exemplars per subject.*quantum_gastronomy"):
        experts.run(cfg)
    assert not (tmp_path / cfg.run_name / "records").exists()


def test_two_processes_record_what_one_records(scored, tmp_path, data):
    """The job as 2 processes x 4 devices, SmolLM2's weights split over data=2, fsdp=2, tensor=2
    (launch/local_multiprocess.sh): each process feeds its rows of every batch, process 0 alone
    commits, and the records are the 1-process, 1-device run's."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"PORT": "12396"}
    cmd = ["bash", "launch/local_multiprocess.sh", "2", sys.executable, "-m", "leeroo_jax.score",
           "--config=configs/tiny.py:live", "--config.job=experts", f"--config.output_root={tmp_path}", *data,
           "--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2", "--config.experts.limit=8"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg, _, run = scored
    one, two = (_live_rows(RecordStore(d / "records")) for d in (run, tmp_path / cfg.run_name))
    key = lambda rows: np.lexsort((rows["qid"], rows["expert"]))  # noqa: E731  commit order may differ
    one = {k: v[np.isin(one["qid"], two["qid"])] for k, v in one.items()}  # the first 8 questions by id
    one, two = ({k: v[key(r)] for k, v in r.items()} for r in (one, two))
    assert len(two["qid"]) == len(one["qid"]) == 2 * 8  # every answer once, none twice
    for k in ("qid", "expert", "choice", "outcome", "in_tokens", "out_tokens"):
        np.testing.assert_array_equal(two[k], one[k], err_msg=k)
    np.testing.assert_allclose(two["letters"], one["letters"], atol=1e-4)
