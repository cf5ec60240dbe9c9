"""A checkpoint's content digest: what caches derived from its weights are keyed by.

Keying by a folder name would let a different checkpoint saved in a same-named folder
(or retrained in place) serve stale embeddings. The digest is a SHA-256 over config.json
and every *.safetensors file, in name order. Hashing reads every byte once (~0.3 s for
MiniLM's 90 MB); the result is memoised per (path, size, mtime) so a rerun does not
re-read a multi-GB checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

from leeroo_jax import fileio


def _files(directory: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in directory.iterdir() if p.name == "config.json" or p.suffix == ".safetensors")


def content_digest(directory: str | os.PathLike, memo_dir: str | os.PathLike | None = None) -> str:
    """Hex SHA-256 of the checkpoint's config.json and weights."""
    directory = pathlib.Path(directory).resolve()
    files = _files(directory)
    stamp = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    memo_path = pathlib.Path(memo_dir) / "weight_digests.json" if memo_dir else None
    memo = {}
    if memo_path is not None and memo_path.exists():
        try:
            memo = json.loads(memo_path.read_text())
        except ValueError:
            memo = {}  # a torn memo only costs a rehash
        hit = memo.get(str(directory))
        if hit and hit["files"] == stamp:
            return hit["sha256"]
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
    digest = h.hexdigest()
    if memo_path is not None:
        memo[str(directory)] = {"files": stamp, "sha256": digest}
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        fileio.write_json(memo_path, memo)
    return digest
