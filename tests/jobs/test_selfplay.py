"""Self-play on the real outcomes (configs/tiny.py:selfplay, 2 rounds): what a round may call,
that revealed outcomes are the recorded ones, and kill -9 + rerun = one uninterrupted run."""

from __future__ import annotations

import csv
import gzip
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
from leeroo_jax import config as config_lib
from leeroo_jax.data import mmlu, splits
from leeroo_jax.data.dataset import VENDORED_OUTCOMES
from leeroo_jax.data.records import RecordStore
from leeroo_jax.errors import ConfigError
from leeroo_jax.jobs import bandit
from leeroo_jax.orchestrator import explore
from slices import real_slice

ROOT = pathlib.Path(__file__).resolve().parents[2]
USD_PER_ROUND = tiny.get_config("selfplay").selfplay.usd_per_round
ONE_DEVICE = {**os.environ, "XLA_FLAGS": ""}  # job subprocesses: one CPU device is faster on 2 cores


def _cmd(out):
    return [sys.executable, "-m", "leeroo_jax.selfplay", "--config=configs/tiny.py:selfplay", f"--config.output_root={out}"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sp")
    proc = subprocess.run(_cmd(out), cwd=ROOT, capture_output=True, text=True, timeout=900, env=ONE_DEVICE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "tiny_selfplay"


@pytest.fixture(scope="module")
def truth():
    """(question id, expert) -> correct, straight from the vendored CSV."""
    with gzip.open(VENDORED_OUTCOMES, "rt") as f:
        return {(r["id"], r["model"]): float(r["correct"]) for r in csv.DictReader(f)}


def _rows(run_dir):
    store = RecordStore(run_dir / "records")
    rows = store.read()
    rows["name"] = np.array(store.experts)[rows["expert"]]
    return rows


def test_rounds_stay_in_budget_and_reveal_the_recorded_outcomes(run, truth):
    rounds = json.loads((run / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [0, 1, 2]
    rows = _rows(run)
    bank_pairs = sum(1 for (q, _) in truth if splits.split_of(q) is splits.Split.TRAIN)
    for r in rounds[1:]:
        mine = rows["round"] == r["round"]
        assert r["calls"] == mine.sum() > 0 and r["calls"] <= round(0.1 * bank_pairs)
        assert r["usd"] == pytest.approx(rows["cost"][mine].sum()) and r["usd"] <= USD_PER_ROUND + 1e-9
        assert all(splits.split_of(q) is splits.Split.TRAIN for q in rows["qid"][mine])  # only the bank is called
    pairs = list(zip(rows["qid"], rows["name"]))
    assert len(pairs) == len(set(pairs))  # no pair called twice, nor called after it was seeded
    assert all(rows["outcome"][i] == truth[p] for i, p in enumerate(pairs))  # what was revealed is what was recorded
    seeded = {p for p, r in zip(pairs, rows["round"]) if r == 0}
    evals = {p for p in truth if splits.split_of(p[0]) is not splits.Split.TRAIN}
    assert evals <= seeded  # VAL and TEST are known from the start (evaluation only)
    known = [r["train_pairs_share"] for r in rounds]
    assert known == sorted(known) and known[0] == pytest.approx(0.2, abs=0.02)
    assert (run / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged] == [0, 1, 2] and all("test_aiq" in m for m in logged)


def test_kill_9_then_rerun_equals_the_uninterrupted_run(run, tmp_path):
    proc = subprocess.Popen(_cmd(tmp_path), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ONE_DEVICE)
    rounds_file = tmp_path / "tiny_selfplay" / "rounds.json"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:  # kill once round 1's calls are recorded
        if rounds_file.exists() and len(json.loads(rounds_file.read_text() or "[]")) >= 1:
            rows = RecordStore(tmp_path / "tiny_selfplay" / "records").read(["round"])["round"]
            if (rows == 1).any():
                break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    again = subprocess.run(_cmd(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=900, env=ONE_DEVICE)
    assert again.returncode == 0, again.stderr[-3000:]
    want, got = (json.loads((d / "rounds.json").read_text()) for d in (run, tmp_path / "tiny_selfplay"))
    assert [(r["calls"], r["usd"]) for r in got] == [(r["calls"], r["usd"]) for r in want]
    for a, b in zip(got, want):
        assert a["test_aiq"] == pytest.approx(b["test_aiq"], abs=1e-6)
    a, b = _rows(run), _rows(tmp_path / "tiny_selfplay")
    assert sorted(zip(a["qid"], a["name"], a["round"])) == sorted(zip(b["qid"], b["name"], b["round"]))


# --- the exploration strategies (orchestrator/explore.py) on synthetic posteriors ---------------

def _posterior(seed=0, q=40, e=5, s=6):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.95, (s, q, e))
    cost = np.tile(np.array([1e-5, 2e-5, 4e-5, 1e-4, 1e-3]), (q, 1))
    callable_ = rng.random((q, e)) < 0.7
    return p, cost, callable_


@pytest.mark.parametrize("strategy", explore.STRATEGIES)
def test_every_strategy_keeps_to_callable_pairs_and_both_budgets(strategy):
    p, cost, callable_ = _posterior()
    picks = explore.choose_calls(strategy, p, cost, callable_, max_calls=30, max_usd=3e-3, rng=np.random.default_rng(1))
    assert 0 < len(picks) <= 30 and len(set(picks)) == len(picks)
    assert all(callable_[q, e] for q, e in picks)
    assert sum(cost[q, e] for q, e in picks) <= 3e-3 + 1e-12
    few = explore.choose_calls(strategy, p, cost, callable_, max_calls=1000, max_usd=1.0, rng=np.random.default_rng(1))
    assert len(few) == callable_.sum()  # an ample budget calls every callable pair once


def test_uncertainty_calls_the_widest_posteriors_first():
    p, cost, callable_ = _posterior()
    cost = np.full_like(cost, 1e-5)  # equal prices: the order is the posterior std alone
    picks = explore.choose_calls("uncertainty", p, cost, callable_, max_calls=10, max_usd=1.0, rng=np.random.default_rng(0))
    std = np.where(callable_, p.std(0), -1)
    want = set(zip(*np.unravel_index(np.argsort(-std, axis=None)[:10], std.shape)))
    assert set(picks) == {(int(q), int(e)) for q, e in want}


def test_thompson_with_one_sample_and_free_calls_picks_each_querys_best_expert_first():
    p, _, callable_ = _posterior(s=1)
    cost = np.zeros_like(callable_, float)  # lam * cost = 0: the choice is argmax p
    picks = explore.choose_calls("thompson", p, cost, callable_, max_calls=int(callable_.any(1).sum()), max_usd=1.0,
                                 rng=np.random.default_rng(0))
    best = np.argmax(np.where(callable_, p[0], -np.inf), axis=1)
    assert sorted(picks) == sorted((int(q), int(best[q])) for q in np.flatnonzero(callable_.any(1)))


def test_bandit_benchmark_compares_at_equal_calls(tmp_path):
    """Two seeds x (thompson, uniform) + full information, one round, on a 100-question slice of
    the real data: the aggregate is the sub-runs' numbers, and both strategies made the same
    number of calls each round."""
    cfg = tiny.get_config("selfplay")
    cfg.output_root = str(tmp_path)
    for arg in real_slice(tmp_path / "slice", {"train": 60, "val": 20, "test": 20})[0]:
        key, value = arg.removeprefix("--config.data.").split("=", 1)
        cfg.data[key] = value
    cfg.selfplay.rounds, cfg.selfplay.bench_seeds, cfg.selfplay.benchmark = 1, 2, True
    res = bandit.run(cfg)
    bench = tmp_path / "tiny_selfplay" / "bench"
    sub = {d.name: json.loads((d / "rounds.json").read_text()) for d in bench.iterdir()}
    assert sorted(sub) == ["full_information_s0", "full_information_s1", "thompson_s0", "thompson_s1",
                           "uniform_s0", "uniform_s1"]
    for seed in (0, 1):
        assert [r["calls"] for r in sub[f"thompson_s{seed}"]] == [r["calls"] for r in sub[f"uniform_s{seed}"]]
        assert sub[f"full_information_s{seed}"][0]["train_pairs_share"] == 1.0
    for r in (0, 1):
        for s in ("thompson", "uniform"):
            want = np.mean([sub[f"{s}_s{seed}"][r]["test_aiq"] for seed in (0, 1)])
            assert res["rounds"][r][s]["test_aiq_mean"] == pytest.approx(want)
    assert res["full_information_test_aiq"] == pytest.approx(
        np.mean([sub[f"full_information_s{seed}"][0]["test_aiq"] for seed in (0, 1)]))
    assert (tmp_path / "tiny_selfplay" / "bandit.png").read_bytes()[:4] == b"\x89PNG"
    assert "| round | TRAIN pairs known |" in (tmp_path / "tiny_selfplay" / "bandit.md").read_text()


def test_live_smoke_generates_judges_and_retrains_with_the_live_expert(tmp_path, smollm2_path):
    """configs/tiny.py:selfplay_live: SmolLM2 writes questions, answers them beside 9 recorded
    experts, a judge grades them, and the retrained orchestrator scores the live expert."""
    from leeroo_jax.training.checkpoint import Checkpointer

    cmd = [sys.executable, "-m", "leeroo_jax.selfplay", "--config=configs/tiny.py:selfplay_live",
           f"--config.output_root={tmp_path}"]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=ONE_DEVICE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"selfplay_live took {time.time() - t0:.0f} s")
    run = tmp_path / "tiny_selfplay_live"
    rounds = json.loads((run / "rounds.json").read_text())
    gen = [json.loads(line) for line in (run / "generated.jsonl").read_text().splitlines()]
    assert gen and sum(r["generation"]["parsed"] for r in rounds[1:]) == len(gen)
    for r in rounds[1:]:
        g = r["generation"]
        assert g["parsed"] + sum(g["rejects"].values()) == g["requested"] == 8
    bank_ids = {q.id for q in mmlu.load_questions()}
    for g in gen:  # parsed, new, TRAIN by the id rule, four distinct options
        q = mmlu.make_question(g["subject"], g["question"], g["choices"], g["answer"], "generated")
        assert q.id == g["id"] and q.id not in bank_ids and splits.split_of(q.id) is splits.Split.TRAIN
        assert len(set(q.choices)) == 4
    rows = _rows(run)
    live = rows["round"] > 0
    assert live.any() and set(rows["name"][live]) == {"smollm2-135m-0shot"}
    assert set(rows["qid"][live]) <= {g["id"] for g in gen}
    assert set(RecordStore(run / "records").grader_names(rows["grader"][live])) == {"judge:weighted_majority"}
    assert np.isin(rows["outcome"][live], (0.0, 1.0)).all()
    ckpt = Checkpointer(run / "round_02" / "ckpt")
    state = ckpt.mgr.restore(ckpt.latest_step())
    ckpt.close()
    assert state["state"]["0"]["head"]["experts"].shape[0] == 10  # 9 recorded + the live expert
    pool = [e["name"] for e in json.loads((run / "config.json").read_text())["pool"]]
    assert pool[-1] == "smollm2-135m-0shot"


@pytest.mark.parametrize("change, msg", [
    (lambda c: c.selfplay.update(source="generator", generator="gpt-4-1106-preview"), "no pool expert can answer"),
    (lambda c: c.selfplay.update(strategy="greedy"), "strategy='greedy'"),
    (lambda c: c.train.update(mode="last_k"), "train.mode=frozen"),
    (lambda c: c.selfplay.update(benchmark=True, strategy="uniform"), "other than uniform"),
])
def test_bad_selfplay_configs_are_one_line_errors(change, msg):
    cfg = tiny.get_config("selfplay")
    change(cfg)
    with pytest.raises(ConfigError, match=msg):
        config_lib.check_selfplay(cfg)


def test_a_generator_that_is_not_a_live_pool_expert_is_refused():
    cfg = tiny.get_config("selfplay_live")
    cfg.selfplay.generator = "gpt-4-1106-preview"
    with pytest.raises(ConfigError, match="must name a live pool expert"):
        config_lib.check_selfplay(cfg)
