"""Two processes on localhost form one jax.distributed job with a global, host-sharded batch."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_two_processes_build_one_global_batch():
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS",)}
    env["PORT"] = "12391"
    proc = subprocess.run(["bash", str(ROOT / "launch/local_multiprocess.sh"), "2", sys.executable,
                           str(ROOT / "tests/multiprocess_worker.py")], capture_output=True, text=True, timeout=240,
                          env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = sorted(line for line in proc.stdout.splitlines() if line.startswith("process"))
    # each host contributes 4 rows of its own index: the global sum is 4*2*0 + 4*2*1
    assert lines == [f"process {i}/2 devices=8 global_shape=(8, 2) sum=8.0" for i in range(2)]
