"""Every bad checkpoint gives one line that names the problem and the fix, and no model."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from leeroo_jax.errors import WeightsError
from leeroo_jax.weights import loader


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("good")
    transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    return path


@pytest.fixture
def ckpt(good, tmp_path):
    path = tmp_path / "ckpt"
    shutil.copytree(good, path)
    return path


def _edit_tensors(path, fn):
    tensors = load_file(path / "model.safetensors")
    fn(tensors)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})


def _edit_config(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def _error(path) -> str:
    with pytest.raises(WeightsError) as e:
        loader.load(path)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 600
    return msg


def test_good_checkpoint_loads(good):
    assert loader.load(good).config.num_layers == 2


def test_unused_key(ckpt):
    _edit_tensors(ckpt, lambda t: t.update({"model.layers.0.self_attn.extra.weight": np.zeros((2, 2), np.float32)}))
    assert "model.layers.0.self_attn.extra.weight" in _error(ckpt)


def test_unfilled_parameter(ckpt):
    _edit_tensors(ckpt, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    msg = _error(ckpt)
    assert "layers.w_up[1]" in msg and "no checkpoint tensor" in msg


def test_key_for_a_parameter_the_config_disables(ckpt):
    _edit_tensors(ckpt, lambda t: t.update({"model.layers.0.self_attn.q_proj.bias": np.zeros(32, np.float32)}))
    assert "q_proj.bias" in _error(ckpt)


def test_shape_mismatch(ckpt):
    _edit_config(ckpt, intermediate_size=40)
    msg = _error(ckpt)
    assert "has shape (32, 48), expected (32, 40)" in msg and "config.json" in msg


def test_unsupported_model_type(ckpt):
    _edit_config(ckpt, model_type="gpt2")
    msg = _error(ckpt)
    assert "'gpt2' is not supported" in msg and "llama" in msg


def test_model_type_unknown_to_transformers(ckpt):
    _edit_config(ckpt, model_type="no_such_arch")
    assert "config.json" in _error(ckpt)


def test_truncated_safetensors(ckpt):
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) - 1000])
    assert "truncated" in _error(ckpt)


def test_corrupt_header(ckpt):
    (ckpt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    assert "not a valid safetensors" in _error(ckpt)


def test_pickle_checkpoint_is_refused(ckpt):
    (ckpt / "model.safetensors").rename(ckpt / "pytorch_model.bin")
    msg = _error(ckpt)
    assert "never unpickle" in msg


def test_missing_shard_of_an_index(ckpt):
    keys = list(load_file(ckpt / "model.safetensors"))
    (ckpt / "model.safetensors").rename(ckpt / "model-00001-of-00002.safetensors")
    weight_map = {k: "model-00001-of-00002.safetensors" for k in keys}
    weight_map[keys[0]] = "model-00002-of-00002.safetensors"
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert "missing" in _error(ckpt)


def test_sharded_index_loads(ckpt, good):
    tensors = load_file(ckpt / "model.safetensors")
    (ckpt / "model.safetensors").unlink()
    names = sorted(tensors)
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate((names[:half], names[half:])):
        fname = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: tensors[k] for k in part}, ckpt / fname)
        weight_map.update({k: fname for k in part})
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    a, b = loader.load(ckpt).model, loader.load(good).model
    np.testing.assert_array_equal(np.asarray(a.layers.wq[...]), np.asarray(b.layers.wq[...]))


def test_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="offline.*local directory"):
        loader.load("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_missing_local_path(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        loader.load(tmp_path / "nope")


def test_cli_prints_one_line_and_exits_nonzero(ckpt):
    _edit_config(ckpt, model_type="gpt2")
    proc = subprocess.run([sys.executable, "-m", "leeroo_jax.weights.loader", str(ckpt)],
                          capture_output=True, text=True, env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: model_type 'gpt2' is not supported") and "Traceback" not in proc.stderr
