"""The other jobs as N processes give the result of one (issue 11, part 1): baselines,
add_expert, MiniLM last_k fine-tuning and self-play, each as 2 processes x 4 fake CPU devices
(launch/local_multiprocess.sh) against 1 process over the same 8-device mesh (this one), on
a slice of the real data so each stays well under a minute. (train in frozen mode, route and
the fault test: test_multiprocess.py; the live-experts job: tests/experts/test_experts_job.py.)"""

import json
import pathlib

import pytest

from configs import tiny
import jax
import numpy as np
from flax import nnx

from leeroo_jax.data.records import RecordStore
from leeroo_jax.jobs import add_expert, baselines, selfplay, train
from leeroo_jax.jobs.runs import load_run
from slices import assert_close_trees, real_slice
from subprocs import run_processes, why

PER_SPLIT = {"train": 64, "val": 16, "test": 16}


def _two(port: int, *args) -> None:
    """`python -m MODULE ARGS` (or `python SCRIPT.py ARGS`) as 2 processes x 4 devices."""
    proc = run_processes(2, list(args), port)
    assert proc.returncode == 0, why(proc)


def _cfg(variant: str, root: pathlib.Path, data: list[str], **train_kw):
    cfg = tiny.get_config(variant)
    cfg.output_root = str(root)
    for arg in data:
        key, value = arg.removeprefix("--config.data.").split("=", 1)
        cfg.data[key] = value
    cfg.train.update(train_kw)
    return cfg


def _report(d: pathlib.Path) -> dict:
    return json.loads((d / "report.json").read_text())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return real_slice(tmp_path_factory.mktemp("slice"), PER_SPLIT)[0]


def test_baselines(tmp_path, data):
    _two(12397, "leeroo_jax.score", "--config=configs/tiny.py", "--config.job=baselines",
         f"--config.output_root={tmp_path / 'two'}", *data)
    baselines.run(_cfg("", tmp_path / "one", data))
    assert_close_trees(_report(tmp_path / "one" / "tiny"), _report(tmp_path / "two" / "tiny"))


def test_add_expert_restores_a_1_process_run_and_grows_it_as_2(tmp_path, data):
    base = _cfg("holdout", tmp_path, data, batch_size=16)
    train.run(base)
    checkpoint = tmp_path / base.run_name
    _two(12398, "leeroo_jax.score", "--config=configs/tiny.py", "--config.job=add_expert", *data,
         f"--config.checkpoint={checkpoint}", "--config.add_expert.run_name=two", "--config.add_expert.probes=30")
    cfg = _cfg("", tmp_path, data)
    cfg.job, cfg.checkpoint = "add_expert", str(checkpoint)
    cfg.add_expert.run_name, cfg.add_expert.probes = "one", 30
    add_expert.run(cfg)
    one, two = tmp_path / "one", tmp_path / "two"
    assert json.loads((one / "probes.json").read_text()) == json.loads((two / "probes.json").read_text())
    assert_close_trees(_report(one), _report(two))


@pytest.mark.parametrize("mode", ["last_k", "full"])
def test_fine_tuning(tmp_path, data, minilm_path, mode):
    """MiniLM fine-tuned (its top layer, or whole) as 2 processes: the 1-process parameters
    (<= 1e-6, each best checkpoint restored) and the same report, policy, calibration, routes."""
    steps = [f"--config.train.mode={mode}", "--config.train.last_k=1", "--config.train.steps=1",
             "--config.train.eval_every=1", "--config.train.batch_size=16"]
    _two(12399, "leeroo_jax.train", "--config=configs/tiny.py", f"--config.output_root={tmp_path / 'two'}", *data, *steps)
    train.run(_cfg("", tmp_path / "one", data, mode=mode, last_k=1, steps=1, eval_every=1, batch_size=16))
    one, two = tmp_path / "one" / "tiny", tmp_path / "two" / "tiny"
    for name in ("report.json", "policy.json", "calibration.json"):
        assert_close_trees(json.loads((one / name).read_text()), json.loads((two / name).read_text()))
    assert (two / "routes.jsonl").read_text() == (one / "routes.jsonl").read_text()
    a, b = (dict(nnx.traversals.flatten_mapping(nnx.to_pure_dict(load_run(d).trainer.state[0]))) for d in (one, two))
    assert a.keys() == b.keys() and any("backbone" in map(str, k) for k in a)  # the backbone's weights were saved
    for k in a:
        np.testing.assert_allclose(np.asarray(b[k]), np.asarray(a[k]), rtol=0, atol=1e-6, err_msg=str(k))


def test_selfplay_rounds_call_record_and_retrain_as_in_one_process(tmp_path, data):
    """Two rounds of the bank self-play: process 0 commits each round's calls, the other waits
    for the commit and reopens the store, so both retrain on the same records."""
    _two(12400, "leeroo_jax.selfplay", "--config=configs/tiny.py:selfplay", f"--config.output_root={tmp_path / 'two'}",
         *data)
    selfplay.run(_cfg("selfplay", tmp_path / "one", data))
    one, two = (tmp_path / d / "tiny_selfplay" for d in ("one", "two"))
    assert_close_trees(json.loads((one / "rounds.json").read_text()), json.loads((two / "rounds.json").read_text()))
    a, b = (RecordStore(d / "records").read() for d in (one, two))
    assert (a["round"] > 0).sum() > 0
    for k in ("qid", "expert", "round", "outcome", "cost"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_a_cold_embedding_cache_is_filled_by_both_processes_sharing_the_work(tmp_path, data):
    """baselines with a kNN router embeds the slice's 96 questions; with an empty cache
    ($LEEROO_CACHE: the real weights linked in, nothing embedded) each of the 2 processes embeds
    half, and process 0 writes all of them: the vectors one process computes in one go."""
    from leeroo_jax.data import mmlu
    from leeroo_jax.data.embed_cache import EmbeddingCache
    from leeroo_jax.data.pool import query_text
    from leeroo_jax.orchestrator.backbone import Backbone, Embedder
    from leeroo_jax.weights import assets
    from leeroo_jax.weights.loader import load

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "weights").symlink_to(assets.cache_root() / "weights")
    env = {"LEEROO_CACHE": str(cache), "LEEROO_COMPILE_CACHE": str(assets.cache_root() / "jax")}
    proc = run_processes(2, ["leeroo_jax.score", "--config=configs/tiny.py", "--config.job=baselines",
                             "--config.eval.knn_ks=(5,)", f"--config.output_root={tmp_path / 'out'}", *data],
                         12402, env)
    assert proc.returncode == 0, why(proc)
    n = sum(PER_SPLIT.values())
    assert sorted(line.split(" texts")[0] for line in proc.stdout.splitlines() if line.startswith("embedded ")) == \
        [f"embedded {n // 2}"] * 2
    texts = [query_text(q) for q in mmlu.load_questions(data[0].split("=", 1)[1])]
    bb = tiny.get_config().backbone
    stored = EmbeddingCache(cache / "embeddings", Embedder.from_config(bb).key, 384)
    assert stored.missing(texts) == []
    want = Backbone(load(assets.backbone_path(bb.path)), bb.pooling, bb.max_length, bb.batch_size).encode(texts)
    np.testing.assert_allclose(stored.get(texts, None), want, atol=1e-5)


PROMPTS = ["The capital of France is", "Water boils at", "Write one question about astronomy:",
           "1, 2, 3,", "Photosynthesis makes", "The largest planet is", "def add(a, b):", "Question: What is 7 x 8?"]


def test_greedy_generation_with_the_kv_cache(tmp_path, smollm2_path):
    """What the self-play generator and chat recipes run: SmolLM2 continues 8 prompts greedily
    as 2 processes (each feeding its rows, the tokens all-gathered), token for token what one
    process generates."""
    from leeroo_jax import sharding
    from leeroo_jax.experts import generate
    from leeroo_jax.weights.loader import load

    out = tmp_path / "two.json"
    _two(12403, "tests/generate_worker.py", str(smollm2_path), str(out), *PROMPTS)
    mesh = sharding.make_mesh(sharding.MeshConfig(data=-1))
    lm = load(smollm2_path, mesh)
    ids = [lm.tokenizer(p)["input_ids"] for p in PROMPTS]
    with jax.set_mesh(mesh):
        want = generate.greedy_generate(lm.model, ids, 12, [lm.tokenizer.eos_token_id], mesh)
    assert json.loads(out.read_text()) == want and all(want)

