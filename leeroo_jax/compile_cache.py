"""The persistent XLA compilation cache, shared by tests, entry points and benchmarks.

On 2 CPU cores a model forward takes seconds to compile; with the cache a second process
(the next test run, a rerun of the main job) loads the executable instead.
"""

from __future__ import annotations

import os

import jax

from leeroo_jax.weights.assets import cache_root


def enable(path: str | None = None) -> str:
    path = path or os.environ.get("LEEROO_COMPILE_CACHE") or str(cache_root() / "jax")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
