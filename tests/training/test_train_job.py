"""The main job on the tiny config: outputs, and exact resume after SIGKILL."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from leeroo_jax.training.checkpoint import Checkpointer


def _train(out, *overrides):
    cmd = [sys.executable, "-m", "leeroo_jax.train", "--config=configs/tiny.py", f"--config.output_root={out}",
           "--config.train.steps=40", *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def _final_params(run_dir):
    ckpt = Checkpointer(run_dir / "ckpt")
    step = ckpt.latest_step()
    meta_state = ckpt.mgr.restore(step)  # no abstract target: plain numpy, enough to compare bits
    ckpt.close()
    return step, meta_state


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("a")
    proc = _train(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "tiny"


def test_outputs(uninterrupted):
    rep = json.loads((uninterrupted / "report.json").read_text())
    assert {"orchestrator", "zero", "subject_prior", "oracle"} <= set(rep["routers"])
    routes = [json.loads(line) for line in (uninterrupted / "routes.jsonl").read_text().splitlines()]
    assert len(routes) == rep["n_questions"]
    # batch budgets are met on the whole split: mean routed cost <= the budget's expert cost
    weak_cost = rep["experts"]["mistralai/Mixtral-8x7B-Instruct-v0.1"]["cost_per_1k"] / 1000
    assert np.mean([r["weak"]["cost_usd"] for r in routes]) <= weak_cost * (1 + 1e-6)
    metrics = [json.loads(line) for line in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    assert any("val_aiq" in m for m in metrics) and metrics[0]["step"] == 5


def test_sigkill_then_rerun_is_bit_identical(uninterrupted, tmp_path):
    killed = _train(tmp_path, "--config.train.fault_at_step=25")
    assert killed.returncode == -9  # SIGKILL, after the async save of step 20 was issued
    resumed = _train(tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # the save of step 20 may still have been in flight (async) when the process died
    assert re.search(r"resumed from step (10|20)\n", resumed.stdout), resumed.stdout[:500]
    step_a, a = _final_params(uninterrupted)
    step_b, b = _final_params(tmp_path / "tiny")
    assert step_a == step_b == 40
    flat_a = dict(_flatten(a["state"]))
    flat_b = dict(_flatten(b["state"]))
    assert flat_a.keys() == flat_b.keys() and len(flat_a) > 5
    for k in flat_a:
        np.testing.assert_array_equal(flat_a[k], flat_b[k], err_msg=k)


def _flatten(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _flatten(v, f"{prefix}/{k}")
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from _flatten(v, f"{prefix}/{i}")
    else:
        yield prefix, np.asarray(tree)


def test_last_k_from_a_warm_head_trains_only_the_top_layers(uninterrupted, tmp_path, minilm_path):
    """One last_k=2 run of the real MiniLM started from the frozen run's best head
    (init_head_from). It scores VAL as that run did at step 0 (the starting head is evaluated
    and saved, a candidate for the best) and after step 1 (the warmup's lr is 0 at step 0);
    its checkpoint's lower 4 layers and embeddings are the pretrained weights bit for bit, its
    top 2 layers moved. A head of another shape is a one-line error."""
    from leeroo_jax.weights.safetensors_io import SafetensorsFile

    proc = _train(tmp_path, "--config.train.mode=last_k", "--config.train.last_k=2", "--config.train.steps=2",
                  "--config.train.eval_every=1", "--config.train.batch_size=32",
                  f"--config.train.init_head_from={uninterrupted}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "head initialised from" in proc.stdout
    src = [json.loads(line) for line in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    best = max(m["val_aiq"] for m in src if "val_aiq" in m)
    got = {m["step"]: m["val_aiq"] for m in map(json.loads, (tmp_path / "tiny" / "metrics.jsonl").read_text().splitlines())
           if "val_aiq" in m}
    assert sorted(got) == [0, 1, 2]
    assert [got[0], got[1]] == pytest.approx([best, best], abs=2e-3)

    _, restored = _final_params(tmp_path / "tiny")
    bb = restored["state"]["0"]["backbone"]  # the (model, optimizer) tuple saves as keys "0", "1"
    st = SafetensorsFile(minilm_path / "model.safetensors")
    np.testing.assert_array_equal(np.asarray(bb["word_embed"]), st.get("embeddings.word_embeddings.weight"))
    for i in range(6):
        pretrained = st.get(f"encoder.layer.{i}.output.dense.bias")
        same = np.array_equal(np.asarray(bb["layers"]["b_out"])[i], pretrained)
        assert same == (i < 4), i
    assert (tmp_path / "tiny" / "report.json").exists()

    bad = _train(tmp_path / "bad", "--config.train.hidden=32", f"--config.train.init_head_from={uninterrupted}")
    assert bad.returncode == 2
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith("error: config.train.init_head_from: head weight") and "does not match" in last
