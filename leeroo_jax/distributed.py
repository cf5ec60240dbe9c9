"""Multi-host start-up and process-0 helpers.

`initialize()` must run before anything asks jax about devices: on a TPU pod or a Slurm /
GPU cluster it discovers the coordinator from the environment; on one machine it is a no-op.
"""

from __future__ import annotations

import itertools
import os
from typing import Callable, TypeVar

import jax
import numpy as np

T = TypeVar("T")
_BARRIERS = itertools.count()
BARRIER_TIMEOUT_S = 3 * 3600  # process 0 may embed or import for a long time first


def _multi_host_env() -> bool:
    keys = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES",
            "MEGASCALE_COORDINATOR_ADDRESS", "OMPI_COMM_WORLD_SIZE")
    return any(os.environ.get(k) for k in keys)


def initialize(heartbeat_timeout_s: int = 100, shutdown_timeout_s: int = 300) -> None:
    """jax.distributed.initialize() when launched on several hosts; nothing otherwise.

    A process whose heartbeats stop for heartbeat_timeout_s is declared dead by the
    coordination service, and every other process then aborts (non-zero exit) rather than
    block in its next collective or barrier: a lost host ends the job in bounded time.
    """
    if not _multi_host_env() or jax.distributed.is_initialized():
        return
    timeouts = dict(heartbeat_timeout_seconds=int(heartbeat_timeout_s), shutdown_timeout_seconds=int(shutdown_timeout_s))
    if os.environ.get("JAX_NUM_PROCESSES"):  # explicit (launch/local_multiprocess.sh, bare clusters)
        jax.distributed.initialize(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
            **timeouts,
        )
    else:  # TPU pods, Slurm, Open MPI: jax detects the cluster itself
        jax.distributed.initialize(**timeouts)


def is_main_process() -> bool:
    return jax.process_index() == 0


def barrier(name: str, timeout_s: float = BARRIER_TIMEOUT_S) -> None:
    """Every process waits here until all have arrived (the coordination service's barrier, as
    Orbax's multihost sync uses; no device collective). Every process must make the same
    sequence of barrier calls. Nothing to wait for in one process."""
    if jax.process_count() == 1:
        return
    client = jax._src.distributed.global_state.client  # noqa: SLF001  the public sync helpers are collectives
    client.wait_at_barrier(f"leeroo_{name}_{next(_BARRIERS)}", int(timeout_s * 1000))


def main_first(name: str, fn: Callable[[], T]) -> T:
    """fn() in process 0, then, after a barrier, in every other process: a shared cache or store
    is created and written by one process, and the others open what it wrote."""
    if is_main_process():
        out = fn()
        barrier(name)
        return out
    barrier(name)
    return fn()


def broadcast_from_main(x: np.ndarray) -> np.ndarray:
    """Process 0's host array in every process (the same shape and dtype everywhere): one
    process's view decides where the processes' views could differ (e.g. of a cache on disk)."""
    if jax.process_count() == 1:
        return x
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.broadcast_one_to_all(x))


def _shares(n: int) -> list[np.ndarray]:
    return np.array_split(np.arange(n), jax.process_count())


def process_share(n: int) -> np.ndarray:
    """This process's contiguous share of range(n), for host work split over the processes."""
    return _shares(n)[jax.process_index()]


def allgather_shares(local: np.ndarray, n: int) -> np.ndarray:
    """[n, ...]: every process's `local` rows (its `process_share(n)`), in order, in every
    process. The shares are padded to one size for the all-gather and cut back."""
    if jax.process_count() == 1:
        return local
    from jax.experimental import multihost_utils

    sizes = [len(s) for s in _shares(n)]
    padded = np.zeros((max(sizes), *local.shape[1:]), local.dtype)
    padded[: len(local)] = local
    got = np.asarray(multihost_utils.process_allgather(padded))  # [processes, max share, ...]
    return np.concatenate([got[i, :k] for i, k in enumerate(sizes)])
