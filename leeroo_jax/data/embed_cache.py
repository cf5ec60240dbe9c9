"""On-disk cache of backbone embeddings (tensorstore zarr3), keyed by the backbone's content
digest, its pooling and length, and the text.

A frozen backbone maps each text to a fixed vector, so the embeddings of the 13,937 MMLU
questions are computed once and every later run (training, kNN baselines, routing) reads
them in milliseconds. Entries are appended, never rewritten; the manifest (text hashes in
row order) is replaced atomically after the vectors are written, so a crash leaves a
cache that opens and simply lacks the batch in flight.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import re
from typing import Callable, Sequence

import numpy as np
import tensorstore as ts

from leeroo_jax import fileio


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


class EmbeddingCache:
    def __init__(self, root: str | pathlib.Path, key: str, dim: int):
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)[:80] + "-" + hashlib.sha1(key.encode()).hexdigest()[:8]
        self.dir = pathlib.Path(root) / slug
        self.dir.mkdir(parents=True, exist_ok=True)
        self._manifest = self.dir / "manifest.json"
        spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str((self.dir / "vectors").resolve())}}
        if self._manifest.exists():
            meta = json.loads(self._manifest.read_text())
            self.hashes: list[str] = meta["hashes"]
            self.vectors = ts.open(spec).result()
        else:
            self.hashes = []
            self.vectors = ts.open(spec, create=True, delete_existing=True, dtype=ts.float32, shape=[0, dim],
                                   chunk_layout=ts.ChunkLayout(write_chunk_shape=[4096, dim])).result()
            fileio.write_json(self._manifest, {"key": key, "dim": dim, "hashes": []})
        self.key, self.dim = key, dim
        self._row = {h: i for i, h in enumerate(self.hashes)}

    def missing(self, texts: Sequence[str]) -> list[int]:
        """Indices of the texts `get` would compute: the first occurrence of each uncached text."""
        seen: set[str] = set()
        out = []
        for i, t in enumerate(texts):
            h = text_hash(t)
            if h not in self._row and h not in seen:
                seen.add(h)
                out.append(i)
        return out

    def get(self, texts: Sequence[str], compute: Callable[[Sequence[str]], np.ndarray]) -> np.ndarray:
        """[N, dim] embeddings of texts; computes (and stores) only the ones not cached, passing
        `compute` the `missing(texts)` texts in that order."""
        hashes = [text_hash(t) for t in texts]
        todo = self.missing(texts)
        missing = [hashes[i] for i in todo]
        if missing:
            new = np.asarray(compute([texts[i] for i in todo]), np.float32)
            n = len(self.hashes)
            self.vectors = self.vectors.resize(exclusive_max=[n + len(missing), self.dim]).result()
            self.vectors[n:n + len(missing)].write(new).result()
            self.hashes += missing
            fileio.write_json(self._manifest, {"key": self.key, "dim": self.dim, "hashes": self.hashes})
            self._row.update({h: n + i for i, h in enumerate(missing)})
        all_rows = np.asarray(self.vectors[: len(self.hashes)].read().result())
        return all_rows[[self._row[h] for h in hashes]]
