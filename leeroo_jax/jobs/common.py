"""What every job starts from: its output directory and the dataset of its config."""

from __future__ import annotations

import pathlib

import numpy as np

from leeroo_jax import distributed, fileio
from leeroo_jax.data import dataset
from leeroo_jax.orchestrator.backbone import Embedder


def run_dir(cfg) -> pathlib.Path:
    return pathlib.Path(cfg.output_root) / cfg.run_name


def output_dir(cfg) -> pathlib.Path:
    """<output_root>/<run_name>, created and checked writable before any work is done."""
    return fileio.writable_dir(run_dir(cfg))


def embed(cfg, texts: list[str]) -> np.ndarray:
    """[N, D] frozen-backbone embeddings of texts (cached on disk)."""
    return Embedder.from_config(cfg.backbone)(texts)


def records_dir(cfg) -> pathlib.Path:
    """The record store: config.data.records, else <run dir>/records."""
    return pathlib.Path(cfg.data.records) if cfg.data.records else run_dir(cfg) / "records"


def load_dataset(cfg, embed: bool = True) -> dataset.Dataset:
    """The config's dataset and its records, embedded by the frozen backbone."""
    return dataset.load(cfg, records_dir(cfg), Embedder.from_config(cfg.backbone) if embed else None)


def write_config(cfg, out: pathlib.Path) -> None:
    """config.json: what route / add_expert rebuild a run from (process 0 writes it)."""
    if distributed.is_main_process():
        fileio.write_text(out / "config.json", cfg.to_json_best_effort(indent=1))
