"""A job as N processes gives the result of one (issue 11, part 1): the tiny train job as 2
processes x 4 fake CPU devices (launch/local_multiprocess.sh, jax.distributed over
localhost), against 1 process over the same 8-device mesh (this pytest process)."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from flax import nnx

from configs import tiny
from leeroo_jax.jobs import train
from leeroo_jax.jobs.runs import load_run
from slices import assert_close_trees

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(the 2-process run directory, the 1-process one)."""
    root = tmp_path_factory.mktemp("mp")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PORT"] = "12392"
    proc = subprocess.run(["bash", "launch/local_multiprocess.sh", "2", sys.executable, "-m", "leeroo_jax.train",
                           "--config=configs/tiny.py", f"--config.output_root={root / 'two'}"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = tiny.get_config()
    cfg.output_root = str(root / "one")
    train.run(cfg)
    return root / "two" / "tiny", root / "one" / "tiny"


def _close(a, b, path=""):
    assert_close_trees(a, b, path=path)


def test_reports_policy_and_routes_are_the_one_process_ones(runs):
    two, one = runs
    for name in ("report.json", "policy.json", "calibration.json"):
        _close(json.loads((one / name).read_text()), json.loads((two / name).read_text()), name)
    assert (two / "routes.jsonl").read_text() == (one / "routes.jsonl").read_text()


def test_each_output_is_written_once_and_the_store_by_one_process(runs):
    two, one = runs
    def files(d):  # Orbax writes per-process metadata into ckpt/ by design; tb/ names its file by time and pid
        return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and not {"tb", "ckpt"} & set(p.parts))

    assert len(list((two / "tb").iterdir())) == len(list((one / "tb").iterdir())) == 1  # one TensorBoard writer

    assert files(two) == files(one)  # no stray temp files, no second store beside the first
    steps = lambda d: sorted(p.name for p in (d / "ckpt").iterdir() if p.name.isdigit())  # noqa: E731
    assert steps(two) == steps(one) == ["10", "20"]
    assert (two / "metrics.jsonl").read_text().count("\n") == (one / "metrics.jsonl").read_text().count("\n")


def test_a_checkpoint_saved_by_2_processes_restores_in_1_to_the_same_parameters(runs):
    two, one = runs
    a, b = (nnx.to_pure_dict(load_run(d).trainer.state[0]) for d in (two, one))
    flat_a, flat_b = (dict(nnx.traversals.flatten_mapping(x)) for x in (a, b))
    assert flat_a.keys() == flat_b.keys() and len(flat_a) > 5
    for k in flat_a:
        np.testing.assert_allclose(np.asarray(flat_a[k]), np.asarray(flat_b[k]), rtol=0, atol=1e-6, err_msg=str(k))


def test_route_as_2_processes_from_a_1_process_checkpoint_matches_1_process(runs, tmp_path):
    """The route job restores the 1-process run's checkpoint (saved on a data=8 mesh) in 2
    processes on a data=2, fsdp=2, tensor=2 mesh (Orbax reshards the head on restore), each
    scoring its rows of every batch, and writes the choices the job writes in this one process."""
    from leeroo_jax.jobs.route import run_route

    _, one = runs
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PORT"] = "12393"
    proc = subprocess.run(["bash", "launch/local_multiprocess.sh", "2", sys.executable, "-m", "leeroo_jax.score",
                           "--config=configs/tiny.py", "--config.job=route", f"--config.checkpoint={one}",
                           f"--config.route.output={tmp_path / 'two'}", "--config.mesh.data=2", "--config.mesh.fsdp=2",
                           "--config.mesh.tensor=2"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = tiny.get_config()
    cfg.job, cfg.checkpoint, cfg.route.output = "route", str(one), str(tmp_path / "one")
    summary = run_route(cfg)
    assert summary["n_questions"] == 1912
    assert (tmp_path / "two" / "choices.jsonl").read_text() == (tmp_path / "one" / "choices.jsonl").read_text()
    _close(summary, json.loads((tmp_path / "two" / "summary.json").read_text()) | {"checkpoint": summary["checkpoint"]})


HEARTBEAT_S = 10


@pytest.fixture(scope="module")
def killed(runs, tmp_path_factory):
    """Process 1 of a 2-process tiny run SIGKILLs itself after step 15 (checkpoint 10 committed):
    (process 0's seconds from process 1's death to its own exit, its exit code, the run dir)."""
    root = tmp_path_factory.mktemp("fault")
    cmd = [sys.executable, "-m", "leeroo_jax.train", "--config=configs/tiny.py", f"--config.output_root={root}",
           f"--config.distributed.heartbeat_timeout_s={HEARTBEAT_S}"]
    base = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = []
    for i in range(2):  # what launch/local_multiprocess.sh does, with a handle on each process
        env = base | {"JAX_COORDINATOR_ADDRESS": "127.0.0.1:12394", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(i),
                      "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
        procs.append(subprocess.Popen([*cmd, "--config.train.fault_at_step=15", "--config.train.fault_process=1"],
                                      env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    try:
        procs[1].wait(timeout=300)
        died = time.monotonic()
        procs[0].wait(timeout=HEARTBEAT_S + 120)
        waited = time.monotonic() - died
    finally:
        for p in procs:
            p.kill()
    assert procs[1].returncode == -signal.SIGKILL
    err = procs[0].stderr.read()
    return waited, procs[0].returncode, root / "tiny", cmd, err


def test_killing_one_process_ends_the_other_within_the_heartbeat_timeout(killed):
    waited, code, _, _, err = killed
    assert code != 0, err[-2000:]
    assert waited < HEARTBEAT_S + 30, waited  # no hang: the coordination service declares process 1 dead
    assert "heartbeat" in err, err[-2000:]  # ...and says why


def test_rerunning_after_the_kill_resumes_to_the_uninterrupted_parameters(runs, killed):
    _, one = runs
    _, _, run, cmd, _ = killed
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"PORT": "12395"}
    proc = subprocess.run(["bash", "launch/local_multiprocess.sh", "2", *cmd], capture_output=True, text=True,
                          timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("resumed from step 10") == 2  # both processes, from the last committed checkpoint
    _close(json.loads((one / "report.json").read_text()), json.loads((run / "report.json").read_text()), "report")
    a, b = (dict(nnx.traversals.flatten_mapping(nnx.to_pure_dict(load_run(d).trainer.state[0]))) for d in (run, one))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=0, atol=1e-6, err_msg=str(k))
