"""Test setup: 8 fake CPU devices and the persistent compilation cache.

XLA_FLAGS must be set before jax is imported anywhere, which is why this happens at the
top of conftest (pytest imports it before any test module).
"""

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402
import pytest  # noqa: E402

from leeroo_jax import compile_cache  # noqa: E402

compile_cache.enable()


@pytest.fixture(scope="session")
def devices():
    assert len(jax.devices()) == 8, "conftest must set XLA_FLAGS before jax is imported"
    return jax.devices()


def _weights_or_skip(path: pathlib.Path) -> pathlib.Path:
    if not (path / "model.safetensors").exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: `make setup` must fetch the real weights")
        pytest.skip(f"{path} missing; run `make setup`")
    return path


@pytest.fixture(scope="session")
def minilm_path():
    from leeroo_jax.weights import assets

    return _weights_or_skip(assets.minilm_dir())


@pytest.fixture(scope="session")
def smollm2_path():
    from leeroo_jax.weights import assets

    return _weights_or_skip(assets.smollm2_dir())
