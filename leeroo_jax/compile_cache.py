"""The persistent XLA compilation cache, shared by tests, entry points and benchmarks.

On 2 CPU cores a model forward takes seconds to compile; with the cache a second process
(the next test run, a rerun of the main job) loads the executable instead.
"""

from __future__ import annotations

import os
import pathlib
import time

import jax

from leeroo_jax.weights.assets import cache_root

CACHE_MAX_BYTES = 16 * 2**30  # least recently used entries are evicted past it


def enable(path: str | None = None) -> str:
    path = path or os.environ.get("LEEROO_COMPILE_CACHE") or str(cache_root() / "jax")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    # A size bound turns on jax's file lock around every cache read and write (jax/_src/lru_cache.py).
    # Unbounded, an entry is written in place with no lock, and a process can read one another is
    # still writing and abort deserializing it: the processes of a multi-process job compile the
    # same programs at the same moment, and share the cache on one machine or a shared disk.
    jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
    _backfill_access_times(path)
    return path


def _backfill_access_times(path: str) -> None:
    """The bounded cache reads every entry's `<key>-atime` file to rank evictions, and fails a
    write when one is missing: give entries written by the unbounded cache (no atime) one."""
    root = pathlib.Path(path)
    if not root.is_dir():
        return
    now = time.time_ns().to_bytes(8, "little")
    for entry in root.glob("*-cache"):
        atime = entry.with_name(entry.name.removesuffix("-cache") + "-atime")
        if not atime.exists():
            try:
                atime.write_bytes(now)
            except OSError:  # a read-only shared cache: jax only warns when it cannot write an entry
                return
