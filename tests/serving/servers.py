"""Servers as subprocesses on loopback, for the serving tests: start one, wait until it
answers /health, stop it with SIGTERM and check it stopped gracefully."""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import httpx2 as httpx
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], port: int, log: pathlib.Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as a server has
    return subprocess.Popen([sys.executable, "-m", "leeroo_jax.serve", f"--port={port}", *args], cwd=ROOT, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)


def ready(proc: subprocess.Popen, port: int, log: pathlib.Path, deadline_s: float = 300) -> None:
    end = time.time() + deadline_s
    while time.time() < end:
        if proc.poll() is not None:
            pytest.fail(f"server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    pytest.fail(f"server not ready in {deadline_s} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen, log: pathlib.Path, signalled: bool = False) -> None:
    """SIGTERM ends a server gracefully: uvicorn finishes the requests in flight, the app closes
    its batches and clients, then uvicorn re-raises the signal (exit status -SIGTERM)."""
    if not signalled:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=40) in (0, -signal.SIGTERM)
    assert "stopped: every accepted request was answered" in log.read_text()
