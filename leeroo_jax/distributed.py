"""Multi-host start-up and process-0 helpers.

`initialize()` must run before anything asks jax about devices: on a TPU pod or a Slurm /
GPU cluster it discovers the coordinator from the environment; on one machine it is a no-op.
"""

from __future__ import annotations

import os

import jax


def _multi_host_env() -> bool:
    keys = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES",
            "MEGASCALE_COORDINATOR_ADDRESS", "OMPI_COMM_WORLD_SIZE")
    return any(os.environ.get(k) for k in keys)


def initialize() -> None:
    """jax.distributed.initialize() when launched on several hosts; nothing otherwise."""
    if not _multi_host_env() or jax.distributed.is_initialized():
        return
    if os.environ.get("JAX_NUM_PROCESSES"):  # explicit (launch/local_multiprocess.sh, bare clusters)
        jax.distributed.initialize(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
    else:  # TPU pods, Slurm, Open MPI: jax detects the cluster itself
        jax.distributed.initialize()


def is_main_process() -> bool:
    return jax.process_index() == 0
