"""Per-pool tuning on the real data (tiny config, a reduced sweep): the held-out scoring mode,
the coordinate search keeping the best trial, the table, and the train job training the
winner and reusing its sweep on a rerun."""

import json
import subprocess
import sys

import pytest

from configs import tiny
from leeroo_jax.jobs import common, tune


@pytest.fixture(scope="module")
def small_sweep():
    saved = tune.AXES, tune.SEEDS
    tune.AXES, tune.SEEDS = {"hidden": (8, 16), "anchor": ("", "prior")}, (1,)
    yield
    tune.AXES, tune.SEEDS = saved


def test_the_sweep_keeps_the_best_trial_of_each_axis(small_sweep, tmp_path):
    cfg = tiny.get_config()
    cfg.train.steps, cfg.train.tune_folds = 10, 3
    ds = common.load_dataset(cfg)
    best, table, scorer = tune.sweep(cfg, ds)
    assert scorer.mode == "3-fold"  # 565 VAL questions graded by all 9: too few to tune on
    assert len(scorer.rows) > 2000
    trials = [r for r in table if r["label"] in ("", "config")]
    by_hidden = max(trials[:2], key=lambda r: r["aiq"])["trial"]["hidden"]
    assert [(r["trial"]["hidden"], r["trial"]["anchor"]) for r in trials] == [(16, ""), (8, ""), (by_hidden, "prior")]
    single = max(trials, key=lambda r: r["aiq"])
    assert [r["label"] for r in table[-2:]] == ["seed 1", "ensemble"]
    ens = table[-1]  # the winner as an ensemble of 2 heads, trained and scored like a trial
    assert ens["trial"] == {**single["trial"], "ensemble": 2}
    assert best == (ens if ens["aiq"] > single["aiq"] else single)["trial"]  # a seed row is never chosen
    tune.write(tmp_path, best, table, scorer.mode, len(scorer.rows))
    assert "**chosen**" in (tmp_path / "tune.md").read_text()


def test_the_train_job_trains_the_winner_and_reuses_the_sweep(small_sweep, tmp_path):
    cmd = [sys.executable, "-c",
           "from leeroo_jax.jobs import tune; tune.AXES = {'hidden': (8, 16)}; tune.SEEDS = (); "
           "from leeroo_jax import config as c, train as t; c.absl_run(t._CONFIG, c.check_train, t._job)",
           "--config=configs/tiny.py", f"--config.output_root={tmp_path}", "--config.train.tune=true",
           "--config.train.steps=10", "--config.train.tune_folds=2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "tiny"
    saved = json.loads((run / "tune.json").read_text())
    assert json.loads((run / "config.json").read_text())["train"]["hidden"] == saved["best"]["hidden"]
    (run / "tune.md").unlink()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert not (run / "tune.md").exists()  # the rerun read tune.json instead of sweeping again
