#!/usr/bin/env bash
# Run a leeroo_jax job on every host of a Cloud TPU pod slice (multi-host).
#
#   launch/tpu_pod.sh TPU_NAME ZONE [PROJECT] -- python -m leeroo_jax.train --config=configs/mmlu.py
#
# Every host runs the same command; jax.distributed.initialize() (leeroo_jax/distributed.py)
# discovers the coordinator from the TPU metadata. The repo must already be on each host
# (e.g. `gcloud compute tpus tpu-vm scp --worker=all`), set up with BUILD.md's TPU steps.
set -euo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: $0 TPU_NAME ZONE [PROJECT] -- COMMAND..." >&2
  exit 2
fi
TPU=$1 ZONE=$2; shift 2
PROJECT_ARGS=()
if [[ $1 != "--" ]]; then PROJECT_ARGS=(--project "$1"); shift; fi
[[ $1 == "--" ]] || { echo "error: expected -- before the command" >&2; exit 2; }
shift
REPO_DIR=${REPO_DIR:-\~/leeroo_jax}
CMD="cd $REPO_DIR && source .venv/bin/activate && $(printf '%q ' "$@")"
exec gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" "${PROJECT_ARGS[@]}" --worker=all --command "$CMD"
