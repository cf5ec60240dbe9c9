"""launch/tpu_pod.sh and launch/gpu_multinode.sh against stub `gcloud` / `srun` executables.

No cloud and no cluster here: stubs placed first on PATH append their argv (one JSON list per
line) to a log and print what the scripts read back (the queued resource's state). The tests
check the exact command sequence, then replay the remote parts the scripts hand to
`tpu-vm ssh --command` in a fake worker home directory with bash, so the quoting is tested by
execution rather than by string comparison.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TPU = REPO / "launch" / "tpu_pod.sh"
GPU = REPO / "launch" / "gpu_multinode.sh"

# A stand-in for every external program; its behaviour is chosen by its name and STUB_* variables.
STUB = """\
import json, os, pathlib, shutil, sys
name = os.path.basename(sys.argv[0])
argv = [name] + sys.argv[1:]
d = pathlib.Path(os.environ["STUB_DIR"])
with open(d / "calls.jsonl", "a") as f:
    f.write(json.dumps(argv) + "\\n")
fail = os.environ.get("STUB_FAIL")
if fail and fail in " ".join(argv):
    sys.exit("stub: failing on purpose")
if name == "gcloud" and argv[3:5] == ["queued-resources", "describe"]:
    states = os.environ.get("STUB_STATES", "ACTIVE").split(",")
    counter = d / "describes"
    n = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(n + 1))
    print(states[min(n, len(states) - 1)])
if name == "gcloud" and argv[3:5] == ["tpu-vm", "scp"]:
    for a in argv[5:]:
        if a.endswith(".tgz") and os.path.isfile(a):
            shutil.copy(a, d / "uploaded.tgz")
if name == "srun" and os.environ.get("STUB_SRUN_EXEC"):  # play one task
    rest = argv[1:]
    while rest and rest[0].startswith("-"):
        rest.pop(0)
    os.execvp(rest[0], rest)
out = os.environ.get("STUB_OUT_" + name.replace(".", "_").replace("-", "_"))
if out:
    print(out)
sys.exit(int(os.environ.get("STUB_RC_" + name.replace(".", "_").replace("-", "_"), "0")))
"""

SETTINGS = ("TPU_NAME", "ZONE", "PROJECT", "QUEUED_RESOURCE", "ACCELERATOR_TYPE", "RUNTIME_VERSION", "SPOT",
            "WAIT_S", "POLL_S", "SRC_DIR", "REPO_DIR", "RUN_DIR", "LOCAL_OUT", "JAX_TPU_SPEC",
            "JAX_TPU_FIND_LINKS", "SETUP_EXTRA", "SRUN_ARGS", "CUDA_VISIBLE_DEVICES")


def write_stub(bindir: pathlib.Path, name: str) -> None:
    p = bindir / name
    p.write_text(f"#!{sys.executable} -S\n{STUB}")
    p.chmod(0o755)


class Stubs:
    def __init__(self, root: pathlib.Path, *names: str):
        self.dir = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        for n in names:
            write_stub(self.bin, n)

    def calls(self) -> list[list[str]]:
        log = self.dir / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def reset(self) -> None:
        for f in ("calls.jsonl", "describes", "uploaded.tgz"):
            (self.dir / f).unlink(missing_ok=True)

    def env(self, path_rest: str | None = None, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SLURM_", "JAX_", "STUB_")) and k not in SETTINGS}
        env["PATH"] = f"{self.bin}:{os.environ['PATH'] if path_rest is None else path_rest}"
        env["STUB_DIR"] = str(self.dir)
        env.update(extra)
        return env


def run(cmd, env, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> pathlib.Path:
    """A small checkout standing in for the repository: committed, edited, untracked, ignored
    and deleted files, so the archive's selection is visible."""
    root = tmp_path_factory.mktemp("src")
    files = {
        "pyproject.toml": '[project]\nname = "x"\ndependencies = [\n  "jax==0.10.2",\n  "jaxlib==0.10.2",\n]\n',
        ".gitignore": ".venv/\n/checkpoints/*\n",
        "leeroo_jax/__init__.py": "",
        "configs/mmlu.py": "committed\n",
        "with space.txt": "x\n",
        "gone.py": "deleted later\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "init"], check=True)
    (root / "configs/mmlu.py").write_text("edited, not committed\n")
    (root / "notes.txt").write_text("untracked, not ignored\n")
    (root / ".venv/bin").mkdir(parents=True)
    (root / ".venv/bin/python").write_text("ignored\n")
    (root / "checkpoints/old").mkdir(parents=True)
    (root / "checkpoints/old/x").write_text("ignored\n")
    (root / "gone.py").unlink()
    return root


@pytest.fixture
def stubs(tmp_path) -> Stubs:
    return Stubs(tmp_path / "stubs", "gcloud", "srun", "nvidia-smi")


JOB = ["python", "-m", "leeroo_jax.train", "--config=configs/mmlu.py", "--config.note=two words", "it's"]


def tpu_env(stubs, src, tmp_path, **extra):
    return stubs.env(TPU_NAME="pod1", ZONE="us-west4-a", PROJECT="proj", SRC_DIR=str(src), POLL_S="0",
                     LOCAL_OUT=str(tmp_path / "out"), TMPDIR=str(tmp_path), **extra)


W = ["--zone=us-west4-a", "--project=proj"]
DESCRIBE = ["gcloud", "compute", "tpus", "queued-resources", "describe", "pod1", *W, "--format=value(state.state)"]


def ssh_command(call: list[str]) -> str:
    assert call[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod1"], call
    assert call[6:9] == [*W, "--worker=all"], call
    assert call[9].startswith("--command=") and len(call) == 10, call
    return call[9][len("--command="):]


def fake_worker(tmp_path: pathlib.Path) -> pathlib.Path:
    """A worker's home directory holding leeroo_jax/.venv, whose python is a recording stub."""
    home = tmp_path / "worker"
    venv_bin = home / "leeroo_jax" / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "activate").write_text('PATH="$PWD/.venv/bin:$PATH"\n')
    write_stub(venv_bin, "python")
    return home


def test_tpu_full_workflow(stubs, src, tmp_path):
    env = tpu_env(stubs, src, tmp_path, STUB_STATES="WAITING_FOR_RESOURCES,PROVISIONING,ACTIVE")
    r = run([TPU, "--create", "--delete", "--spot", "--", *JOB], env)
    assert r.returncode == 0, r.stderr
    calls = stubs.calls()
    assert [c[:5] for c in calls] == [
        ["gcloud", "compute", "tpus", "queued-resources", "create"],
        *[["gcloud", "compute", "tpus", "queued-resources", "describe"]] * 3,
        ["gcloud", "compute", "tpus", "tpu-vm", "scp"],  # the archive, to every worker
        ["gcloud", "compute", "tpus", "tpu-vm", "ssh"],  # unpack
        ["gcloud", "compute", "tpus", "tpu-vm", "ssh"],  # setup
        ["gcloud", "compute", "tpus", "tpu-vm", "ssh"],  # run
        ["gcloud", "compute", "tpus", "tpu-vm", "scp"],  # fetch from worker 0
        ["gcloud", "compute", "tpus", "queued-resources", "delete"],
    ]
    assert calls[0] == ["gcloud", "compute", "tpus", "queued-resources", "create", "pod1", "--node-id=pod1", *W,
                        "--accelerator-type=v5litepod-64", "--runtime-version=v2-alpha-tpuv5-lite", "--spot"]
    assert calls[1:4] == [DESCRIBE] * 3
    up = calls[4]
    assert up[5].endswith(".tgz") and up[6:] == ["pod1:leeroo_jax-src.tgz", *W, "--worker=all"]
    assert calls[8] == ["gcloud", "compute", "tpus", "tpu-vm", "scp", "--recurse", "pod1:leeroo_jax/checkpoints/mmlu",
                        str(tmp_path / "out"), *W, "--worker=0"]
    assert calls[9] == ["gcloud", "compute", "tpus", "queued-resources", "delete", "pod1", *W, "--force", "--quiet"]
    assert (tmp_path / "out").is_dir()
    assert not list(tmp_path.glob("tmp*")), "the local archive is removed"

    # The archive holds what git would commit, from the working tree.
    with tarfile.open(stubs.dir / "uploaded.tgz") as tar:
        names = {n.removeprefix("./") for n in tar.getnames()}
        edited = tar.extractfile("configs/mmlu.py").read()
    assert names == {"pyproject.toml", ".gitignore", "leeroo_jax/__init__.py", "configs/mmlu.py", "with space.txt",
                     "notes.txt"}
    assert edited == b"edited, not committed\n"

    # Replay the remote commands in a fake worker home: unpack, then run.
    home = fake_worker(tmp_path)
    shutil.copy(stubs.dir / "uploaded.tgz", home / "leeroo_jax-src.tgz")
    unpack, setup, job = (ssh_command(c) for c in calls[5:8])
    subprocess.run(["bash", "-c", unpack], cwd=home, check=True)
    assert (home / "leeroo_jax" / "with space.txt").exists() and not (home / "leeroo_jax-src.tgz").exists()
    assert (home / "leeroo_jax" / ".venv" / "bin" / "python").exists(), "an earlier venv survives the copy"

    subprocess.run(["bash", "-n", "-c", setup], check=True)
    assert "make setup" in setup and "'jax[tpu]==0.10.2'" in setup

    stubs.reset()
    subprocess.run(["bash", "-c", job], cwd=home, env=stubs.env(), check=True)
    assert stubs.calls() == [JOB], "the job's argv (a space, a quote) survives ssh"


def test_tpu_dry_run_prints_the_same_commands(stubs, src, tmp_path):
    env = tpu_env(stubs, src, tmp_path)
    real = run([TPU, "--create", "--delete", "--", *JOB], env)
    assert real.returncode == 0, real.stderr
    real_calls = stubs.calls()
    stubs.reset()
    shutil.rmtree(tmp_path / "out")

    dry = run([TPU, "--dry-run", "--create", "--delete", "--", *JOB], env)
    assert dry.returncode == 0, dry.stderr
    assert stubs.calls() == [], "--dry-run runs nothing"
    assert not (tmp_path / "out").exists()
    assert "gcloud compute tpus queued-resources create pod1 --node-id=pod1" in dry.stdout

    # Pasting the printed lines into a shell gives the real run's commands (one describe).
    subprocess.run(["bash", "-c", "set -e\n" + dry.stdout], env=env, cwd=tmp_path, check=True,
                   capture_output=True)
    pasted = stubs.calls()
    archive = lambda calls: [[("ARCHIVE" if a.endswith(".tgz") and "/" in a else a) for a in c] for c in calls]
    assert archive(pasted) == archive([c for i, c in enumerate(real_calls) if i == 0 or c != real_calls[i - 1]])


@pytest.mark.parametrize("system_python_ok", [True, False], ids=["python3>=3.11", "python3.10"])
def test_tpu_setup_script(stubs, src, tmp_path, system_python_ok):
    r = run([TPU, "--only", "setup"], tpu_env(stubs, src, tmp_path, SETUP_EXTRA="echo extra-step"))
    assert r.returncode == 0, r.stderr
    (call,) = stubs.calls()
    setup = ssh_command(call)

    home = fake_worker(tmp_path)
    worker = Stubs(tmp_path / "w", "make", "sudo", "python3", "python3.11")
    env = worker.env(path_rest="/usr/bin:/bin", STUB_RC_python3="0" if system_python_ok else "1",
                     STUB_RC_python3_11="1")  # python3.11: not installed (ensurepip fails)
    out = subprocess.run(["bash", "-c", setup], cwd=home, env=env, check=True, capture_output=True, text=True)
    py = "python3" if system_python_ok else "python3.11"
    expected = [["python3", "-c", "import sys; sys.exit(sys.version_info < (3, 11))"]]
    if system_python_ok:
        expected += [["python3", "-c", "import ensurepip"]]
    else:
        expected += [["python3.11", "-c", "import ensurepip"],
                     ["sudo", "apt-get", "update", "-qq"],
                     ["sudo", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq",
                      "python3.11", "python3.11-venv"]]
    expected += [["make", "setup", f"PYTHON={py}"],
                 # the venv's python adds libtpu at pyproject's jax pin
                 ["python", "-m", "pip", "install", "-q", "jax[tpu]==0.10.2", "-f",
                  "https://storage.googleapis.com/jax-releases/libtpu_releases.html"]]
    assert worker.calls() == expected
    assert out.stdout.strip() == "extra-step"


def test_tpu_failing_step_stops(stubs, src, tmp_path):
    env = tpu_env(stubs, src, tmp_path, STUB_FAIL="make setup")
    r = run([TPU, "--delete", "--", *JOB], env)
    assert r.returncode != 0
    calls = stubs.calls()
    assert len(calls) == 3 and "make setup" in calls[2][-1], "scp, unpack, setup; then nothing"
    assert "step 'setup' failed" in r.stderr
    assert "gcloud compute tpus queued-resources delete pod1" in r.stderr, "says how to delete the slice"


@pytest.mark.parametrize("states,wait", [("FAILED", "3600"), ("WAITING_FOR_RESOURCES", "0")])
def test_tpu_create_never_active(stubs, src, tmp_path, states, wait):
    r = run([TPU, "--create", "--", *JOB], tpu_env(stubs, src, tmp_path, STUB_STATES=states, WAIT_S=wait))
    assert r.returncode == 1
    assert [c[4] for c in stubs.calls()] == ["create", "describe"]
    assert states in r.stderr


def test_tpu_gcs_run_dir_has_nothing_to_fetch(stubs, src, tmp_path):
    r = run([TPU, "--skip", "copy,setup", "--", *JOB], tpu_env(stubs, src, tmp_path, RUN_DIR="gs://bucket/mmlu"))
    assert r.returncode == 0, r.stderr
    (call,) = stubs.calls()
    assert "exec python -m leeroo_jax.train" in ssh_command(call)
    assert "nothing to copy back" in r.stdout


def test_tpu_only_delete_needs_no_command(stubs, src, tmp_path):
    r = run([TPU, "--only", "delete"], tpu_env(stubs, src, tmp_path))
    assert r.returncode == 0, r.stderr
    assert stubs.calls() == [["gcloud", "compute", "tpus", "queued-resources", "delete", "pod1", *W, "--force",
                              "--quiet"]]


@pytest.mark.parametrize("args,unset", [
    ([], None),                                    # no command
    (["--bogus", "--", "true"], None),
    (["python", "-m", "x"], None),                 # command without --
    (["--skip", "nope", "--", "true"], None),
    (["--", "true"], "TPU_NAME"),
    (["--", "true"], "ZONE"),
])
def test_tpu_bad_usage(stubs, src, tmp_path, args, unset):
    env = tpu_env(stubs, src, tmp_path)
    if unset:
        del env[unset]
    r = run([TPU, *args], env)
    assert r.returncode == 2
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("tpu_pod.sh: "), r.stderr
    assert stubs.calls() == []


# ---- gpu_multinode.sh -----------------------------------------------------------------------

def jax_vars(stdout: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in stdout.splitlines() if line.startswith("JAX_"))


def test_gpu_bare_host_sets_the_jax_variables(stubs):
    r = run([GPU, "--coordinator", "10.0.0.1:1234", "--num-processes", "2", "--process-id", "1", "--", "env"],
            stubs.env(), cwd="/")
    assert r.returncode == 0, r.stderr
    assert jax_vars(r.stdout) == {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2",
                                  "JAX_PROCESS_ID": "1"}
    assert f"PWD={REPO}" in r.stdout.splitlines(), "runs from the repository root"
    r = run([GPU, "--coordinator=h:1", "--num-processes=1", "--process-id=0", "sh", "-c", 'printf "<%s>" "$@"', "sh",
             "a b", "it's"], stubs.env())
    assert r.stdout == "<a b><it's>"


def test_gpu_slurm_runs_one_task_per_node(stubs, tmp_path):
    env = stubs.env(SLURM_JOB_ID="42", STUB_SRUN_EXEC="1", CUDA_VISIBLE_DEVICES="0,1,2,3", SRUN_ARGS="--mpi=none")
    r = run([GPU, "env"], env)
    assert r.returncode == 0, r.stderr
    assert stubs.calls() == [["srun", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "--mpi=none",
                              f"{REPO}/launch/gpu_multinode.sh", "--slurm-task", "--", "env"]]
    assert jax_vars(r.stdout) == {"JAX_LOCAL_DEVICE_IDS": "0,1,2,3"}, "all local GPUs, jax finds the rest in SLURM_*"

    # Under sbatch the script runs from Slurm's spool directory: the repository is the submit dir.
    spool = tmp_path / "spool"
    spool.mkdir()
    shutil.copy(GPU, spool / "slurm_script")
    stubs.reset()
    r = run([spool / "slurm_script", *JOB], stubs.env(SLURM_JOB_ID="42", SLURM_SUBMIT_DIR=str(REPO)), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert stubs.calls() == [["srun", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                              f"{REPO}/launch/gpu_multinode.sh", "--slurm-task", "--", *JOB]]


@pytest.mark.parametrize("cuda,smi,ids", [
    ("GPU-aa,GPU-bb", None, "0,1"),
    (None, "GPU 0: H100 (UUID: x)\nGPU 1: H100 (UUID: y)\nGPU 2: H100 (UUID: z)", "0,1,2"),
    (None, None, None),
])
def test_gpu_slurm_task_local_devices(stubs, cuda, smi, ids):
    extra = {"SLURM_JOB_ID": "42", "SLURM_LOCALID": "0"}
    if cuda:
        extra["CUDA_VISIBLE_DEVICES"] = cuda
    if smi:
        extra["STUB_OUT_nvidia_smi"] = smi
    else:
        (stubs.bin / "nvidia-smi").unlink()
    r = run([GPU, "--slurm-task", "--", "env"], stubs.env(path_rest="/usr/bin:/bin", **extra))
    assert r.returncode == 0, r.stderr
    assert jax_vars(r.stdout) == ({"JAX_LOCAL_DEVICE_IDS": ids} if ids else {})
    assert ("found no GPU" in r.stderr) == (ids is None)


def test_gpu_dry_run(stubs):
    r = run([GPU, "--dry-run", *JOB], stubs.env(SLURM_JOB_ID="42"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == (f"cd {REPO} && srun --ntasks-per-node=1 --kill-on-bad-exit=1 {REPO}/launch/gpu_multinode.sh "
                        "--slurm-task -- python -m leeroo_jax.train --config=configs/mmlu.py "
                        "--config.note='two words' 'it'\\''s'\n")
    r = run([GPU, "--dry-run", "--coordinator", "h:1", "--num-processes", "2", "--process-id", "0", "--", "touch",
             str(REPO / "should-not-exist")], stubs.env())
    assert r.returncode == 0 and "env JAX_COORDINATOR_ADDRESS=h:1 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 touch" in r.stdout
    assert stubs.calls() == [] and not (REPO / "should-not-exist").exists()


@pytest.mark.parametrize("args", [
    [],
    ["--bogus", "env"],
    ["env"],                                                     # neither Slurm nor a coordinator
    ["--coordinator", "h:1", "--num-processes", "2", "env"],     # no --process-id
    ["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2", "env"],
    ["--coordinator", "h", "--num-processes", "2", "--process-id", "0", "env"],
    ["--coordinator", "h:1", "--num-processes", "0", "--process-id", "0", "env"],
])
def test_gpu_bad_usage(stubs, args):
    r = run([GPU, *args], stubs.env())
    assert r.returncode == 2
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("gpu_multinode.sh: "), r.stderr
    assert stubs.calls() == []


def test_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    scripts = sorted((REPO / "launch").glob("*.sh"))
    assert len(scripts) == 3
    r = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
