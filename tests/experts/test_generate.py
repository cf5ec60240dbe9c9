"""KV-cache generation equals transformers' greedy generate on a tiny random Llama."""

import numpy as np
import torch
import transformers

import jax.numpy as jnp

from leeroo_jax.experts.generate import greedy_generate, left_pad
from leeroo_jax.models.decoder import KVCache
from leeroo_jax.weights.loader import load


def _tiny(tmp_path):
    cfg = transformers.Qwen2Config(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   tie_word_embeddings=False)
    torch.manual_seed(1)
    model = transformers.Qwen2ForCausalLM(cfg).eval()
    model.save_pretrained(tmp_path)
    return model, load(tmp_path)


def test_greedy_generate_matches_transformers_with_ragged_prompts(tmp_path):
    torch_model, ours = _tiny(tmp_path)
    prompts = [[3, 4, 5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15]]  # left padding differs per row
    got = greedy_generate(ours.model, prompts, max_new_tokens=8)
    for prompt, row in zip(prompts, got):
        want = torch_model.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False,
                                    pad_token_id=0)[0, len(prompt):].tolist()
        assert row == want
    # a server's call: prompts left-padded to its length bucket, and fewer steps than the buffers
    # hold (limit: same program); the tokens are transformers' first 3
    short = greedy_generate(ours.model, prompts, max_new_tokens=8, pad_to=16, limit=3)
    assert short == [row[:3] for row in got]


def test_cached_decoding_equals_full_forward(tmp_path):
    """Prefill + one-token steps through the cache give the logits of one full pass."""
    _, ours = _tiny(tmp_path)
    tokens, mask = left_pad([[3, 4, 5, 6, 7, 8, 9, 1, 2], [10, 11, 12, 2, 5]], multiple=1)
    full = np.asarray(ours.model(jnp.asarray(tokens), jnp.asarray(mask)).logits)
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    cache = KVCache.zeros(ours.config, 2, tokens.shape[1] + 2)
    out = ours.model(jnp.asarray(tokens[:, :6]), jnp.asarray(mask[:, :6]), jnp.asarray(positions[:, :6]), cache)
    steps = [np.asarray(out.logits)]
    cache = out.cache
    for t in range(6, tokens.shape[1]):
        out = ours.model(jnp.asarray(tokens[:, t:t + 1]), jnp.asarray(mask[:, t:t + 1]),
                         jnp.asarray(positions[:, t:t + 1]), cache)
        cache = out.cache
        steps.append(np.asarray(out.logits))
    stepped = np.concatenate(steps, axis=1)
    valid = mask.astype(bool)
    np.testing.assert_allclose(stepped[valid], full[valid], rtol=1e-5, atol=1e-5)
    assert int(cache.index) == tokens.shape[1]
