"""What every job starts from: its output directory and the dataset of its config.

The run directory is an `etils.epath.Path`: a local directory or a bucket (`--config.output_root=
gs://bucket/runs`), written through `fileio`. The record store is always local (`records_dir`).
"""

from __future__ import annotations

import pathlib

import numpy as np
from etils import epath

from leeroo_jax import distributed, fileio
from leeroo_jax.data import dataset
from leeroo_jax.errors import ConfigError
from leeroo_jax.orchestrator.backbone import Embedder

LOCAL_RECORDS_FIX = "--config.data.records=/local/or/shared/path"


def run_dir(cfg) -> epath.Path:
    """<output_root>/<run_name>; `gs://bucket/x` stays a URI (pathlib would make it `gs:/bucket/x`)."""
    return epath.Path(cfg.output_root) / cfg.run_name


def output_dir(cfg) -> epath.Path:
    """<output_root>/<run_name>, created and checked writable before any work is done, after
    the record store's location is checked (a run directory in a bucket needs a local one)."""
    records_dir(cfg)
    return fileio.writable_dir(run_dir(cfg))


def require_local_run_dir(cfg, why: str) -> None:
    """A one-line error before any work for a job that keeps stores in its run directory."""
    if not fileio.is_local(run_dir(cfg)):
        raise ConfigError(f"the run directory {run_dir(cfg)} is in a bucket, but {why} and needs a local filesystem; "
                          "set --config.output_root=/local/or/shared/path")


def embed(cfg, texts: list[str]) -> np.ndarray:
    """[N, D] frozen-backbone embeddings of texts (cached on disk)."""
    return Embedder.from_config(cfg.backbone)(texts)


def records_dir(cfg) -> pathlib.Path:
    """The record store: config.data.records, else <run dir>/records. A local path: the store
    commits by `os.replace` of its manifest over tensorstore's `file` driver (data/records.py),
    and an object store has no rename; a run directory in a bucket needs config.data.records."""
    if cfg.data.records:
        if not fileio.is_local(cfg.data.records):
            raise ConfigError(f"config.data.records={cfg.data.records!r} is in a bucket, but the record store needs a "
                              f"local filesystem (it commits by renames); pass {LOCAL_RECORDS_FIX}")
        return pathlib.Path(cfg.data.records)
    path = run_dir(cfg) / "records"
    if not fileio.is_local(path):
        raise ConfigError(f"the run directory {run_dir(cfg)} is in a bucket, but the record store (default <run dir>/"
                          f"records) needs a local filesystem (it commits by renames); pass {LOCAL_RECORDS_FIX}")
    return pathlib.Path(path)


def load_dataset(cfg, embed: bool = True) -> dataset.Dataset:
    """The config's dataset and its records, embedded by the frozen backbone."""
    return dataset.load(cfg, records_dir(cfg), Embedder.from_config(cfg.backbone) if embed else None)


def write_config(cfg, out: epath.Path) -> None:
    """config.json: what route / add_expert rebuild a run from (process 0 writes it)."""
    if distributed.is_main_process():
        fileio.write_text(out / "config.json", cfg.to_json_best_effort(indent=1))
