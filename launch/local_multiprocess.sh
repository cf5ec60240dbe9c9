#!/usr/bin/env bash
# N processes on this machine, each with its own fake CPU devices: a rehearsal of a
# multi-host run (jax.distributed over localhost) without a cluster.
#
#   launch/local_multiprocess.sh 2 python -m leeroo_jax.score --config=configs/mmlu.py
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: $0 NUM_PROCESSES COMMAND..." >&2; exit 2; }
N=$1; shift
PORT=${PORT:-12355}
pids=()
for ((i = 0; i < N; i++)); do
  JAX_COORDINATOR_ADDRESS=127.0.0.1:$PORT JAX_NUM_PROCESSES=$N JAX_PROCESS_ID=$i JAX_PLATFORMS=cpu \
    XLA_FLAGS=--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-4} "$@" &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
exit $status
