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
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import time

from leeroo_jax import distributed

_serial = itertools.count()


class MetricWriter:
    """`write(step, {"loss": ..., "lr": ...})` on every process; only process 0 writes files."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = pathlib.Path(directory)
        self.active = distributed.is_main_process()
        self._events = None  # tensorboardX EventsWriter, made on the first write

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.active:
            return
        step = int(step)
        values = {k: float(v) for k, v in scalars.items()}  # accepts jax/numpy scalars
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        # Lazy: importing this module stays cheap (tensorboardX imports torch when it is installed).
        from tensorboardX import summary
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto import event_pb2

        if self._events is None:
            (self.directory / "tb").mkdir(exist_ok=True)
            self._events = EventsWriter(str(self.directory / "tb" / "events"), f".{os.getpid()}.{next(_serial)}")
        merged = summary.Summary(value=[v for k, x in values.items() for v in summary.scalar(k, x).value])
        self._events.write_event(event_pb2.Event(wall_time=time.time(), step=step, summary=merged))
        self._events.flush()

    def flush(self) -> None:
        if self._events is not None:
            self._events.flush()

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
