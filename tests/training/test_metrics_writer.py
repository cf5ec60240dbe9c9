"""MetricWriter: metrics.jsonl lines and TensorBoard event files read back, process 0 only.

The event files are decoded here without the `tensorboard` package: TFRecord frames
(u64 length, masked crc32c of it, payload, masked crc32c of it) parsed by hand, each CRC
checked by an independent crc32c, each payload parsed by protobuf as a tensorboard `Event`.
"""

import json
import os
import pathlib
import re
import socket
import struct
import subprocess
import sys

import numpy as np

from leeroo_jax import distributed
from leeroo_jax.training.metrics_writer import MetricWriter
from memory_bucket import MemoryBucket

_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1  # Castagnoli, reflected
    _CRC_TABLE.append(_c)


def _masked_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(path_or_bytes):
    from tensorboardX.proto import event_pb2

    data = path_or_bytes if isinstance(path_or_bytes, bytes) else path_or_bytes.read_bytes()
    pos, events = 0, []
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,), (header_crc,) = struct.unpack("<Q", header), struct.unpack("<I", data[pos + 8:pos + 12])
        payload = data[pos + 12:pos + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        assert header_crc == _masked_crc32c(header) and payload_crc == _masked_crc32c(payload)
        events.append(event_pb2.Event.FromString(payload))
        pos += 16 + length
    return events


def scalars_of(events):
    return {(v.tag, e.step): v.simple_value for e in events if e.HasField("summary") for v in e.summary.value}


STEPS = {
    10: {"loss": 0.6931, "lr": 3e-4, "grad_norm": np.float32(1.25), "examples_per_s": 1234.5},
    20: {"loss": 0.5, "lr": 2.9e-4, "grad_norm": 0.75, "examples_per_s": 1300.0},
    20_000: {"val_aiq": 0.1, "val_acc_at_weak_cost": np.float64(2 / 3)},
}


def test_writes_jsonl_and_tensorboard_scalars(tmp_path):
    with MetricWriter(tmp_path / "run") as w:
        for step, scalars in STEPS.items():
            w.write(np.int64(step), scalars)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines == [{"step": s, **{k: float(v) for k, v in sc.items()}} for s, sc in STEPS.items()]

    (event_file,) = (tmp_path / "run" / "tb").iterdir()
    assert re.fullmatch(rf"events\.out\.tfevents\.\d+\.{re.escape(socket.gethostname())}\.\d+\.\d+", event_file.name)
    events = read_events(event_file)
    assert events[0].file_version == "brain.Event:2"
    got = scalars_of(events)
    want = {(k, s): np.float32(v) for s, sc in STEPS.items() for k, v in sc.items()}
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert np.float32(got[key]) == value, key


def test_each_write_is_on_disk_before_flush_or_close(tmp_path):
    w = MetricWriter(tmp_path)
    assert not tmp_path.joinpath("tb").exists()  # nothing before the first write
    for step in (1, 2):
        w.write(step, {"loss": step / 2})
        (event_file,) = (tmp_path / "tb").iterdir()
        assert scalars_of(read_events(event_file)) == {("loss", s): s / 2 for s in range(1, step + 1)}
    w.flush()
    w.close()
    w.close()  # idempotent


def test_two_writers_in_one_second_keep_both_files(tmp_path):
    for step in (1, 2):
        with MetricWriter(tmp_path) as w:
            w.write(step, {"loss": float(step)})
    files = sorted((tmp_path / "tb").iterdir())
    assert len(files) == 2
    merged = {k: v for f in files for k, v in scalars_of(read_events(f)).items()}
    assert merged == {("loss", 1): 1.0, ("loss", 2): 2.0}


def test_other_processes_write_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "is_main_process", lambda: False)
    with MetricWriter(tmp_path / "run") as w:
        w.write(1, {"loss": 1.0})
        w.flush()
    assert not (tmp_path / "run").exists()


def test_in_a_bucket_both_files_are_uploaded_whole(tmp_path):
    """gs:// (tests/memory_bucket.py): no append, so each file is uploaded whole; the lines and
    the TensorBoard scalars are those a local run writes."""
    with MemoryBucket().mounted() as bucket, MetricWriter("gs://b/run", remote_every_s=0) as w:
        for step, scalars in STEPS.items():
            w.write(np.int64(step), scalars)
    with MetricWriter(tmp_path) as local:
        for step, scalars in STEPS.items():
            local.write(np.int64(step), scalars)
    assert bucket.objects["gs://b/run/metrics.jsonl"] == (tmp_path / "metrics.jsonl").read_bytes()
    (event_name,) = [k for k in bucket.objects if k.startswith("gs://b/run/tb/")]
    assert re.fullmatch(rf"gs://b/run/tb/events\.out\.tfevents\.\d+\.{re.escape(socket.gethostname())}\.\d+\.\d+",
                        event_name)
    events = read_events(bucket.objects[event_name])
    assert events[0].file_version == "brain.Event:2"
    ((local_events),) = (tmp_path / "tb").iterdir()
    assert scalars_of(events) == scalars_of(read_events(local_events))
    assert bucket.uploads == ["gs://b/run/metrics.jsonl", event_name] * len(STEPS)  # remote_every_s=0: every write


def test_in_a_bucket_uploads_are_throttled_and_a_resume_keeps_earlier_lines():
    bucket = MemoryBucket()
    bucket.objects["gs://b/run/metrics.jsonl"] = b'{"step": 5, "loss": 1.0}\n'  # a killed run's lines
    with bucket.mounted():
        w = MetricWriter("gs://b/run", remote_every_s=3600)
        w.write(10, {"loss": 0.5})  # the first write uploads at once
        w.write(20, {"loss": 0.25})  # within remote_every_s: kept in memory
        assert bucket.objects["gs://b/run/metrics.jsonl"] == b'{"step": 5, "loss": 1.0}\n{"step": 10, "loss": 0.5}\n'
        assert len(bucket.uploads) == 2
        w.flush()
        assert len(bucket.uploads) == 4
        w.close()
        w.close()
        assert len(bucket.uploads) == 4  # nothing new to upload
    lines = [json.loads(x) for x in bucket.objects["gs://b/run/metrics.jsonl"].decode().splitlines()]
    assert [x["step"] for x in lines] == [5, 10, 20]
    (event_name,) = [k for k in bucket.objects if "/tb/" in k]
    assert scalars_of(read_events(bucket.objects[event_name])) == {("loss", 10): 0.5, ("loss", 20): 0.25}


def test_import_does_not_load_tensorboardx():
    code = "import sys, leeroo_jax.training.metrics_writer; assert 'tensorboardX' not in sys.modules"
    repo = pathlib.Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo, env={**os.environ, "JAX_PLATFORMS": "cpu"})
