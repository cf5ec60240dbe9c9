"""Where training metrics go: `metrics.jsonl` plus TensorBoard scalars, without TensorFlow.

TensorBoard reads TFRecord event files; tensorboardX writes them with protobuf alone, so the
curves can be watched live (`tensorboard --logdir <directory>/tb`) without a TensorFlow install.
Under `directory`, process 0 writes:

  metrics.jsonl                                   one line per `write`: {"step": step, **scalars}
  tb/events.out.tfevents.<time>.<host>.<pid>.<n>  one event per `write`, one scalar per key (tag = key)

Every other process of a multi-host job writes nothing and creates no files.
Both files are flushed on every `write` (metrics come every few steps, so this is cheap): a crash
loses nothing written and TensorBoard sees each point at once. This is why the event file is
written with tensorboardX's synchronous `EventsWriter` and not `SummaryWriter`, whose events go
through a queue to a thread and whose `flush()` does not wait for that queue. tensorboardX names
files by the second and opens them with "wb"; the `.<pid>.<n>` suffix keeps two writers started
within one second from truncating each other's file.

In a bucket (`gs://...` run directory) both files are written too, differently: an object store
has no append, so each file is kept whole in memory (a resumed run's metrics.jsonl read back
first, as local appends keep it) and uploaded whole, an atomic object write, at most every
`remote_every_s` seconds and on `flush`/`close`. Uploading on every write would rewrite one
object several times a second at a small log_every, past GCS's rate of about one write per
second per object; a killed job loses at most the last `remote_every_s` seconds of points.
The TensorBoard frames are built here (tensorboardX's writers open local files, and its own
gs:// writer needs google-cloud-storage), so `tensorboard --logdir gs://.../tb` reads the same
event files a local run writes.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import struct
import time

from etils import epath

from leeroo_jax import distributed, fileio

_serial = itertools.count()
REMOTE_EVERY_S = 10.0


class MetricWriter:
    """`write(step, {"loss": ..., "lr": ...})` on every process; only process 0 writes files."""

    def __init__(self, directory: str | os.PathLike, remote_every_s: float = REMOTE_EVERY_S):
        self.directory = epath.Path(directory)
        self.active = distributed.is_main_process()
        self._events = None  # local: tensorboardX EventsWriter, made on the first write
        self._remote = None  # in a bucket: {path: the whole file's bytes}, made on the first write
        self._remote_every_s, self._uploaded, self._dirty = remote_every_s, float("-inf"), False

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.active:
            return
        step = int(step)
        values = {k: float(v) for k, v in scalars.items()}  # accepts jax/numpy scalars
        line = json.dumps({"step": step, **values}) + "\n"
        # Lazy: importing this module stays cheap (tensorboardX imports torch when it is installed).
        from tensorboardX import summary
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto import event_pb2

        merged = summary.Summary(value=[v for k, x in values.items() for v in summary.scalar(k, x).value])
        event = event_pb2.Event(wall_time=time.time(), step=step, summary=merged)
        if not fileio.is_local(self.directory):
            self._write_remote(line, event)
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "metrics.jsonl", "a") as f:
            f.write(line)
        if self._events is None:
            (self.directory / "tb").mkdir(exist_ok=True)
            self._events = EventsWriter(str(self.directory / "tb" / "events"), f".{os.getpid()}.{next(_serial)}")
        self._events.write_event(event)
        self._events.flush()

    def _write_remote(self, line: str, event) -> None:
        from tensorboardX.proto import event_pb2

        if self._remote is None:
            metrics = self.directory / "metrics.jsonl"
            # the file name EventsWriter gives, with the same .<pid>.<n> suffix
            events = self.directory / "tb" / (f"events.out.tfevents.{str(time.time())[:10]}.{socket.gethostname()}"
                                              f".{os.getpid()}.{next(_serial)}")
            head = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
            self._remote = {metrics: bytearray(metrics.read_bytes() if metrics.exists() else b""),
                            events: bytearray(_frame(head.SerializeToString()))}
        metrics_buf, events_buf = self._remote.values()
        metrics_buf += line.encode()
        events_buf += _frame(event.SerializeToString())
        self._dirty = True
        if time.monotonic() - self._uploaded >= self._remote_every_s:
            self._upload()

    def _upload(self) -> None:
        if self._remote is not None and self._dirty:
            for path, data in self._remote.items():
                fileio.write_bytes(path, bytes(data))
            self._uploaded, self._dirty = time.monotonic(), False

    def flush(self) -> None:
        self._upload()
        if self._events is not None:
            self._events.flush()

    def close(self) -> None:
        self._upload()
        self._remote = None
        if self._events is not None:
            self._events.close()
            self._events = None

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _frame(payload: bytes) -> bytes:
    """One TFRecord frame as tensorboardX's RecordWriter writes it: u64 length, its masked
    crc32c, the payload, the payload's masked crc32c (little-endian)."""
    from tensorboardX.record_writer import masked_crc32c

    header = struct.pack("<Q", len(payload))
    return header + struct.pack("<I", masked_crc32c(header)) + payload + struct.pack("<I", masked_crc32c(payload))
