#!/usr/bin/env bash
# Multi-node GPU run under Slurm: one process per node, all local GPUs per process.
#
#   sbatch --nodes=2 --gpus-per-node=8 launch/gpu_multinode.sh python -m leeroo_jax.train --config=configs/mmlu.py
#
# jax.distributed.initialize() reads the Slurm environment (SLURM_JOB_ID, node list), so no
# coordinator flags are needed. Without Slurm, export JAX_COORDINATOR_ADDRESS=host:port,
# JAX_NUM_PROCESSES and JAX_PROCESS_ID on each node and run the command directly.
#SBATCH --ntasks-per-node=1
set -euo pipefail
[[ $# -ge 1 ]] || { echo "usage: $0 COMMAND..." >&2; exit 2; }
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
exec srun --ntasks-per-node=1 .venv/bin/"$@"
