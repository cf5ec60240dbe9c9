"""Bucketed backbone encoding and the embedding cache."""

import numpy as np
import pytest

import jax.numpy as jnp

from leeroo_jax.data.embed_cache import EmbeddingCache
from leeroo_jax.data.mmlu import load_questions
from leeroo_jax.models import layers
from leeroo_jax.orchestrator.backbone import Backbone
from leeroo_jax.weights.loader import load


@pytest.fixture(scope="module")
def minilm(minilm_path):
    return load(minilm_path)


def test_bucketed_encode_equals_one_text_at_a_time(minilm):
    texts = [q.question for q in load_questions()[::700]][:20]  # lengths from a few to 200+ tokens
    got = Backbone(minilm, "mean", max_length=256, batch_size=8).encode(texts)
    for i in (0, 7, 19):
        enc = minilm.tokenizer([texts[i]], truncation=True, max_length=256, return_tensors="np")
        out = minilm.model(jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"]))
        want = np.asarray(layers.mean_pool(out.hidden, jnp.asarray(enc["attention_mask"])))[0]
        np.testing.assert_allclose(got[i], want, atol=2e-5)


def test_cache_computes_only_missing_texts(tmp_path):
    calls = []

    def compute(texts):
        calls.append(list(texts))
        return np.array([[len(t), t.count("a")] for t in texts], np.float32)

    cache = EmbeddingCache(tmp_path, "fake|mean|8", 2)
    a = cache.get(["aa", "b", "aa"], compute)
    np.testing.assert_array_equal(a, [[2, 2], [1, 0], [2, 2]])
    reopened = EmbeddingCache(tmp_path, "fake|mean|8", 2)
    b = reopened.get(["b", "cab"], compute)
    np.testing.assert_array_equal(b, [[1, 0], [3, 1]])
    assert calls == [["aa", "b"], ["cab"]]  # each text computed once, across processes
    other = EmbeddingCache(tmp_path, "other-backbone", 2)  # a different key never shares rows
    other.get(["b"], compute)
    assert calls[-1] == ["b"]
