"""What deployment reads from a training run, on the tiny config over the real data: an
anchored head that starts at the subject prior, the per-expert calibration, the VAL-decided
policy and what it delivers on TEST, and the route job following that policy."""

import json
import shutil
import subprocess
import sys

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from leeroo_jax.data.dataset import Dataset
from leeroo_jax.eval import frontier as fr
from leeroo_jax.eval import routers
from leeroo_jax.jobs import common
from leeroo_jax.orchestrator.model import Head, HeadConfig
from leeroo_jax.orchestrator.policy import Policy


def _cli(module, out, *overrides):
    cmd = [sys.executable, "-m", module, "--config=configs/tiny.py", f"--config.output_root={out}", *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def anchored(tmp_path_factory):
    out = tmp_path_factory.mktemp("anchored")
    proc = _cli("leeroo_jax.train", out, "--config.train.anchor=prior", "--config.eval.policy_folds=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "tiny"


@pytest.fixture(scope="module")
def data(anchored) -> Dataset:
    cfg = ml_collections.ConfigDict(json.loads((anchored / "config.json").read_text()))
    return common.load_dataset(cfg, embed=False)


def test_an_anchored_head_starts_exactly_at_its_side_feature():
    rng = np.random.default_rng(0)
    side = rng.uniform(0, 1, (5, 4, 3)).astype(np.float32)
    head = Head(HeadConfig(8, 4, 3, hidden=16, dropout=0.0, anchor=2), rngs=nnx.Rngs(0))
    logits = np.asarray(head(jnp.asarray(rng.normal(size=(5, 8)), jnp.float32), jnp.asarray(side)))
    q = np.clip(side[..., 2].astype(np.float64), 0.02, 0.98)
    np.testing.assert_allclose(logits, np.log(q / (1 - q)), rtol=1e-5, atol=1e-5)


def test_step_0_is_the_subject_prior_and_a_candidate_for_the_best(anchored, data):
    """The anchored run's VAL AIQ at step 0 is the subject-prior reference router's, computed
    from TRAIN outcomes by routers.subject_prior and swept on VAL here."""
    metrics = [json.loads(line) for line in (anchored / "metrics.jsonl").read_text().splitlines()]
    val = {m["step"]: m["val_aiq"] for m in metrics if "val_aiq" in m}
    assert sorted(val) == [0, 10, 20]
    ev = data.eval_set("val")
    tr = data.rows("train")
    prior = routers.subject_prior(data.subjects[tr], data.outcome[tr], data.observed[tr], data.subjects[ev.rows], 20.0)
    cost, outcome = data.cost[np.ix_(ev.rows, ev.experts)], data.outcome[np.ix_(ev.rows, ev.experts)]
    p = np.clip(prior[:, ev.experts], 0.02, 0.98)  # the head reads its side features clipped to [0.02, 0.98]
    want = fr.summarize(fr.sweep(p, cost, outcome), [data.names[e] for e in ev.experts], cost, outcome).aiq
    assert val[0] == pytest.approx(want, abs=1e-3)


def test_the_report_shows_the_policy_against_the_best_affordable_expert(anchored):
    rep = json.loads((anchored / "report.json").read_text())
    pol = Policy.from_json(json.loads((anchored / "policy.json").read_text()))
    assert {"orchestrator", "constant", "subject_prior"} == set(pol.val_acc)
    experts = rep["experts"]
    dep = rep["deployment"]
    assert len(dep["at"]) >= 3
    for label, row in dep["at"].items():
        assert row["deployed"] == pol.router_for(row["budget"])
        assert row["acc"] == row["routers"][row["deployed"]]["acc"] and row["cost"] <= row["budget"] * (1 + 1e-6)
        fits = {n: v["acc"] for n, v in experts.items() if v["cost_per_1k"] / 1000 <= row["budget"] * (1 + 1e-9)}
        best = max(fits, key=fits.get)  # from the report's own expert table: the real outcomes
        assert row["best_single"]["acc"] == pytest.approx(fits[best])
        check = dep["checks"][f"acc at {label} >= best single expert"]
        assert check["ok"] == (row["acc"] >= fits[best] - 1e-9)
    cal = rep["calibration"]
    assert cal["kind"] == "platt" and cal["val_ece_after"] < cal["val_ece_before"]
    cf = cal["val_cross_fitted"]
    assert set(cf) == {"none", "platt", "isotonic"} and cf["none"] == pytest.approx(cal["val_ece_before"])
    assert cf["platt"] > cal["val_ece_after"]  # held out, the maps do worse than on the rows they were fitted on
    assert "Cross-fitted on VAL" in (anchored / "report.md").read_text()
    assert "Deployed policy, decided on VAL" in (anchored / "report.md").read_text()


def _exact_batch_choice(p, cost, budget):
    """Brute force over lam: the smallest lam on a fine grid meeting the mean budget."""
    for lam in np.concatenate([[0.0], np.geomspace(1e-3, 1e9, 30000)]):
        s = p - lam * cost
        e = np.where(s >= s.max(1, keepdims=True) - 1e-7, cost, np.inf).argmin(1)
        if cost[np.arange(len(p)), e].mean() <= budget:
            return e
    return cost.argmin(1)


def _route_under_a_policy_of(router, anchored, tmp_path) -> tuple[dict, list[dict]]:
    """(summary, choices) of `route` at the weak expert's mean cost, on a copy of the run whose
    policy hands every budget to `router`; the summary must name it."""
    run = tmp_path / "tiny"
    shutil.copytree(anchored, run)
    pol = json.loads((run / "policy.json").read_text())
    pol["winner"] = [router] * len(pol["winner"])
    (run / "policy.json").write_text(json.dumps(pol))
    proc = _cli("leeroo_jax.score", tmp_path, "--config.job=route", f"--config.checkpoint={run}",
                "--config.route.mode=batch_budget", "--config.route.value=weak")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "route" / "summary.json").read_text())
    assert summary["router"] == router
    return summary, [json.loads(line) for line in (run / "route" / "choices.jsonl").read_text().splitlines()]


def test_route_serves_a_budget_with_the_router_the_policy_names(anchored, data, tmp_path):
    """A policy that hands every budget to the subject prior: route's choices are that
    router's batch-budget choices."""
    summary, got = _route_under_a_policy_of("subject_prior", anchored, tmp_path)
    ev = data.eval_set("test")
    assert [g["id"] for g in got] == [data.questions[r].id for r in ev.rows]
    tr = data.rows("train")
    p = routers.subject_prior(data.subjects[tr], data.outcome[tr], data.observed[tr], data.subjects[ev.rows], 20.0)
    cost = data.cost[ev.rows].astype(np.float32)
    want = _exact_batch_choice(p.astype(np.float32), cost, summary["budget"]["value"])
    agree = np.mean([g["expert"] == data.names[e] for g, e in zip(got, want)])
    assert agree >= 0.99, agree


def test_route_serves_the_zero_router_as_the_single_expert_at_its_own_cost(anchored, data, tmp_path):
    """Where the policy names the zero router, a batch budget equal to Mixtral's mean cost
    (Mixtral on the hull of TRAIN accuracy vs cost) sends every question to Mixtral."""
    summary, _ = _route_under_a_policy_of("constant", anchored, tmp_path)
    weak = "mistralai/Mixtral-8x7B-Instruct-v0.1"
    ev = data.eval_set("test")
    assert summary["choices"][weak] == summary["n_questions"] == len(ev.rows)
    assert summary["accuracy"] == pytest.approx(data.outcome[ev.rows, data.names.index(weak)].mean())
