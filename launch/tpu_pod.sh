#!/usr/bin/env bash
# Run a leeroo_jax job on every worker (host) of a Cloud TPU VM slice, driven from your
# workstation with gcloud. The steps, in order (each can be skipped; create/delete are opt-in):
#
#   create  queue a TPU slice (`gcloud compute tpus queued-resources create`) and poll
#           `describe` until it is ACTIVE, for at most WAIT_S seconds. A queued request waits
#           for capacity where a plain `tpu-vm create` of a multi-host slice just fails.
#   copy    pack the files git would commit from SRC_DIR's working tree (tracked, plus
#           untracked files that are not git-ignored, so uncommitted edits travel too; never
#           .venv/, .cache/ or checkpoints/, which are large or machine-specific) into one
#           archive, scp it once to every worker and unpack it into REPO_DIR. One file per
#           worker is far faster than `scp --recurse` of hundreds of small files to 16 hosts,
#           and the workers need neither git nor credentials for the repository. Unpacking
#           over an earlier copy keeps the workers' .venv/.cache (setup stays incremental) but
#           does not delete files you deleted locally.
#   setup   on every worker: `make setup` (venv from pyproject.toml, weights into .cache/) with
#           a Python >= 3.11 (the TPU runtime images ship Ubuntu 22.04's 3.10, so python3.11 is
#           installed from apt when needed), then `jax[tpu]` at the jax version pyproject.toml
#           pins, which adds libtpu to the same jax (no -U: that would move other pins).
#   run     COMMAND on every worker at once (`tpu-vm ssh --worker=all`), from REPO_DIR with the
#           venv active. jax.distributed.initialize() (leeroo_jax/distributed.py) finds the
#           coordinator from the TPU metadata; process 0 writes the shared files.
#   fetch   copy RUN_DIR (= <config.output_root>/<config.run_name>) back from worker 0 into
#           LOCAL_OUT. Nothing to copy when RUN_DIR is a gs:// URL.
#   delete  delete the queued resource and its TPU VMs (`--force --quiet`).
#
# A failing step stops the script (non-zero exit); nothing after it runs, --delete included,
# so a failed run can be inspected. It then prints the delete command, since the slice bills.
# The run step lasts as long as the job and dies with this ssh session: start long jobs from a
# shell that survives (tmux, screen, Cloud Shell).
#
# Multi-host caveat (BUILD.md): the jobs assume <output_root> is a filesystem all processes
# share (process 0 creates the record store and the embedding cache and the others then open
# them; every process writes its part of an Orbax checkpoint). The workers of a multi-host
# slice have separate disks: mount shared storage (Filestore NFS, or a bucket via gcsfuse) at
# the same path on every worker, e.g. from SETUP_EXTRA, and pass --config.output_root=<mount>.
# --config.output_root=gs://bucket/runs writes the run directory (reports, metrics, TensorBoard,
# Orbax checkpoints) to the bucket through etils.epath (install gcsfs on the workers), but the
# record store stays on a filesystem: pass --config.data.records=<mount>/records as well.
# RUN_DIR=gs://... tells this script there is nothing to copy back.
#
# Settings (environment variables):
#   TPU_NAME          TPU VM (node) name; required.
#   ZONE              zone, e.g. us-west4-a; required.
#   PROJECT           project; default: gcloud's configured project.
#   QUEUED_RESOURCE   queued-resource id for create/delete; default: $TPU_NAME.
#   ACCELERATOR_TYPE  default v5litepod-64 (16 hosts x 4 v5e chips).
#   RUNTIME_VERSION   default v2-alpha-tpuv5-lite (the v5e image; v5p: v2-alpha-tpuv5,
#                     v6e: v2-alpha-tpuv6e, v4: tpu-ubuntu2204-base).
#   SPOT              1 = Spot VMs (cheaper, preemptible), same as --spot; default 0.
#   WAIT_S, POLL_S    create: give up after WAIT_S s (default 3600), poll every POLL_S s (30).
#   SRC_DIR           local checkout to copy; default: the repository holding this script.
#   REPO_DIR          where it goes on the workers, relative to the home directory or
#                     absolute; default leeroo_jax.
#   RUN_DIR           the run's output directory on worker 0, relative to REPO_DIR or
#                     absolute, or gs://...; default checkpoints/mmlu (configs/mmlu.py).
#   LOCAL_OUT         local directory RUN_DIR is copied into; default
#                     $SRC_DIR/checkpoints/$TPU_NAME (so checkpoints/<tpu>/mmlu, git-ignored).
#   JAX_TPU_SPEC      pip requirement for TPU jax; default jax[tpu]==<pyproject's jax pin>.
#   JAX_TPU_FIND_LINKS  pip -f index for libtpu; default JAX's libtpu_releases.html.
#   SETUP_EXTRA       shell run on every worker at the end of setup (e.g. mount shared storage).
#
# Example (create a v5e-64 slice, train, fetch checkpoints/mmlu, delete the slice):
#
#   TPU_NAME=leeroo-v5e ZONE=us-west4-a PROJECT=my-proj \
#     launch/tpu_pod.sh --create --delete -- python -m leeroo_jax.train --config=configs/mmlu.py
#
# `--dry-run` prints every command (shell-quoted, ready to paste) and runs none.
# Written for bash >= 3.2 (macOS) but only tested with bash 5.
set -euo pipefail

PROG=${0##*/}
STEPS_ALL="create copy setup run fetch delete"

usage() {
  cat <<EOF
usage: $PROG [options] -- COMMAND...
Run COMMAND on every worker of the TPU slice \$TPU_NAME in \$ZONE (see the comments at the
top of this script for every setting).
Steps, in order: create (with --create), copy, setup, run, fetch, delete (with --delete).
options:
  --create        queue the slice first and wait until it is ACTIVE
  --delete        delete the queued resource and its VMs at the end
  --spot          create Spot VMs (same as SPOT=1)
  --skip STEPS    comma-separated steps to leave out (e.g. --skip copy,setup)
  --only STEPS    run exactly these steps (e.g. --only delete)
  --dry-run       print the commands, run none
  -h, --help      this message
EOF
}

die_usage() { echo "$PROG: $* (see --help)" >&2; exit 2; }
die() { echo "$PROG: $*" >&2; exit 1; }

# Shell-quote the arguments into one line that pastes back as the same argv.
shq() {
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

# ---- arguments --------------------------------------------------------------------------
do_create=0 do_delete=0 dry_run=0 only="" skip=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --create) do_create=1 ;;
    --delete) do_delete=1 ;;
    --spot) SPOT=1 ;;
    --dry-run) dry_run=1 ;;
    --skip) [[ $# -ge 2 ]] || die_usage "--skip needs a value"; skip="$skip,$2"; shift ;;
    --skip=*) skip="$skip,${1#*=}" ;;
    --only) [[ $# -ge 2 ]] || die_usage "--only needs a value"; only="$only,$2"; shift ;;
    --only=*) only="$only,${1#*=}" ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) die_usage "unknown argument '$1'; options go before --, the command after it" ;;
  esac
  shift
done
# "$@" is now COMMAND (possibly empty).

for s in ${skip//,/ } ${only//,/ }; do
  case " $STEPS_ALL " in *" $s "*) ;; *) die_usage "unknown step '$s' (steps: ${STEPS_ALL// /,})" ;; esac
done
steps=""
for s in $STEPS_ALL; do
  if [[ -n $only ]]; then
    case ",$only," in *",$s,"*) steps="$steps $s" ;; esac
    continue
  fi
  [[ $s == create && $do_create == 0 ]] && continue
  [[ $s == delete && $do_delete == 0 ]] && continue
  case ",$skip," in *",$s,"*) continue ;; esac
  steps="$steps $s"
done
has() { case " $steps " in *" $1 "*) return 0 ;; esac; return 1; }

# ---- settings ---------------------------------------------------------------------------
SRC_DIR=${SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
TPU_NAME=${TPU_NAME:-}
ZONE=${ZONE:-}
PROJECT=${PROJECT:-}
QUEUED_RESOURCE=${QUEUED_RESOURCE:-$TPU_NAME}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v5litepod-64}
RUNTIME_VERSION=${RUNTIME_VERSION:-v2-alpha-tpuv5-lite}
SPOT=${SPOT:-0}
WAIT_S=${WAIT_S:-3600}
POLL_S=${POLL_S:-30}
REPO_DIR=${REPO_DIR:-leeroo_jax}
REPO_DIR=${REPO_DIR#\~/}  # remote commands start in the home directory; a quoted ~ would not expand
RUN_DIR=${RUN_DIR:-checkpoints/mmlu}
LOCAL_OUT=${LOCAL_OUT:-$SRC_DIR/checkpoints/$TPU_NAME}
JAX_TPU_FIND_LINKS=${JAX_TPU_FIND_LINKS:-https://storage.googleapis.com/jax-releases/libtpu_releases.html}
SETUP_EXTRA=${SETUP_EXTRA:-}
if [[ -z ${JAX_TPU_SPEC:-} ]]; then
  # The same jax version as the CPU install: jax[tpu]==X only adds libtpu next to jax X.
  pin=$(sed -n 's/^[[:space:]]*"jax==\([^"]*\)".*/\1/p' "$SRC_DIR/pyproject.toml" 2>/dev/null | head -n 1)
  JAX_TPU_SPEC="jax[tpu]${pin:+==$pin}"
fi

[[ -n $TPU_NAME ]] || die_usage "set TPU_NAME (the TPU VM name)"
[[ -n $ZONE ]] || die_usage "set ZONE (e.g. us-west4-a)"
[[ $WAIT_S =~ ^[0-9]+$ && $POLL_S =~ ^[0-9]+$ ]] || die_usage "WAIT_S and POLL_S must be whole seconds"
[[ -n $steps ]] || die_usage "no step left to run"
if has run && [[ $# -eq 0 ]]; then die_usage "no COMMAND after --"; fi
if has copy && [[ ! -d $SRC_DIR/.git && ! -f $SRC_DIR/.git ]]; then die_usage "SRC_DIR=$SRC_DIR is not a git checkout"; fi

where=(--zone="$ZONE")
[[ -n $PROJECT ]] && where+=(--project="$PROJECT")

# ---- helpers ----------------------------------------------------------------------------
step="" ; deleted=0
run() {  # print (dry run) or run one command
  if [[ $dry_run == 1 ]]; then shq "$@"; else "$@"; fi
}
on_exit() {
  local rc=$?
  [[ -n ${tmp:-} ]] && rm -rf "$tmp"
  if [[ $rc -ne 0 && $dry_run == 0 ]]; then
    echo "$PROG: step '$step' failed (exit $rc); later steps did not run" >&2
    if [[ $deleted == 0 ]] && { has create || has delete; }; then
      echo "$PROG: the slice may still be up (and billing); delete it with:" >&2
      echo "  $(shq gcloud compute tpus queued-resources delete "$QUEUED_RESOURCE" "${where[@]}" --force --quiet)" >&2
    fi
  fi
  return $rc
}
trap on_exit EXIT
ssh_all() { run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${where[@]}" --worker=all --command="$1"; }

ARCHIVE_REMOTE=leeroo_jax-src.tgz  # in each worker's home directory, removed once unpacked
Q_REPO=$(shq "$REPO_DIR")

# ---- steps ------------------------------------------------------------------------------
step_create() {
  local spot=()
  [[ $SPOT == 1 ]] && spot=(--spot)
  run gcloud compute tpus queued-resources create "$QUEUED_RESOURCE" --node-id="$TPU_NAME" "${where[@]}" \
    --accelerator-type="$ACCELERATOR_TYPE" --runtime-version="$RUNTIME_VERSION" ${spot[@]+"${spot[@]}"}
  local describe=(gcloud compute tpus queued-resources describe "$QUEUED_RESOURCE" "${where[@]}" --format='value(state.state)')
  if [[ $dry_run == 1 ]]; then
    echo "# repeat every ${POLL_S}s, at most ${WAIT_S}s, until it prints ACTIVE:"
    shq "${describe[@]}"
    return
  fi
  local start=$SECONDS state
  while :; do
    state=$("${describe[@]}")
    case $state in
      ACTIVE) echo "$PROG: $QUEUED_RESOURCE is ACTIVE"; return ;;
      FAILED | SUSPENDING | SUSPENDED | DELETING) die "$QUEUED_RESOURCE is $state; it will not become ACTIVE" ;;
    esac
    if ((SECONDS - start >= WAIT_S)); then
      die "$QUEUED_RESOURCE still ${state:-in no state} after ${WAIT_S}s (raise WAIT_S, or create without --create later)"
    fi
    echo "$PROG: $QUEUED_RESOURCE is ${state:-?}; waiting (${POLL_S}s)"
    sleep "$POLL_S"
  done
}

# The files git would commit, from the working tree: tracked (deleted ones are still listed, so
# only those that exist) plus untracked, not ignored. COPYFILE_DISABLE: no macOS ._ files.
# The $ are for the inner bash:
# shellcheck disable=SC2016
PACK='set -o pipefail; cd "$1" && git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d "" f; do if [ -e "$f" ] || [ -L "$f" ]; then printf "%s\0" "$f"; fi; done |
  COPYFILE_DISABLE=1 tar --null -T - -czf "$2"'

step_copy() {
  local archive
  if [[ $dry_run == 1 ]]; then
    archive=${TMPDIR:-/tmp}/leeroo_jax-src.tgz
  else
    tmp=$(mktemp -d)
    archive=$tmp/src.tgz
    echo "$PROG: packing $SRC_DIR ($(git -C "$SRC_DIR" describe --always --dirty 2>/dev/null || echo no commit))"
  fi
  run bash -c "$PACK" pack "$SRC_DIR" "$archive"
  run gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:$ARCHIVE_REMOTE" "${where[@]}" --worker=all
  ssh_all "mkdir -p $Q_REPO && tar -xzf $ARCHIVE_REMOTE -C $Q_REPO && rm -f $ARCHIVE_REMOTE"
}

step_setup() {
  # POSIX sh, run by each worker's login shell.
  local script
  script="set -e
cd $Q_REPO
PY=python3
python3 -c \"import sys; sys.exit(sys.version_info < (3, 11))\" 2>/dev/null || PY=python3.11
need=
command -v make >/dev/null 2>&1 || need=\"\$need make\"
\"\$PY\" -c \"import ensurepip\" 2>/dev/null || need=\"\$need \$PY \$PY-venv\"
if [ -n \"\$need\" ]; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \$need; fi
make setup PYTHON=\"\$PY\"
.venv/bin/python -m pip install -q $(shq "$JAX_TPU_SPEC") -f $(shq "$JAX_TPU_FIND_LINKS")"
  [[ -n $SETUP_EXTRA ]] && script="$script
$SETUP_EXTRA"
  ssh_all "$script"
}

step_run() {
  ssh_all "cd $Q_REPO && . .venv/bin/activate && exec $(shq "$@")"
}

step_fetch() {
  case $RUN_DIR in
    gs://*)
      echo "$PROG: RUN_DIR=$RUN_DIR is in Cloud Storage; nothing to copy back (gcloud storage cp -r $RUN_DIR .)"
      return ;;
  esac
  local remote=$RUN_DIR
  [[ $remote == /* ]] || remote=$REPO_DIR/$RUN_DIR
  run mkdir -p "$LOCAL_OUT"
  # Only process 0 writes the run's shared files (reports, routes, TensorBoard), so worker 0
  # holds them; Orbax checkpoint parts written by other processes are on their own disks
  # unless output_root is shared storage (see the caveat at the top).
  run gcloud compute tpus tpu-vm scp --recurse "$TPU_NAME:$remote" "$LOCAL_OUT" "${where[@]}" --worker=0
  [[ $dry_run == 1 ]] || echo "$PROG: run directory copied to $LOCAL_OUT/${remote##*/}"
}

step_delete() {
  run gcloud compute tpus queued-resources delete "$QUEUED_RESOURCE" "${where[@]}" --force --quiet
  deleted=1
}

for step in $steps; do
  [[ $dry_run == 1 ]] && echo "# --- $step"
  "step_$step" "$@"
done
step=""
