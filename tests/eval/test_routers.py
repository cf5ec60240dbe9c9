"""Reference routers on small hand-computed cases, and the report files."""

import json

import numpy as np
import pytest

from leeroo_jax.eval import frontier as fr
from leeroo_jax.eval import report, routers


def test_subject_prior_shrinks_toward_global_accuracy():
    subjects = np.array(["a", "a", "b", "b"])
    outcome = np.array([[1, 0], [1, 0], [0, 1], [0, 0]], float)
    observed = np.ones_like(outcome, bool)
    observed[3, 1] = False  # never counts as a failure
    p = routers.subject_prior(subjects, outcome, observed, np.array(["a", "b", "c"]), strength=2.0)
    glob = np.array([2 / 4, 1 / 3])
    np.testing.assert_allclose(p[0], [(2 + 2 * glob[0]) / 4, (0 + 2 * glob[1]) / 4])
    np.testing.assert_allclose(p[1], [(0 + 2 * glob[0]) / 4, (1 + 2 * glob[1]) / 3])
    np.testing.assert_allclose(p[2], glob)  # an unseen subject gets the global accuracy


def test_knn_votes_only_with_observed_neighbours():
    train = np.array([[1, 0], [0.9, 0.1], [0, 1]], float)
    outcome = np.array([[1, 0], [0, 1], [1, 1]], float)
    observed = np.array([[1, 1], [1, 0], [1, 1]], bool)
    p = routers.knn(train, outcome, observed, np.array([[1.0, 0.05], [0.0, 1.0]]), k=2)
    np.testing.assert_allclose(p[0], [0.5, 0.0])  # neighbours 0 and 1; only 0 observed expert 1
    np.testing.assert_allclose(p[1], [0.5, 1.0])  # neighbours 2 and 1; expert 1 is voted by 2 alone


def test_knn_falls_back_to_global_accuracy():
    train = np.array([[1.0, 0.0], [0.0, 1.0]])
    outcome = np.array([[1, 0], [0, 1]], float)
    observed = np.array([[1, 0], [1, 1]], bool)
    p = routers.knn(train, outcome, observed, np.array([[1.0, 0.0]]), k=1)
    np.testing.assert_allclose(p[0], [1.0, 1.0])  # expert 1 unobserved by the neighbour -> global 1/1


def test_report_files(tmp_path):
    names = ["cheap", "dear"]
    cost = np.array([[1.0, 3.0], [1.0, 3.0]]) / 1000
    outcome = np.array([[1, 1], [0, 1]], float)
    fronts = {"zero": fr.experts_frontier(cost, outcome), "oracle": fr.sweep(outcome, cost, outcome)}
    rep = report.build("test", names, cost, outcome, fronts, "cheap", "dear")
    md = report.write(rep, tmp_path, at="cheap", reach="dear")
    got = json.loads((tmp_path / "report.json").read_text())
    assert got["n_questions"] == 2 and got["experts"]["dear"] == {"cost_per_1k": pytest.approx(3.0), "acc": 1.0}
    assert got["routers"]["oracle"]["acc_at_cost_of"]["cheap"] == pytest.approx(0.5)
    assert got["routers"]["oracle"]["cost_ratio_to_acc_of"]["dear"] == pytest.approx(2 / 3)
    assert got["routers"]["zero"]["aiq"] == pytest.approx(0.75)
    assert "| oracle |" in md and (tmp_path / "report.md").read_text() == md
    assert (tmp_path / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp*"))
