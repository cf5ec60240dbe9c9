"""Running a job as a subprocess (or as N processes through launch/local_multiprocess.sh) in a
test, and saying why it failed: the lines that name the error, not only the output's tail
(where N processes' tracebacks interleave and the first cause scrolls away)."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
_CAUSE = re.compile(r"Error|error:|Check failed|Terminating|FATAL|^F\d{4}|DEADLINE|UNAVAILABLE|Aborted|Killed")


def why(proc: subprocess.CompletedProcess, tail: int = 2000) -> str:
    """rc, the first lines that look like a cause, and the end of stderr."""
    causes = [line[:300] for line in proc.stderr.splitlines() if _CAUSE.search(line)][:20]
    return f"rc={proc.returncode}\ncauses:\n" + "\n".join(causes) + f"\n... stderr tail:\n{proc.stderr[-tail:]}"


def run_processes(n: int, args: list[str], port: int, env: dict | None = None,
                  timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` (or `python SCRIPT.py ARGS`) as n processes x 4 fake CPU devices."""
    full_env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"PORT": str(port)} | (env or {})
    run = [sys.executable, *args] if args[0].endswith(".py") else [sys.executable, "-m", *args]
    return subprocess.run(["bash", "launch/local_multiprocess.sh", str(n), *run],
                          capture_output=True, text=True, timeout=timeout, env=full_env, cwd=ROOT)
