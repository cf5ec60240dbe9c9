"""GGUF import (leeroo_jax/weights/gguf.py) against transformers' own GGUF reader.

The reference is independent of our code: transformers dequantizes and un-permutes the same
real file (SmolLM2-135M-Instruct Q4_1) itself. Our side is the directory `make setup` wrote
with `gguf.convert` (.cache/weights/SmolLM2-135M-Instruct; after changing the converter,
delete it and rerun `make setup`). Against the reference we require the same tensors bit for
bit, the same logits, the same tokens on real MMLU text and the same chat prompt; and torch's
Llama on our directory answers 'Paris'. Heavy objects are built once per module.

A tiny synthetic GGUF, written the way llama.cpp writes one, covers the rest cheaply: the
untied lm_head, exact un-permutation, atomic output on a crash, and one-line errors.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")  # transformers' GGUF loading needs it
gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

from safetensors.numpy import load_file  # noqa: E402

from leeroo_jax.data import mmlu  # noqa: E402
from leeroo_jax.errors import WeightsError  # noqa: E402
from leeroo_jax.weights import assets  # noqa: E402
from leeroo_jax.weights import gguf as gguf_import  # noqa: E402

CHAT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # Measured here: a 2-thread torch forward is ~20x slower than 1 thread when the 2 cores
    # are shared with other work (OpenMP threads spin); this model is small, one is plenty.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def gguf_path(smollm2_path):  # smollm2_path: skips (or fails on CI) when `make setup` has not run
    path = assets.smollm2_gguf()
    if not path.exists():
        pytest.fail(f"{path} missing although {smollm2_path} exists; rerun `make setup`")
    return path


@pytest.fixture(scope="module")
def reference_model(gguf_path):
    model = transformers.AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    return model.eval()


@pytest.fixture(scope="module")
def reference_tokenizer(gguf_path):
    return transformers.AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)


@pytest.fixture(scope="module")
def our_tokenizer(smollm2_path):
    return transformers.AutoTokenizer.from_pretrained(smollm2_path)


def test_tensors_equal_transformers_gguf_reader(smollm2_path, reference_model):
    ours = load_file(smollm2_path / "model.safetensors")
    theirs = {k: v.numpy() for k, v in reference_model.state_dict().items()}
    # Tied embeddings: the GGUF has no `output` tensor, we write no lm_head, torch ties it.
    assert reference_model.config.tie_word_embeddings
    assert set(theirs) - set(ours) == {"lm_head.weight"}
    assert set(ours) <= set(theirs)
    np.testing.assert_array_equal(theirs["lm_head.weight"], ours["model.embed_tokens.weight"])
    for name, w in ours.items():
        assert w.dtype == np.float32, name
        assert w.shape == theirs[name].shape, name
        if not np.array_equal(w, theirs[name]):  # equal in practice; the slow check only on a miss
            np.testing.assert_allclose(w, theirs[name], rtol=0, atol=1e-6, err_msg=name)


def test_config_matches_transformers_gguf_config(smollm2_path, reference_model):
    raw = json.loads((smollm2_path / "config.json").read_text())
    assert "quantization_config" not in raw
    assert raw["model_type"] == "llama" and raw["architectures"] == ["LlamaForCausalLM"]
    assert raw["dtype"] == "float32" and raw["tie_word_embeddings"] is True
    ours, theirs = transformers.AutoConfig.from_pretrained(smollm2_path), reference_model.config
    for field in (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "max_position_embeddings", "bos_token_id", "eos_token_id",
        "pad_token_id", "hidden_act", "attention_bias", "mlp_bias",
    ):  # fmt: skip
        assert getattr(ours, field) == getattr(theirs, field), field
    # GGUF stores these as float32; we write the decimal the original config had (1e-05).
    assert ours.rms_norm_eps == pytest.approx(theirs.rms_norm_eps, rel=1e-6)
    assert ours.rope_parameters["rope_theta"] == pytest.approx(theirs.rope_parameters["rope_theta"], rel=1e-6)
    assert ours.rope_parameters["rope_type"] == theirs.rope_parameters["rope_type"] == "default"


def test_tokenizer_matches_transformers_gguf_tokenizer(our_tokenizer, reference_tokenizer):
    assert len(our_tokenizer) == len(reference_tokenizer) == 49152
    for attr in ("bos_token", "eos_token", "unk_token", "pad_token", "eos_token_id", "pad_token_id"):
        assert getattr(our_tokenizer, attr) == getattr(reference_tokenizer, attr), attr
    # Real MMLU questions (the vendored split) in the zero-shot prompt the experts score.
    texts = [mmlu.zero_shot_prompt(q) for q in mmlu.load_questions(limit=8)]
    texts.append("<|im_start|>user\n  tabs\tand   spaces, 12345, naïve café 🙂<|im_end|>")
    ours, theirs = our_tokenizer(texts).input_ids, reference_tokenizer(texts).input_ids
    assert ours == theirs
    assert our_tokenizer.batch_decode(ours) == reference_tokenizer.batch_decode(theirs)
    assert our_tokenizer.decode(ours[0]) == texts[0]  # byte-level BPE round-trips exactly


def test_chat_template_matches(our_tokenizer, reference_tokenizer):
    def render(tok, **kw):
        return tok.apply_chat_template(CHAT, add_generation_prompt=True, **kw)

    text = render(our_tokenizer, tokenize=False)
    assert text == render(reference_tokenizer, tokenize=False)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert render(our_tokenizer, tokenize=True, return_dict=False) == render(
        reference_tokenizer, tokenize=True, return_dict=False
    )


def test_torch_llama_from_our_dir_answers_paris(smollm2_path, our_tokenizer, reference_model):
    model = transformers.LlamaForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32).eval()
    inputs = our_tokenizer.apply_chat_template(
        CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        # Same weights and config => same logits as transformers' own GGUF model.
        ours, theirs = model(**inputs).logits, reference_model(**inputs).logits
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
        out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    answer = our_tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


# --- synthetic files: the permutation, an untied model, crashes, bad input ---------------


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # llama.cpp convert_hf_to_gguf.py, LlamaModel.permute (the forward transform we undo).
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.mark.parametrize("n_head,head_dim,width", [(9, 64, 576), (3, 64, 576), (4, 8, 5)])
def test_unpermute_inverts_llama_cpp_permute(n_head, head_dim, width):
    w = np.random.default_rng(0).standard_normal((n_head * head_dim, width)).astype(np.float32)
    permuted = _llama_cpp_permute(w, n_head)
    assert not np.array_equal(permuted, w)
    np.testing.assert_array_equal(gguf_import._unpermute_rows(permuted, n_head), w)


# A complete tiny Llama (F32, so values are exact): width 8, 2 heads of 4, 1 KV head, untied.
# HF name -> (llama.cpp's name, written out independently of the converter's table; shape).
_TINY = {
    "model.embed_tokens.weight": ("token_embd.weight", (4, 8)),
    "model.layers.0.input_layernorm.weight": ("blk.0.attn_norm.weight", (8,)),
    "model.layers.0.self_attn.q_proj.weight": ("blk.0.attn_q.weight", (8, 8)),
    "model.layers.0.self_attn.k_proj.weight": ("blk.0.attn_k.weight", (4, 8)),
    "model.layers.0.self_attn.v_proj.weight": ("blk.0.attn_v.weight", (4, 8)),
    "model.layers.0.self_attn.o_proj.weight": ("blk.0.attn_output.weight", (8, 8)),
    "model.layers.0.post_attention_layernorm.weight": ("blk.0.ffn_norm.weight", (8,)),
    "model.layers.0.mlp.gate_proj.weight": ("blk.0.ffn_gate.weight", (16, 8)),
    "model.layers.0.mlp.up_proj.weight": ("blk.0.ffn_up.weight", (16, 8)),
    "model.layers.0.mlp.down_proj.weight": ("blk.0.ffn_down.weight", (8, 16)),
    "model.norm.weight": ("output_norm.weight", (8,)),
    "lm_head.weight": ("output.weight", (4, 8)),
}


def _tiny_hf_weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: rng.standard_normal(shape).astype(np.float32) for k, (_, shape) in _TINY.items()}


def _tiny_gguf(path: pathlib.Path, arch: str = "llama", tensors: dict[str, np.ndarray] | None = None) -> pathlib.Path:
    """Write a GGUF the way llama.cpp's converter does; default tensors: `_tiny_hf_weights()`."""
    if tensors is None:
        hf = _tiny_hf_weights()
        for proj, n_head in (("q_proj", 2), ("k_proj", 1)):  # llama.cpp permutes these on export
            key = f"model.layers.0.self_attn.{proj}.weight"
            hf[key] = _llama_cpp_permute(hf[key], n_head)
        tensors = {_TINY[k][0]: v for k, v in hf.items()}
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_context_length(32)
    writer.add_vocab_size(4)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("gpt2")  # byte-level BPE, like SmolLM2
    writer.add_token_list(["<|endoftext|>", "a", "b", "ab"])
    writer.add_token_merges(["a b"])
    writer.add_token_types([3, 1, 1, 1])  # 3: control (special)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    for name, value in tensors.items():
        writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_tiny_untied_gguf_round_trip(tmp_path):
    """A full synthetic Llama: every HF key filled, q/k un-permuted exactly, lm_head kept when
    the GGUF has an `output` tensor, and transformers' GGUF reader agrees on the same file."""
    src = _tiny_gguf(tmp_path / "tiny.gguf")
    out = gguf_import.convert(src, tmp_path / "tiny")
    ours = load_file(out / "model.safetensors")
    expected = _tiny_hf_weights()
    assert set(ours) == set(expected)
    for name, w in expected.items():
        np.testing.assert_array_equal(ours[name], w, err_msg=name)
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and config["num_key_value_heads"] == 1
    assert config["rms_norm_eps"] == 1e-5 and config["rope_parameters"]["rope_theta"] == 10000.0
    _, info = transformers.LlamaForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=src.name, dtype=torch.float32)
    for name, w in reference.state_dict().items():
        np.testing.assert_array_equal(ours[name], w.numpy(), err_msg=name)
    assert transformers.AutoTokenizer.from_pretrained(out)("ab<|endoftext|>").input_ids == [3, 0]


def test_crash_mid_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(gguf_import, "_write_tokenizer", boom)  # after the tensors are written
    out = tmp_path / "tiny"
    with pytest.raises(RuntimeError, match="disk full"):
        gguf_import.convert(_tiny_gguf(tmp_path / "tiny.gguf"), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.gguf"]  # no out, no temp dir


def test_nonempty_out_dir_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(WeightsError, match="already exists"):
        gguf_import.convert(_tiny_gguf(tmp_path / "tiny.gguf"), out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_module_import_needs_neither_torch_nor_transformers():
    code = "import sys, leeroo_jax.weights.gguf; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env())
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[2])}


def _assert_refused(src: pathlib.Path, out: pathlib.Path, *needles: str) -> None:
    with pytest.raises(WeightsError) as info:
        gguf_import.convert(src, out)
    message = str(info.value)
    assert "\n" not in message and all(n in message for n in needles), message
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.partial-*"))


def test_random_bytes_refused(tmp_path):
    src = tmp_path / "noise.gguf"
    src.write_bytes(np.random.default_rng(0).bytes(4096))
    _assert_refused(src, tmp_path / "out", "not a GGUF file")


def test_truncated_gguf_refused(tmp_path):
    good = _tiny_gguf(tmp_path / "good.gguf")
    src = tmp_path / "truncated.gguf"
    src.write_bytes(good.read_bytes()[:-64])  # header intact, tensor data cut short
    _assert_refused(src, tmp_path / "out", "truncated or corrupt")


def test_unsupported_architecture_refused(tmp_path):
    src = _tiny_gguf(tmp_path / "bert.gguf", "bert", {"token_embd.weight": np.ones((4, 8), np.float32)})
    _assert_refused(src, tmp_path / "out", "'bert' is not supported", "llama")


def test_unmapped_tensor_refused(tmp_path):
    tensors = {"token_embd.weight": np.ones((4, 8), np.float32), "rope_freqs.weight": np.ones(2, np.float32)}
    src = _tiny_gguf(tmp_path / "extra.gguf", "llama", tensors)
    _assert_refused(src, tmp_path / "out", "'rope_freqs.weight'", "_TENSOR_NAMES")


def test_cli_prints_one_line_error(tmp_path):
    src = tmp_path / "noise.gguf"
    src.write_bytes(b"not a gguf at all")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "leeroo_jax.weights.gguf", str(src), str(out)],
        capture_output=True, text=True, env=_env(),
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert not out.exists()
