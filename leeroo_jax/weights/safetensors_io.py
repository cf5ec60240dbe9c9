"""A validating, zero-copy safetensors reader.

The safetensors format is an 8-byte little-endian header length, a JSON header mapping
each tensor name to {dtype, shape, data_offsets}, then raw little-endian data. Reading it
through `np.memmap` gives lazily paged views (nothing is copied until a slice is used),
handles bf16 through ml_dtypes, and lets us check every offset against the file size, so a
truncated download is a one-line error at open time, not garbage weights later.
"""

from __future__ import annotations

import json
import math
import os
import pathlib

import ml_dtypes
import numpy as np

from leeroo_jax.errors import WeightsError

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsFile:
    """Tensors of one .safetensors file as read-only memory-mapped numpy views."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        fix = f"re-download or re-export {self.path.name}"
        size = self.path.stat().st_size
        try:
            with open(self.path, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                if size < 8 or n <= 0 or n > min(size - 8, _MAX_HEADER):
                    raise ValueError("bad header length")
                header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError) as e:
            raise WeightsError(f"{self.path} is not a valid safetensors file ({e}); {fix}") from None
        header.pop("__metadata__", None)
        self._base = 8 + n
        self._entries: dict[str, tuple[np.dtype, tuple[int, ...], int, int]] = {}
        for name, meta in header.items():
            try:
                dtype = np.dtype(_DTYPES[meta["dtype"]])
                shape = tuple(int(s) for s in meta["shape"])
                start, end = (int(o) for o in meta["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise WeightsError(f"{self.path}: tensor {name!r} has a malformed or unsupported header entry; {fix}") from None
            if end - start != math.prod(shape) * dtype.itemsize or start < 0:
                raise WeightsError(f"{self.path}: tensor {name!r} byte range does not match its shape; {fix}")
            if self._base + end > size:
                raise WeightsError(
                    f"{self.path} is truncated: tensor {name!r} needs {self._base + end} bytes, file has {size}; {fix}"
                )
            self._entries[name] = (dtype, shape, start, end)

    def keys(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][1]

    def get(self, name: str) -> np.ndarray:
        dtype, shape, start, _ = self._entries[name]
        if math.prod(shape) == 0:
            return np.zeros(shape, dtype)
        return np.memmap(self.path, dtype=dtype, mode="r", offset=self._base + start, shape=shape)


def open_checkpoint(directory: pathlib.Path) -> dict[str, SafetensorsFile]:
    """Map every tensor name of a checkpoint directory to the file holding it.

    Accepts a single `model.safetensors` or a sharded `model.safetensors.index.json`.
    """
    index = directory / "model.safetensors.index.json"
    single = directory / "model.safetensors"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError):
            raise WeightsError(f"{index} is not a valid safetensors index (no weight_map); re-download it") from None
        files: dict[str, SafetensorsFile] = {}
        out = {}
        for name, fname in weight_map.items():
            if fname not in files:
                if not (directory / fname).exists():
                    raise WeightsError(f"{index} names shard {fname}, which is missing; download all shards")
                files[fname] = SafetensorsFile(directory / fname)
            if name not in files[fname]._entries:
                raise WeightsError(f"{index} places {name} in {fname}, which does not hold it; re-download the checkpoint")
            out[name] = files[fname]
        return out
    if single.exists():
        f = SafetensorsFile(single)
        return {name: f for name in f.keys()}
    raise WeightsError(
        f"{directory} has no model.safetensors or model.safetensors.index.json; "
        "convert the checkpoint to safetensors (we never unpickle .bin/.pt files)"
    )
