"""The baselines job end to end on the real data, against numbers recomputed from the CSV."""

import csv
import gzip
import json
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest

from leeroo_jax.data.dataset import VENDORED_OUTCOMES

MIXTRAL, GPT4 = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"


def _score(tmp_path, *overrides):
    cmd = [sys.executable, "-m", "leeroo_jax.score", "--config=configs/mmlu.py", f"--config.output_root={tmp_path}",
           "--config.run_name=job", *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("baselines")
    proc = _score(out, "--config.eval.knn_ks=()")  # kNN needs the backbone; covered by make run
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((out / "job" / "report.json").read_text()), out / "job"


def _truth():
    """Per-model TEST accuracy straight from the CSV and the split rule in the data README."""
    graded = defaultdict(dict)
    with gzip.open(VENDORED_OUTCOMES, "rt") as f:
        for row in csv.DictReader(f):
            graded[row["id"]][row["model"]] = int(row["correct"])
    test = {q: m for q, m in graded.items() if len(m) == 9 and int(q, 16) % 10 in (0, 1, 2)}
    models = next(iter(test.values())).keys()
    return len(test), {m: np.mean([v[m] for v in test.values()]) for m in models}, np.mean([max(v.values()) for v in test.values()])


def test_report_matches_the_real_data(report):
    rep, out = report
    n, acc, oracle = _truth()
    assert rep["split"] == "test" and rep["n_questions"] == n
    for model, a in acc.items():
        assert rep["experts"][model]["acc"] == pytest.approx(a)
    assert rep["routers"]["oracle"]["max_acc"] == pytest.approx(oracle)
    # The zero router passes through Mixtral and GPT-4 (both on the experts' hull).
    assert rep["routers"]["zero"]["acc_at_cost_of"][MIXTRAL] == pytest.approx(acc[MIXTRAL])
    assert rep["routers"]["zero"]["cost_ratio_to_acc_of"][GPT4] == pytest.approx(1.0)
    assert set(rep["routers"]) == {"zero", "subject_prior", "oracle"}
    for r in rep["routers"].values():
        assert 0.5 < r["aiq"] <= rep["routers"]["oracle"]["aiq"] + 1e-9
    assert (out / "frontier.png").exists() and "| subject_prior |" in (out / "report.md").read_text()


@pytest.mark.parametrize("override, msg", [
    ("--config.job=nope", "config.job='nope' is not a job"),
    ("--config.eval.weak=gpt-5", "not in config.pool"),
])
def test_bad_config_is_one_line(tmp_path, override, msg):
    proc = _score(tmp_path, override)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: ") and msg in proc.stderr
    assert not (tmp_path / "job").exists()


def test_unknown_config_key_is_one_line_with_a_suggestion(tmp_path):
    proc = _score(tmp_path, "--config.evl.split=val")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: unknown config key") and "'evl'" in last and 'Did you mean "eval"' in last
    assert not (tmp_path / "job").exists()
