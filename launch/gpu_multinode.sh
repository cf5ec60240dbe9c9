#!/usr/bin/env bash
# Start a leeroo_jax job as one process per GPU host, each process driving all of its host's
# GPUs (the layout leeroo_jax expects: jax.distributed across hosts, a device mesh inside).
#
# (a) Slurm: inside an allocation (sbatch or salloc) it runs
#       srun --ntasks-per-node=1 --kill-on-bad-exit=1 launch/gpu_multinode.sh --slurm-task -- COMMAND...
#     i.e. COMMAND once per node. jax.distributed.initialize() (leeroo_jax/distributed.py) reads
#     the coordinator, process count and id from the SLURM_* variables srun sets. jax would also
#     restrict each process to the one GPU numbered SLURM_LOCALID (its one-process-per-GPU
#     default), so each task first exports JAX_LOCAL_DEVICE_IDS=0,...,n-1 for the n GPUs it
#     sees (CUDA_VISIBLE_DEVICES as Slurm set it, else nvidia-smi). --kill-on-bad-exit: when one
#     process dies the others stop instead of waiting minutes for the coordination service.
#
#       sbatch --nodes=2 --gpus-per-node=8 launch/gpu_multinode.sh python -m leeroo_jax.train --config=configs/mmlu.py
#
#     Submit from the repository root: sbatch runs a copy of this script from Slurm's spool
#     directory, so the repository is found as $SLURM_SUBMIT_DIR, and it must be on a
#     filesystem every node mounts (as must config.output_root, see BUILD.md).
#
# (b) Bare hosts with an explicit coordinator: run on every host, with its own --process-id
#     (0 on the host named by --coordinator, which serves the coordination service there):
#
#       launch/gpu_multinode.sh --coordinator host0:12355 --num-processes 2 --process-id 0 -- python -m leeroo_jax.train --config=configs/mmlu.py
#       launch/gpu_multinode.sh --coordinator host0:12355 --num-processes 2 --process-id 1 -- python -m leeroo_jax.train --config=configs/mmlu.py
#
#     It exports JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (which
#     distributed.initialize() passes to jax.distributed.initialize) and execs COMMAND. Every
#     process sees all of its host's GPUs (set CUDA_VISIBLE_DEVICES to use fewer).
#
# Both modes run COMMAND from the repository root with .venv/bin first on PATH, so `python`
# is the project's venv (created by `make setup` plus `pip install "jax[cuda12]==<pin>"`,
# BUILD.md). `--dry-run` prints the command it would run (shell-quoted) and runs nothing.
#
# Settings (environment variables):
#   SRUN_ARGS   extra srun options, split on spaces (e.g. "--container-image=...").
#SBATCH --ntasks-per-node=1
set -euo pipefail

PROG=${0##*/}

usage() {
  cat <<EOF
usage: $PROG [--dry-run] COMMAND...                (inside a Slurm allocation: sbatch/salloc)
       $PROG [--dry-run] --coordinator HOST:PORT --num-processes N --process-id I [--] COMMAND...
Start COMMAND as one process per host, each using all of the host's GPUs (see the comments
at the top of this script).
EOF
}
die_usage() { echo "$PROG: $* (see --help)" >&2; exit 2; }

shq() {  # shell-quote the arguments into one pasteable line
  local a pre q out=()
  for a in "$@"; do
    pre=""
    if [[ $a == --*=* && ${a%%=*} =~ ^--[A-Za-z0-9._-]+$ ]]; then pre=${a%%=*}=; a=${a#*=}; fi  # --flag='value'
    case $a in
      '' | *[!A-Za-z0-9_./:=@,+%^-]*)
        q=$(printf '%s.' "$a" | sed "s/'/'\\\\''/g")  # the '.' keeps trailing newlines from $()
        out+=("$pre'${q%.}'") ;;
      *) out+=("$pre$a") ;;
    esac
  done
  printf '%s\n' "${out[*]}"
}

dry_run=0 task=0 coordinator="" num_processes="" process_id=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --dry-run) dry_run=1 ;;
    --slurm-task) task=1 ;;  # internal: what srun runs on each node
    --coordinator | --num-processes | --process-id)
      [[ $# -ge 2 ]] || die_usage "$1 needs a value"
      case $1 in
        --coordinator) coordinator=$2 ;;
        --num-processes) num_processes=$2 ;;
        --process-id) process_id=$2 ;;
      esac
      shift ;;
    --coordinator=*) coordinator=${1#*=} ;;
    --num-processes=*) num_processes=${1#*=} ;;
    --process-id=*) process_id=${1#*=} ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    -*) die_usage "unknown option '$1'" ;;
    *) break ;;  # the command
  esac
  shift
done
[[ $# -ge 1 ]] || die_usage "no COMMAND"

# The repository: this script's parent, unless sbatch runs a spooled copy of the script.
repo=$(cd "$(dirname "$0")/.." && pwd)
if [[ ! -d $repo/leeroo_jax && -n ${SLURM_SUBMIT_DIR:-} ]]; then repo=$SLURM_SUBMIT_DIR; fi
[[ -d $repo/leeroo_jax ]] || die_usage "cannot find the repository (under sbatch, submit from the repository root)"
cd "$repo"
[[ -d .venv/bin ]] && PATH=$repo/.venv/bin:$PATH

if [[ $task == 1 ]]; then  # one Slurm task: all of this node's GPUs, then the command
  if [[ -z ${JAX_LOCAL_DEVICE_IDS:-} ]]; then
    n=0
    if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then
      n=$(printf '%s\n' "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | grep -c .)
    elif command -v nvidia-smi >/dev/null 2>&1; then
      n=$(nvidia-smi -L | grep -c '^GPU' || true)
    fi
    if ((n > 0)); then
      ids=0
      for ((i = 1; i < n; i++)); do ids="$ids,$i"; done
      export JAX_LOCAL_DEVICE_IDS=$ids
    else
      echo "$PROG: found no GPU on ${HOSTNAME:-this node}; jax will see only the device SLURM_LOCALID names" >&2
    fi
  fi
  exec "$@"
fi

if [[ -n $coordinator || -n $num_processes || -n $process_id ]]; then  # (b) bare hosts
  [[ -n $coordinator && -n $num_processes && -n $process_id ]] ||
    die_usage "--coordinator, --num-processes and --process-id go together"
  [[ $coordinator =~ ^[^:]+:[0-9]+$ ]] || die_usage "--coordinator must be HOST:PORT, got '$coordinator'"
  if ! [[ $num_processes =~ ^[0-9]+$ ]] || ((10#$num_processes < 1)); then
    die_usage "--num-processes must be a positive integer, got '$num_processes'"
  fi
  if ! [[ $process_id =~ ^[0-9]+$ ]] || ((10#$process_id >= 10#$num_processes)); then
    die_usage "--process-id must be an integer in [0, $num_processes), got '$process_id'"
  fi
  if [[ $dry_run == 1 ]]; then
    echo "cd $(shq "$repo") && $(shq env JAX_COORDINATOR_ADDRESS="$coordinator" JAX_NUM_PROCESSES="$num_processes" JAX_PROCESS_ID="$process_id" "$@")"
    exit 0
  fi
  export JAX_COORDINATOR_ADDRESS=$coordinator JAX_NUM_PROCESSES=$num_processes JAX_PROCESS_ID=$process_id
  exec "$@"
fi

# (a) Slurm
[[ -n ${SLURM_JOB_ID:-} ]] ||
  die_usage "not inside a Slurm allocation (no SLURM_JOB_ID); on bare hosts pass --coordinator, --num-processes and --process-id"
srun_args=()
[[ -n ${SRUN_ARGS:-} ]] && read -r -a srun_args <<<"$SRUN_ARGS"
cmd=(srun --ntasks-per-node=1 --kill-on-bad-exit=1 ${srun_args[@]+"${srun_args[@]}"} "$repo/launch/gpu_multinode.sh" --slurm-task -- "$@")
if [[ $dry_run == 1 ]]; then
  echo "cd $(shq "$repo") && $(shq "${cmd[@]}")"
  exit 0
fi
exec "${cmd[@]}"
