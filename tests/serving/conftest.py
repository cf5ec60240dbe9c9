"""A tiny training run on the real data, trained once for every serving test."""

import pytest

from configs import tiny
from leeroo_jax.jobs import train


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The run directory of configs/tiny.py (9 recorded experts, a frozen MiniLM, max_length 16)."""
    cfg = tiny.get_config()
    cfg.output_root = str(tmp_path_factory.mktemp("serving_run"))
    train.run(cfg)
    return f"{cfg.output_root}/{cfg.run_name}"
