"""An in-memory gs:// bucket behind etils.epath, so the code paths for a run directory in a
bucket really run in tests, with no GCS and no gcsfs: `epath.testing.mock_epath` swaps epath's
backend, every call on a gs:// path lands in `objects` (object name -> bytes), and every other
path goes to the real filesystem.

It keeps an object store's rules where they matter to us: there is no append and no rename (a
call to either on a gs:// path fails the test), an object appears whole when its upload is
closed, and "directories" are only name prefixes (mkdir is remembered so an empty one reads as
a directory, as gcsfs lets it).
"""

from __future__ import annotations

import contextlib
import fnmatch
import io

from etils.epath import testing as epath_testing

PREFIX = "gs://"


class _Upload(io.BytesIO):
    def __init__(self, bucket: "MemoryBucket", name: str):
        super().__init__()
        self._bucket, self._name = bucket, name

    def close(self) -> None:
        if not self.closed:
            self._bucket.objects[self._name] = self.getvalue()
            self._bucket.uploads.append(self._name)
        super().close()


class _TextUpload(io.TextIOWrapper):
    def __init__(self, bucket: "MemoryBucket", name: str):
        super().__init__(_Upload(bucket, name), encoding="utf-8")


class MemoryBucket:
    def __init__(self):
        self.objects: dict[str, bytes] = {}
        self.uploads: list[str] = []  # every object written, in order (a name again per rewrite)
        self.dirs: set[str] = set()
        self.fail: BaseException | None = None  # raised by every gs:// call while set

    def _check(self, path: str) -> None:
        if self.fail is not None:
            raise self.fail

    def open(self, original, path, mode):
        if not str(path).startswith(PREFIX):
            return original(path, mode)
        self._check(path)
        if "a" in mode or "+" in mode:
            raise AssertionError(f"an object store has no append: open({path!r}, {mode!r})")
        if "w" in mode:
            return _Upload(self, path) if "b" in mode else _TextUpload(self, path)
        if path not in self.objects:
            raise FileNotFoundError(path)
        data = self.objects[path]
        return io.BytesIO(data) if "b" in mode else io.StringIO(data.decode("utf-8"))

    def isdir(self, original, path):
        if not str(path).startswith(PREFIX):
            return original(path)
        self._check(path)
        path = path.rstrip("/")
        return path in self.dirs or any(k.startswith(path + "/") for k in self.objects)

    def exists(self, original, path):
        if not str(path).startswith(PREFIX):
            return original(path)
        return path in self.objects or self.isdir(original, path)

    def makedirs(self, original, path, exist_ok=False):
        if not str(path).startswith(PREFIX):
            return original(path, exist_ok=exist_ok)
        self._check(path)
        self.dirs.add(path.rstrip("/"))

    mkdir = makedirs

    def listdir(self, original, path):
        if not str(path).startswith(PREFIX):
            return original(path)
        self._check(path)
        start = path.rstrip("/") + "/"
        names = {k[len(start):].split("/")[0] for k in [*self.objects, *self.dirs] if k.startswith(start)}
        if not names and not self.isdir(original, path):
            raise FileNotFoundError(path)
        return sorted(names)

    def glob(self, original, pattern):
        if not str(pattern).startswith(PREFIX):
            return original(pattern)
        return sorted(k for k in [*self.objects, *self.dirs] if fnmatch.fnmatchcase(k, pattern))

    def remove(self, original, path):
        if not str(path).startswith(PREFIX):
            return original(path)
        self._check(path)
        if self.objects.pop(path, None) is None:
            raise FileNotFoundError(path)

    def rmtree(self, original, path):
        if not str(path).startswith(PREFIX):
            return original(path)
        start = path.rstrip("/") + "/"
        for k in [k for k in self.objects if k.startswith(start)]:
            del self.objects[k]
        self.dirs = {d for d in self.dirs if d != path.rstrip("/") and not d.startswith(start)}

    def _no_rename(self, original, path, dst, **kw):
        if str(path).startswith(PREFIX) or str(dst).startswith(PREFIX):
            raise AssertionError(f"an object store has no rename: {path!r} -> {dst!r}")
        return original(path, dst, **kw)

    @contextlib.contextmanager
    def mounted(self):
        """epath's gs:// backend is this bucket inside the block."""
        with epath_testing.mock_epath(open=self.open, isdir=self.isdir, exists=self.exists, makedirs=self.makedirs,
                                      mkdir=self.mkdir, listdir=self.listdir, glob=self.glob, remove=self.remove,
                                      rmtree=self.rmtree, rename=self._no_rename, replace=self._no_rename):
            yield self
