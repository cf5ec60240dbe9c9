"""Bad inputs through the real CLI: one `error: ...` line naming the problem and the fix, exit
status 2, no traceback, and nothing half-written (issue 8, section 5).

Every case runs `python -m leeroo_jax.train|score` in a subprocess on a small slice of the real
data (60 questions, 36 TRAIN / 12 VAL / 12 TEST, each graded by all 9 experts), so a case
takes seconds. Jobs that embed with a throwaway random BERT get their own LEEROO_CACHE (the
shared embedding cache is not polluted) but keep the shared compile cache.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from slices import real_slice

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = "configs/tiny.py"
PER_SPLIT = {"train": 36, "val": 12, "test": 12}
# A tiny run: steps=10 with one VAL evaluation and checkpoint at step 10.
TRAIN_ARGS = ("--config.train.steps=10", "--config.train.eval_every=10", "--config.train.batch_size=8")


def _cli(module: str, config: str, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", module, f"--config={config}", *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The last stderr line: `error: ...` holding every needle; exit 2; no traceback anywhere."""
    tail = f"rc={proc.returncode}\nstderr:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, tail
    assert proc.returncode == 2, tail
    lines = proc.stderr.strip().splitlines()
    assert lines, tail
    last = lines[-1]
    assert last.startswith("error: "), tail
    assert sum(line.startswith("error:") for line in lines) == 1, tail  # the error is one line, said once
    for needle in needles:
        assert needle in last, f"{needle!r} not in {last!r}"
    return last


def _files(d: pathlib.Path) -> dict[str, bytes]:
    """Every file under d (relative path -> bytes), to compare a directory before and after."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()} if d.exists() else {}


# --- data -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(--config.data.* args of the 60-question slice, those of its 36 TRAIN questions alone)."""
    return real_slice(tmp_path_factory.mktemp("data"), PER_SPLIT)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    """A tiny training run (configs/tiny.py, 10 steps) on the 60-question slice: <root>/tiny."""
    root = tmp_path_factory.mktemp("runs")
    proc = _cli("leeroo_jax.train", TINY, f"--config.output_root={root}", *data[0], *TRAIN_ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = root / "tiny"
    assert (run / "report.json").exists() and sorted(p.name for p in (run / "ckpt").iterdir() if p.name.isdigit()) == ["10"]
    return run


# --- 1, 2: budgets below what any routing can meet; an empty question file --------------------


@pytest.mark.parametrize("overrides, needles", [
    pytest.param(["--config.route.mode=cap", "--config.route.value=1e-9"],
                 ["cap 1e-09 USD is below every expert's cost", "the cap must be >=", "--config.route.mode=batch_budget"],
                 id="cap"),
    pytest.param(["--config.route.mode=batch_budget", "--config.route.value=1e-9"],
                 ["batch budget 1e-09 USD/query is below the cheapest routing", "the feasible range is"],
                 id="batch_budget"),
    pytest.param(["--config.route.calibrate_on=val", "--config.route.mode=tradeoff", "--config.route.value=1e-9"],
                 ["budget target 1e-09 USD/query", "is below the feasible range", "pick a target inside it"],
                 id="tradeoff_calibrated"),
    pytest.param(["--config.route.calibrate_on=val", "--config.route.mode=quality", "--config.route.value=1e-9"],
                 ["budget target 1e-09 USD/query", "is below the feasible range", "pick a target inside it"],
                 id="quality_calibrated"),
    pytest.param(["--config.route.value=-1"], ["config.route.value=-1", "must be a finite number >= 0"],
                 id="negative"),
    pytest.param(["--config.route.value=cheap"],
                 ["config.route.value='cheap' is neither a number nor one of weak, strong", "--config.route.value=weak"],
                 id="not_a_number"),
    pytest.param(["--config.route.questions={empty}"], ["config.route.questions=", "holds no questions",
                                                        "pass a non-empty file"], id="empty_questions"),
])
def test_route_rejects_bad_budgets_and_inputs(trained, tmp_path, overrides, needles):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out = tmp_path / "route"
    before = _files(trained)
    proc = _cli("leeroo_jax.score", TINY, "--config.job=route", f"--config.checkpoint={trained}",
                f"--config.route.output={out}", *(o.format(empty=empty) for o in overrides))
    _one_line_error(proc, *needles)
    assert not proc.stdout.strip(), proc.stdout[-2000:]  # no summary printed: the job stopped before routing
    assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())  # no choices.jsonl / summary.json
    assert _files(trained) == before  # the training run is untouched


def test_baselines_on_an_empty_evaluation_split(data, tmp_path):
    """Questions that are all TRAIN by the id rule (int(id, 16) % 10 >= 4): nothing to evaluate on TEST."""
    proc = _cli("leeroo_jax.score", TINY, "--config.job=baselines", f"--config.output_root={tmp_path}", *data[1])
    _one_line_error(proc, "the test split has no question graded by every evaluated expert", "evaluate another split")
    for name in ("report.json", "report.md", "frontier.png"):
        assert not (tmp_path / "tiny" / name).exists(), name


# --- 3: an output directory that cannot be written ------------------------------------------


def _sys_is_a_dir_root_cannot_write() -> bool:
    """/sys (sysfs): os.access says root may write it, but creating a file there fails."""
    if not (os.path.isdir("/sys") and os.access("/sys", os.W_OK | os.X_OK)):
        return False
    try:
        os.close(os.open("/sys/.leeroo_probe", os.O_CREAT | os.O_WRONLY, 0o600))
    except OSError:
        return True
    os.unlink("/sys/.leeroo_probe")
    return False


SYSFS = pytest.mark.skipif(not _sys_is_a_dir_root_cannot_write(), reason="/sys is not an unwritable directory here")
JOBS = {"train": ("leeroo_jax.train", []), "baselines": ("leeroo_jax.score", ["--config.job=baselines"])}


@pytest.mark.parametrize("job, where, needles", [
    pytest.param("train", "under_a_file", ["cannot create the output directory", "Not a directory",
                                           "choose a writable location"], id="train-under_a_file"),
    pytest.param("baselines", "under_a_file", ["cannot create the output directory", "Not a directory",
                                               "choose a writable location"], id="baselines-under_a_file"),
    pytest.param("train", "sysfs", ["the output directory /sys is not writable", "choose a writable location"],
                 marks=SYSFS, id="train-sysfs"),
    pytest.param("baselines", "sysfs", ["the output directory /sys is not writable", "choose a writable location"],
                 id="baselines-sysfs", marks=SYSFS),
])
def test_unwritable_output_directory(data, tmp_path, job, where, needles):
    module, extra = JOBS[job]
    if where == "under_a_file":  # as root every existing directory is writable: make one that cannot exist
        (tmp_path / "afile").write_text("not a directory")
        target = [f"--config.output_root={tmp_path / 'afile' / 'out'}"]
    else:  # an existing directory root may not write into: the run directory is /sys itself
        target = ["--config.output_root=/", "--config.run_name=sys"]
    proc = _cli(module, TINY, *target, *data[0], *TRAIN_ARGS, *extra)
    _one_line_error(proc, *needles)
    assert (tmp_path / "afile").is_file() if where == "under_a_file" else not os.path.exists("/sys/config.json")


def test_a_bucket_run_dir_needs_a_local_record_store(tmp_path):
    """--config.output_root=gs://...: the run directory may be in a bucket, the record store may
    not; one line naming the fix before any work, and nothing written locally (run from an
    empty directory: pathlib used to turn the URI into ./gs:/bucket/x/tiny)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "leeroo_jax.train", f"--config={ROOT / TINY}",
                           "--config.output_root=gs://bucket/x"], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=600)
    _one_line_error(proc, "the run directory gs://bucket/x/tiny is in a bucket", "record store",
                    "--config.data.records=/local/or/shared/path")
    assert not list(tmp_path.iterdir())


# --- 4: a tokenizer whose ids the model's embedding table does not have ----------------------


def _random_bert(path: pathlib.Path, vocab: int, seed: int, tokenizer_from: pathlib.Path | None) -> None:
    """A tiny random BertModel (hidden 32, 2 layers) saved as safetensors, with MiniLM's tokenizer."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=37)
    transformers.BertModel(cfg).save_pretrained(path, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if tokenizer_from is not None and (tokenizer_from / name).exists():
            shutil.copy(tokenizer_from / name, path / name)


def _embed_env(cache: pathlib.Path) -> dict:
    """A private embedding cache, the shared compile cache."""
    from leeroo_jax.weights import assets

    shared_jax = os.environ.get("LEEROO_COMPILE_CACHE") or str(assets.cache_root() / "jax")
    return {**os.environ, "LEEROO_CACHE": str(cache), "LEEROO_COMPILE_CACHE": shared_jax}


def _baselines_knn(data, out: pathlib.Path, model: pathlib.Path, env: dict) -> subprocess.CompletedProcess:
    return _cli("leeroo_jax.score", TINY, "--config.job=baselines", f"--config.output_root={out}", *data[0],
                f"--config.backbone.path={model}", "--config.eval.knn_ks=(5,)", env=env)


def test_tokenizer_ids_past_the_vocabulary(data, tmp_path, minilm_path):
    model = tmp_path / "bert100"
    _random_bert(model, vocab=100, seed=0, tokenizer_from=minilm_path)
    proc = _baselines_knn(data, tmp_path / "out", model, _embed_env(tmp_path / "cache"))
    _one_line_error(proc, str(model), "the tokenizer produces id", "the model's vocabulary has 100 rows",
                    "pair the checkpoint with its own tokenizer files")
    assert not (tmp_path / "out" / "tiny" / "report.json").exists()


def test_checkpoint_without_tokenizer(data, tmp_path):
    model = tmp_path / "bert_no_tok"
    _random_bert(model, vocab=30522, seed=0, tokenizer_from=None)
    proc = _baselines_knn(data, tmp_path / "out", model, _embed_env(tmp_path / "cache"))
    _one_line_error(proc, str(model), "tokenizer")
    assert not (tmp_path / "out" / "tiny" / "report.json").exists()


# --- 5: resuming under a config the checkpoint was not trained with ---------------------------


DROP_LAST_EXPERT = """\
from configs import tiny


def get_config():
    c = tiny.get_config()
    c.pool = list(c.pool)[:-1]  # the records store accepts a prefix of its pool: the checkpoint check decides
    c.data.extra_experts = "skip"
    return c
"""

RESUMES = {
    "hidden": (TINY, ["--config.train.hidden=32"],
               ["ckpt was trained with config.train.hidden=16 but this config has 32",
                "resume with the run's own config, or start a new run (--config.run_name=...)"]),
    "pool_drops_last_expert": ("{drop_last}", [],
                               ["ckpt was trained with config.pool (expert names)=", "itpossible/Chinese-Mistral-7B-v0.1",
                                "resume with the run's own config, or start a new run"]),
    "pool_holdout": (f"{TINY}:holdout", ["--config.run_name=tiny"], ["config.pool"]),
}


@pytest.fixture(scope="module", params=list(RESUMES))
def resumed(request, trained, data, tmp_path_factory):
    """(case, the failed resume, run files before, run files after), on a copy of the trained run."""
    case = request.param
    root = tmp_path_factory.mktemp(f"resume_{case}")
    shutil.copytree(trained, root / "tiny")
    (root / "drop_last.py").write_text(DROP_LAST_EXPERT)
    config, overrides, _ = RESUMES[case]
    before = _files(root / "tiny")
    proc = _cli("leeroo_jax.train", config.format(drop_last=root / "drop_last.py"), f"--config.output_root={root}",
                *data[0], *TRAIN_ARGS, *overrides)
    return case, proc, before, _files(root / "tiny")


def test_resume_under_another_config_is_one_line(resumed):
    case, proc, before, after = resumed
    last = _one_line_error(proc)
    assert "resumed from step" not in proc.stdout
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert not changed, sorted(changed)  # no new checkpoint, metrics, report or routes
    for needle in RESUMES[case][2]:
        assert needle in last, f"{needle!r} not in {last!r}"


def test_failed_resume_keeps_the_runs_config_json(resumed):
    """config.json is what `route` rebuilds the run from: a refused resume must not replace it."""
    case, proc, before, after = resumed
    assert proc.returncode == 2
    assert before["config.json"] == after["config.json"]


# --- 6: a different checkpoint saved in the same folder ---------------------------------------


def _cache_entries(cache: pathlib.Path) -> dict[str, np.ndarray]:
    import tensorstore as ts

    out = {}
    for d in sorted((cache / "embeddings").iterdir()):
        n = len(json.loads((d / "manifest.json").read_text())["hashes"])
        spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str((d / "vectors").resolve())}}
        out[d.name] = np.asarray(ts.open(spec).result()[:n].read().result())
    return out


def test_embedding_cache_is_keyed_by_the_weights_not_the_folder(data, tmp_path, minilm_path):
    model, cache = tmp_path / "bert", tmp_path / "cache"
    env = _embed_env(cache)
    n = sum(PER_SPLIT.values())

    _random_bert(model, vocab=30522, seed=0, tokenizer_from=minilm_path)
    first = _baselines_knn(data, tmp_path / "run1", model, env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"embedded {n} texts" in first.stdout

    _random_bert(model, vocab=30522, seed=1, tokenizer_from=minilm_path)  # another init, the same folder
    second = _baselines_knn(data, tmp_path / "run2", model, env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"embedded {n} texts" in second.stdout, second.stdout[-2000:]  # recomputed, not served stale
    entries = _cache_entries(cache)
    assert len(entries) == 2 and all(v.shape == (n, 32) for v in entries.values()), {k: v.shape for k, v in entries.items()}
    a, b = entries.values()
    assert not np.allclose(a, b)  # two checkpoints, two sets of vectors

    third = _baselines_knn(data, tmp_path / "run3", model, env)  # the same weights again: all cached
    assert third.returncode == 0, third.stderr[-3000:]
    assert "embedded" not in third.stdout, third.stdout[-2000:]
    assert len(_cache_entries(cache)) == 2
    knn = [json.loads((tmp_path / r / "tiny" / "report.json").read_text())["routers"]["knn5"] for r in ("run2", "run3")]
    assert knn[0] == knn[1]


# --- 7, 8: config mistakes caught before any work ---------------------------------------------


def test_unknown_config_key_for_train(tmp_path):
    proc = _cli("leeroo_jax.train", TINY, f"--config.output_root={tmp_path}", "--config.trian.lr=1")
    last = _one_line_error(proc, "unknown config key", "'trian'", 'Did you mean "train"')
    assert "configs/base.py" in last
    assert not (tmp_path / "tiny").exists()


NAMELESS_EXPERT = """\
from configs import base


def get_config():
    c = base.get_config()
    c.pool = [dict(input_price=1.0, output_price=1.0)] + list(c.pool)
    return c
"""


@pytest.mark.parametrize("module, extra", [("leeroo_jax.train", []), ("leeroo_jax.score", ["--config.job=baselines"])])
def test_pool_entry_without_a_name(tmp_path, module, extra):
    config = tmp_path / "nameless.py"
    config.write_text(NAMELESS_EXPERT)
    proc = _cli(module, str(config), f"--config.output_root={tmp_path / 'out'}", *extra)
    _one_line_error(proc, "config.pool[0] has no name", "give every expert a unique name")
    assert not (tmp_path / "out").exists()


# --- a pool brought as an outcomes CSV and a price table (configs/custom_pool.py) -------------


def test_a_price_table_missing_models_of_the_csv_names_them_all(data, tmp_path):
    """The slice's CSV grades 9 models; a table pricing 7 of them stops the job before any
    training with one line naming the other 2, and leaves no record store behind."""
    outcomes = data[0][1].split("=", 1)[1]
    rows = (ROOT / "configs" / "custom_pool_prices.csv").read_text().splitlines()
    (tmp_path / "prices.csv").write_text("\n".join(rows[:-2]) + "\n")
    out = tmp_path / "out"
    proc = _cli("leeroo_jax.train", f"configs/custom_pool.py:{outcomes},{tmp_path / 'prices.csv'}", *data[0][:1],
                f"--config.output_root={out}", *TRAIN_ARGS)
    missing = [r.split(",")[0] for r in rows[-2:]]
    _one_line_error(proc, "grades 2 model(s) the pool does not price", *(repr(m) for m in missing), "extra_experts=skip")
    assert not list(out.rglob("records*")) and not list(out.rglob("report.json"))


def test_a_bad_price_table_is_one_line_at_config_load(tmp_path):
    (tmp_path / "prices.csv").write_text("model,input_price,output_price\na,1,1\nb,one,1\n")
    proc = _cli("leeroo_jax.train", f"configs/custom_pool.py:vendored,{tmp_path / 'prices.csv'}",
                f"--config.output_root={tmp_path / 'out'}")
    _one_line_error(proc, "prices.csv:3: a price is not a number", "USD per 1M tokens")
    assert not (tmp_path / "out").exists()


def test_a_three_model_pool_from_its_own_csv_and_price_table_trains(data, tmp_path):
    """The other side of the check: a user's 3-model CSV (real rows of the slice) and its price
    table train and report those 3 experts, weak / strong the cheapest and the dearest."""
    src = pathlib.Path(data[0][1].split("=", 1)[1]).read_text().splitlines()
    keep = ("gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1", "meta-llama/Meta-Llama-3-8B")
    (tmp_path / "mine.csv").write_text("\n".join([src[0]] + [r for r in src[1:] if r.split(",")[1] in keep]) + "\n")
    prices = (ROOT / "configs" / "custom_pool_prices.csv").read_text().splitlines()
    (tmp_path / "prices.csv").write_text("\n".join([prices[0]] + [r for r in prices if r.split(",")[0] in keep]) + "\n")
    proc = _cli("leeroo_jax.train", f"configs/custom_pool.py:{tmp_path / 'mine.csv'},{tmp_path / 'prices.csv'}",
                *data[0][:1], f"--config.output_root={tmp_path}", "--config.eval.knn_ks=()",
                "--config.backbone.max_length=16", "--config.eval.policy_folds=0", *TRAIN_ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads((tmp_path / "custom_pool" / "report.json").read_text())
    assert sorted(rep["experts"]) == sorted(keep)
    assert rep["weak_strong"] == ["meta-llama/Meta-Llama-3-8B", "gpt-4-1106-preview"]
