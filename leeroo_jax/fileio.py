"""Output files that a reader (or a job killed half-way) sees whole or not at all, on a local
disk or in a bucket.

Paths are `etils.epath.Path`s, so a run directory may be `gs://bucket/runs/x` (pods write their
checkpoints and reports to a bucket). A local path is written to a temp file beside the target,
fsynced and `os.replace`d over it. An object store has no rename, but needs none: an object
upload is atomic by itself (a reader sees the old object or the new one), so a non-local path is
written with one `epath.Path.write_bytes`.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
import uuid

from etils import epath

from leeroo_jax.errors import DataError


def is_local(path: str | os.PathLike) -> bool:
    """A path of this machine's filesystem (os calls, renames, locks work), not an object store's
    URI (gs://, s3://: epath keeps the scheme, which pathlib would fold into `gs:/bucket`)."""
    return "://" not in os.fspath(path)


def resolved(path: str | os.PathLike) -> epath.Path:
    """`path` made absolute: a local path resolved as pathlib does (symlinks too); a URI is
    absolute already (epath's `resolve` would prefix it with the working directory)."""
    return epath.Path(pathlib.Path(path).resolve()) if is_local(path) else epath.Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    if not is_local(path):
        try:
            epath.Path(path).write_bytes(data)
        except Exception as e:  # noqa: BLE001 - object-store clients raise their own errors (gcsfs, google.auth)
            raise DataError(f"cannot write {path} ({reason(e)}); {client_fix(e)}") from None
        return
    path = pathlib.Path(path)
    # A temp name of this writer's own: two processes writing one file (a memo every process of a
    # job updates) must not rename each other's temp away; the last os.replace wins, whole.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write {path} ({e.strerror}); choose a writable output directory") from None


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj, indent: int | None = None) -> None:
    """Serialises first (numpy scalars as floats), so a bad value fails before any write."""
    write_text(path, json.dumps(obj, indent=indent, default=float))


def writable_dir(path: str | os.PathLike, what: str = "output directory") -> epath.Path:
    """`path` created if needed and checked writable, before a job spends time on its work."""
    if not is_local(path):
        return _writable_remote(epath.Path(path), what)
    local = pathlib.Path(path)
    try:
        local.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the {what} {local} ({e.strerror}); choose a writable location") from None
    try:  # a real probe: os.access says yes to root everywhere, even on read-only mounts and /sys
        fd, probe = tempfile.mkstemp(dir=local, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise DataError(f"the {what} {local} is not writable ({e.strerror}); choose a writable location "
                        "(e.g. --config.output_root)") from None
    return epath.Path(path)


def _writable_remote(path: epath.Path, what: str) -> epath.Path:
    """A bucket has no directories to create; writing and deleting a probe object is what tells
    a missing client library (gcsfs), missing credentials or a read-only bucket apart before work."""
    probe = path / f".write-probe-{uuid.uuid4().hex}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except Exception as e:  # noqa: BLE001 - the client's own error types: ImportError, HttpError, auth errors
        raise DataError(f"the {what} {path} is not writable ({reason(e)}); {client_fix(e)}, or choose a writable "
                        "location (e.g. --config.output_root)") from None
    return path


def reason(e: BaseException) -> str:
    """An exception as one short line (a client's message may span lines)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:300]


def client_fix(e: BaseException) -> str:
    """The fix for an object store's error. A missing client: epath reaches gs:// through gcsfs
    (or TensorFlow), Orbax asks google-cloud-storage about the bucket; neither is a dependency."""
    if isinstance(e, ImportError):
        return "install gcsfs and google-cloud-storage (the gs:// clients of etils.epath and Orbax)"
    return "check the bucket's name, permissions and credentials"
