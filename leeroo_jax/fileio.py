"""Atomic file writes: a reader (or a job killed half-way) sees the old file or the new one,
never a torn one. Write a temp file beside the target, fsync it, `os.replace` it over."""

from __future__ import annotations

import json
import os
import pathlib
import tempfile

from leeroo_jax.errors import DataError


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise DataError(f"cannot write {path} ({e.strerror}); choose a writable output directory") from None


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj, indent: int | None = None) -> None:
    """Serialises first (numpy scalars as floats), so a bad value fails before any write."""
    write_text(path, json.dumps(obj, indent=indent, default=float))


def writable_dir(path: str | os.PathLike, what: str = "output directory") -> pathlib.Path:
    """`path` created if needed and checked writable, before a job spends time on its work."""
    path = pathlib.Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the {what} {path} ({e.strerror}); choose a writable location") from None
    try:  # a real probe: os.access says yes to root everywhere, even on read-only mounts and /sys
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise DataError(f"the {what} {path} is not writable ({e.strerror}); choose a writable location "
                        "(e.g. --config.output_root)") from None
    return path
