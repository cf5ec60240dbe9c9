"""Run directories on a local disk or in a bucket (issue 11, section 4): paths are etils.epath
Paths, a local file is written by temp + fsync + os.replace, an object by one upload.

The bucket is tests/memory_bucket.py (epath's gs:// backend swapped for a dict), so the
non-local branches run for real; no real GCS bucket is reachable from here.
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib

import ml_collections
import pytest
from etils import epath

from leeroo_jax import fileio
from leeroo_jax.errors import ConfigError, DataError
from leeroo_jax.eval import report as report_lib
from leeroo_jax.jobs import common, runs, selfplay
from leeroo_jax.training.checkpoint import Checkpointer
from memory_bucket import MemoryBucket


def _cfg(output_root: str, records: str = "", run_name: str = "tiny") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"output_root": output_root, "run_name": run_name, "data": {"records": records}})


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """A mounted in-memory gs:// bucket; the working directory is an empty tmp dir, so a
    gs:// path mistaken for a local one (pathlib's `gs:/bucket/...`) would show up in it."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with MemoryBucket().mounted() as b:
        yield b
    assert not list(cwd.iterdir()), "a gs:// path was written as a local one"


def test_run_dir_of_a_bucket_keeps_its_uri():
    out = common.run_dir(_cfg("gs://bucket/x"))
    assert isinstance(out, epath.Path)
    assert str(out) == "gs://bucket/x/tiny"  # pathlib would collapse it to gs:/bucket/x/tiny
    assert str(out / "ckpt") == "gs://bucket/x/tiny/ckpt" and not fileio.is_local(out)


def test_run_dir_of_a_local_root_is_the_same_path_as_before(tmp_path):
    out = common.run_dir(_cfg(str(tmp_path)))
    assert isinstance(out, epath.Path) and fileio.is_local(out)
    assert out == tmp_path / "tiny" and str(out) == str(tmp_path / "tiny")
    assert str(common.run_dir(_cfg("checkpoints"))) == "checkpoints/tiny"  # relative stays relative
    assert common.records_dir(_cfg(str(tmp_path))) == tmp_path / "tiny" / "records"


def test_local_writes_are_atomic_replaces(tmp_path, monkeypatch):
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append((str(a), str(b))), real_replace(a, b)))
    out = fileio.writable_dir(tmp_path / "run")
    assert isinstance(out, epath.Path)
    fileio.write_json(out / "a.json", {"x": 1.5})
    fileio.write_text(str(out / "b.md"), "# b\n")
    assert json.loads((tmp_path / "run" / "a.json").read_text()) == {"x": 1.5}
    assert (tmp_path / "run" / "b.md").read_text() == "# b\n"
    assert [b for _, b in replaced] == [str(tmp_path / "run" / "a.json"), str(tmp_path / "run" / "b.md")]
    for (tmp, _), name in zip(replaced, ("a.json", "b.md")):  # a hidden temp of this writer's own, beside it
        assert pathlib.Path(tmp).parent == tmp_path / "run" and pathlib.Path(tmp).name.startswith(f".{name}.{os.getpid()}.")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["a.json", "b.md"]  # no probe or temp left


def test_two_writers_of_one_file_do_not_take_each_others_temp(tmp_path):
    """Every process of a job may update one shared memo (weight_digests.json): with one fixed
    temp name, one writer's os.replace moved the other's temp away and it failed (seen as 2
    processes). Each writer now has its own temp, and the file ends whole, one writer's."""
    import threading

    errors, barrier = [], threading.Barrier(8)

    def write(i):
        barrier.wait()
        try:
            for _ in range(20):
                fileio.write_json(tmp_path / "memo.json", {"writer": i, "pad": "x" * 10000})
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert json.loads((tmp_path / "memo.json").read_text())["writer"] in range(8)
    assert [p.name for p in tmp_path.iterdir()] == ["memo.json"]


def test_bucket_writes_are_single_uploads(bucket):
    out = fileio.writable_dir("gs://bucket/x/tiny")
    assert isinstance(out, epath.Path) and str(out) == "gs://bucket/x/tiny"
    (probe,) = bucket.uploads  # the writability probe: written, then deleted
    assert probe.startswith("gs://bucket/x/tiny/.write-probe-") and bucket.objects == {}
    fileio.write_json(out / "report.json", {"aiq": 0.5}, indent=1)
    fileio.write_text(out / "report.md", "| a |\n")
    fileio.write_bytes(epath.Path("gs://bucket/x/tiny/tb") / "events", b"\x00\x01")
    fileio.write_json(out / "report.json", {"aiq": 0.75})  # an overwrite is one more upload, no temp
    assert bucket.objects == {"gs://bucket/x/tiny/report.json": b'{"aiq": 0.75}',
                              "gs://bucket/x/tiny/report.md": b"| a |\n",
                              "gs://bucket/x/tiny/tb/events": b"\x00\x01"}
    assert bucket.uploads[1:] == ["gs://bucket/x/tiny/report.json", "gs://bucket/x/tiny/report.md",
                                  "gs://bucket/x/tiny/tb/events", "gs://bucket/x/tiny/report.json"]


def test_frontier_plot_goes_to_the_bucket(bucket):
    rep = {"routers": {"oracle": {"hull": [[0.1, 0.5], [1.0, 0.9]], "aiq": 0.9},
                       "orchestrator": {"hull": [[0.1, 0.4], [1.0, 0.8]], "aiq": 0.7}},
           "experts": {"org/a": {"cost_per_1k": 0.1, "acc": 0.4}, "org/b": {"cost_per_1k": 1.0, "acc": 0.8}},
           "split": "test", "n_questions": 12}
    report_lib.plot(rep, epath.Path("gs://bucket/x/tiny") / "frontier.png")
    assert bucket.objects["gs://bucket/x/tiny/frontier.png"].startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize("error, fix", [
    (PermissionError("403 Forbidden:\n  caller lacks storage.objects.create"), "check the bucket's name, permissions"),
    (ImportError("Please install gcsfs to access Google Storage"), "install gcsfs"),
])
def test_bucket_errors_are_one_line(bucket, error, fix):
    bucket.fail = error
    with pytest.raises(DataError) as e:
        fileio.writable_dir("gs://bucket/x/tiny")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("the output directory gs://bucket/x/tiny is not writable") and fix in msg
    with pytest.raises(DataError, match=f"cannot write gs://bucket/x/tiny/a.json .*{fix}"):
        fileio.write_json("gs://bucket/x/tiny/a.json", {})


def _installed(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False


def test_without_a_gs_client_the_error_names_gcsfs():
    if _installed("gcsfs"):
        pytest.skip("gcsfs is installed: the probe would reach the network")
    with pytest.raises(DataError, match="install gcsfs"):
        fileio.writable_dir("gs://bucket/x/tiny")


def test_record_store_of_a_bucket_run_must_be_local(tmp_path):
    with pytest.raises(ConfigError, match=r"^the run directory gs://bucket/x/tiny is in a bucket, .*"
                                          r"pass --config\.data\.records=/local/or/shared/path$"):
        common.output_dir(_cfg("gs://bucket/x"))
    with pytest.raises(ConfigError, match=r"config\.data\.records='gs://bucket/r' is in a bucket"):
        common.records_dir(_cfg(str(tmp_path), records="gs://bucket/r"))
    assert common.records_dir(_cfg("gs://bucket/x", records=str(tmp_path / "r"))) == tmp_path / "r"


def test_self_play_refuses_a_bucket_run_dir_before_any_work(tmp_path):
    cfg = _cfg("gs://bucket/x", records=str(tmp_path / "r"))
    cfg.selfplay = {"rounds": 1}
    with pytest.raises(ConfigError, match=r"self-play keeps its record stores .* --config\.output_root="):
        selfplay.run(cfg)
    assert not list(tmp_path.iterdir())


def test_checkpointer_keeps_a_bucket_uri(bucket, tmp_path, monkeypatch):
    """Orbax gets the URI itself (a local path is resolved as before); arrays in a bucket go
    through tensorstore's gcs driver, which this test does not reach."""
    from orbax.checkpoint._src.path import gcs_utils

    if not _installed("google.cloud.storage"):
        # orbax asks google-cloud-storage about the bucket: without it, one line
        with pytest.raises(ConfigError, match=r"cannot open the checkpoints in gs://bucket/x/tiny/ckpt .*"
                                              r"google-cloud-storage"):
            Checkpointer("gs://bucket/x/tiny/ckpt")
    monkeypatch.setattr(gcs_utils, "get_bucket", lambda name: object())  # what it answers for a plain (non-HNS) bucket
    ckpt = Checkpointer("gs://bucket/x/tiny/ckpt", async_save=False)
    assert str(ckpt.directory) == "gs://bucket/x/tiny/ckpt" and ckpt.latest_step() is None
    ckpt.close()
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    local = Checkpointer(tmp_path / "link" / "ckpt", async_save=False)
    assert str(local.directory) == str(tmp_path / "real" / "ckpt")  # symlinks resolved, as pathlib did
    local.close()


def test_a_run_read_back_from_a_bucket(bucket, tmp_path):
    """train_config (what route / add_expert / load_run start from) on a gs:// run: the run's
    own record store is resolved under the URI, and a local one replaces <run>/records."""
    saved = {"output_root": "/elsewhere", "run_name": "old", "data": {"records": ""}, "pool": []}
    bucket.objects["gs://bucket/runs/tiny/config.json"] = json.dumps(saved).encode()
    bucket.dirs.add("gs://bucket/runs/tiny/ckpt")
    cfg = runs.train_config("gs://bucket/runs/tiny")
    assert (cfg.output_root, cfg.run_name) == ("gs://bucket/runs", "tiny")
    assert str(common.run_dir(cfg)) == "gs://bucket/runs/tiny"
    with pytest.raises(ConfigError, match="--config.data.records="):
        common.records_dir(cfg)
    cfg = runs.train_config("gs://bucket/runs/tiny", records=str(tmp_path / "r"))
    assert common.records_dir(cfg) == tmp_path / "r"
    with pytest.raises(ConfigError, match="is not a training run directory"):
        runs.train_config("gs://bucket/runs/missing")
    bucket.fail = ImportError("Please install gcsfs to access Google Storage")
    with pytest.raises(ConfigError, match=r"cannot read config\.checkpoint='gs://bucket/runs/tiny' .*install gcsfs"):
        runs.train_config("gs://bucket/runs/tiny")


def test_train_config_of_a_local_run_ignores_records(tmp_path):
    run = tmp_path / "tiny"
    (run / "ckpt").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"output_root": "x", "run_name": "y", "data": {"records": ""}}))
    cfg = runs.train_config(run, records="/somewhere/else")  # a local run keeps its own store
    assert common.records_dir(cfg) == pathlib.Path(run / "records")
