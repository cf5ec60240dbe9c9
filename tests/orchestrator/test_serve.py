"""The `route` and `add_expert` jobs on real data, with tiny-config training runs."""

import gzip
import json
import subprocess
import sys

import numpy as np
import pytest

from configs.pools import MMLU_9
from leeroo_jax.data import mmlu
from leeroo_jax.data.pool import Pool
from leeroo_jax.jobs.runs import load_run

HOLDOUT = "HuggingFaceH4/zephyr-7b-beta"


def _cli(module, config, out, *overrides):
    cmd = [sys.executable, "-m", module, f"--config={config}", f"--config.output_root={out}", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    return proc


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny run on all 9 experts, one without zephyr-7b, and zephyr added back from 50 probes."""
    out = tmp_path_factory.mktemp("runs")
    for config in ("configs/tiny.py", "configs/tiny.py:holdout"):
        proc = _cli("leeroo_jax.train", config, out, "--config.train.steps=100")
        assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _cli("leeroo_jax.score", "configs/tiny.py", out, "--config.job=add_expert",
                f"--config.checkpoint={out / 'tiny_holdout'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _report(run_dir):
    return json.loads((run_dir / "report.json").read_text())


def test_added_expert_keeps_95_percent_of_the_full_pool_aiq(runs):
    full = _report(runs / "tiny")["routers"]["orchestrator"]["aiq"]
    added = _report(runs / "tiny_holdout+1")
    assert added["n_questions"] == _report(runs / "tiny")["n_questions"]  # the same TEST questions, 9 experts
    assert HOLDOUT in added["experts"] and len(added["experts"]) == 9
    assert added["routers"]["orchestrator"]["aiq"] >= 0.95 * full
    assert added["routers"]["orchestrator"]["aiq"] > added["routers"]["zero"]["aiq"]


def test_probes_are_50_graded_train_questions(runs):
    probes = json.loads((runs / "tiny_holdout+1" / "probes.json").read_text())
    assert list(probes) == [HOLDOUT] and len(set(probes[HOLDOUT])) == 50
    with gzip.open(mmlu.DEFAULT_PATH.parent / "outcomes.csv.gz", "rt") as f:
        graded = {line.split(",")[0] for line in f if HOLDOUT in line}
    assert set(probes[HOLDOUT]) <= graded
    test_ids = {r["id"] for r in map(json.loads, (runs / "tiny" / "routes.jsonl").read_text().splitlines())}
    assert not set(probes[HOLDOUT]) & test_ids


def test_old_experts_logits_unchanged_and_new_one_is_used(runs):
    before, after = load_run(runs / "tiny_holdout"), load_run(runs / "tiny_holdout+1")
    assert list(after.data.pool.names)[:8] == list(before.data.pool.names)
    rows = before.data.rows("test")
    np.testing.assert_array_equal(after.data.rows("test"), rows)
    p0, p1 = before.trainer.predict(rows), after.trainer.predict(rows)
    np.testing.assert_allclose(p1[:, :8], p0, rtol=1e-6, atol=1e-7)
    assert 0.3 < p1[:, 8].mean() < 0.9 and p1[:, 8].std() > 0.01  # a fitted row, not a constant


def test_route_job_reproduces_the_training_runs_routes(runs):
    proc = _cli("leeroo_jax.score", "configs/tiny.py", runs, "--config.job=route", f"--config.checkpoint={runs / 'tiny'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((runs / "tiny" / "route" / "summary.json").read_text())
    got = [json.loads(line) for line in (runs / "tiny" / "route" / "choices.jsonl").read_text().splitlines()]
    want = [json.loads(line) for line in (runs / "tiny" / "routes.jsonl").read_text().splitlines()]
    assert [g["id"] for g in got] == [w["id"] for w in want]
    # route re-embeds the questions from tokens in one jitted program; the run used cached vectors
    agree = np.mean([g["expert"] == w["weak"]["expert"] for g, w in zip(got, want)])
    assert agree >= 0.97, agree
    assert summary["mean_cost_usd"] <= summary["budget"]["value"] * (1 + 1e-6)
    assert summary["accuracy"] == pytest.approx(np.mean([g["correct"] for g in got]))
    assert sum(summary["choices"].values()) == len(got) == summary["n_questions"]


def test_route_new_questions_under_a_cost_cap(runs, tmp_path):
    qs = [{"subject": "astronomy", "question": "Which planet is closest to the Sun?",
           "choices": ["Venus", "Mercury", "Mars", "Earth"], "answer": 1},
          {"subject": "college_mathematics", "question": "What is the derivative of x^3 at x = 2?",
           "choices": ["6", "8", "12", "4"], "answer": 2}]
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in qs))
    cap = 5e-5  # below Mixtral's and GPT-4's cost per question: only the 7B experts fit
    proc = _cli("leeroo_jax.score", "configs/tiny.py", runs, "--config.job=route", f"--config.checkpoint={runs / 'tiny'}",
                f"--config.route.questions={path}", "--config.route.mode=cap", f"--config.route.value={cap}",
                f"--config.route.output={tmp_path / 'out'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = [json.loads(line) for line in (tmp_path / "out" / "choices.jsonl").read_text().splitlines()]
    assert len(got) == 2 and all(g["cost_usd"] <= cap for g in got)
    assert all("correct" not in g for g in got)  # new questions have no graded outcome
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["accuracy"] is None


def test_route_without_a_run_directory_is_one_line(tmp_path):
    proc = _cli("leeroo_jax.score", "configs/tiny.py", tmp_path, "--config.job=route", f"--config.checkpoint={tmp_path}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: config.checkpoint=") and "training run directory" in lines[-1]


def test_route_calibrated_on_val_meets_its_target(runs, tmp_path):
    """tradeoff lam fitted on the run's VAL questions to Mixtral's mean cost, applied per query."""
    proc = _cli("leeroo_jax.score", "configs/tiny.py", runs, "--config.job=route", f"--config.checkpoint={runs / 'tiny'}",
                "--config.route.mode=tradeoff", "--config.route.calibrate_on=val", "--config.route.value=weak",
                f"--config.route.output={tmp_path / 'cal'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "cal" / "summary.json").read_text())
    got = [json.loads(line) for line in (tmp_path / "cal" / "choices.jsonl").read_text().splitlines()]
    by_id = {q.id: q for q in mmlu.load_questions()}
    mixtral = Pool.from_config(MMLU_9).costs([by_id[g["id"]] for g in got])[:, 1].astype(np.float32)
    cal = summary["calibration"]
    assert cal["target_mean_cost_usd"] == pytest.approx(float(mixtral.mean()), rel=1e-5)  # "weak" = Mixtral here
    assert cal["target_mean_cost_usd"] * 0.97 <= cal["val_mean_cost_usd"] <= cal["target_mean_cost_usd"] * (1 + 1e-6)
    assert summary["budget"] == {"mode": "tradeoff", "value": pytest.approx(cal["value"])}
    assert abs(summary["mean_cost_usd"] / cal["target_mean_cost_usd"] - 1) < 0.15  # TEST, never seen by the fit


def test_an_ensemble_run_routes_with_the_mean_of_its_members(tmp_path):
    """A run trained with --config.train.ensemble=3 keeps 3 heads in its checkpoint, and the
    route job's jitted scorer (tokens -> backbone -> heads -> calibrated p) gives the run's own
    predictions (cached embeddings, the members' mean p through its calibration)."""
    from flax import nnx
    from leeroo_jax.jobs.route import route_questions
    from leeroo_jax.orchestrator import select

    proc = _cli("leeroo_jax.train", "configs/tiny.py", tmp_path, "--config.train.ensemble=3", "--config.run_name=ens")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = load_run(tmp_path / "ens")
    assert nnx.to_pure_dict(run.trainer.state[0])["head"]["w1"].shape[0] == 3
    rows = run.data.rows("test")[:64]
    qs = [run.data.questions[r] for r in rows]
    cost = Pool.from_config(run.cfg.pool).costs(qs).astype(np.float32)
    p, _ = route_questions(run, qs, cost, select.Budget.batch_budget(float(cost[:, 1].mean())), "orchestrator")
    want = run.calibration.apply(run.trainer.predict(rows))
    np.testing.assert_allclose(p, want, atol=0.02)  # route re-embeds from tokens; the run read cached vectors
    assert np.corrcoef(p.ravel(), want.ravel())[0, 1] > 0.99
