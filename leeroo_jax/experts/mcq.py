"""Multiple-choice scoring by answer-letter log-likelihood (the lm-eval MMLU convention).

For a prompt ending in "Answer:", the model's next-token log-probabilities of " A" .. " J"
are its scores; the prediction is their argmax over the question's own options. One
batched, jitted forward per length bucket, logits only at each row's last real token (a
[B, V] slice, not [B, T, V]).

k-shot prompts share their long exemplar prefix within a subject (data/mmlu.py fixes the
exemplars per subject), so `prefill` runs the prefix once into a KV cache and
`letter_logprobs_cached` runs only each question's own tokens against it: the work per
question is that of a zero-shot prompt plus attention over the prefix, not k + 1 prompts.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from leeroo_jax import sharding
from leeroo_jax.data.mmlu import LETTERS
from leeroo_jax.models import layers
from leeroo_jax.models.decoder import Decoder, KVCache


def letter_token_ids(tokenizer, letters: str = LETTERS) -> np.ndarray:
    """Token id of " A", " B", ... (a single token each in Llama/Mistral/Qwen vocabularies)."""
    ids = []
    for letter in letters:
        toks = tokenizer.encode(" " + letter, add_special_tokens=False)
        ids.append(toks[-1])
    return np.asarray(ids, np.int32)


def _letters_at_last(model: Decoder, hidden_btd, mask_bt, letter_ids):
    last = layers.last_token_pool(hidden_btd, mask_bt)[:, None, :].astype(model.dtype)  # [B, 1, D]
    logp = jax.nn.log_softmax(model.logits(last)[:, 0], axis=-1)  # [B, V] f32
    return logp[:, letter_ids]


@functools.partial(jax.jit, static_argnums=0)
def _letter_logprobs(graphdef, state, tokens_bt, mask_bt, letter_ids):
    model: Decoder = nnx.merge(graphdef, state)
    out = model(tokens_bt, mask_bt, compute_logits=False)
    return _letters_at_last(model, out.hidden, mask_bt, letter_ids)


def letter_logprobs(model: Decoder, tokens_bt, mask_bt, letter_ids) -> jax.Array:
    """[B, len(letter_ids)] log-probabilities of each answer letter as the next token."""
    graphdef, state = nnx.split(model)
    return _letter_logprobs(graphdef, state, jnp.asarray(tokens_bt), jnp.asarray(mask_bt), jnp.asarray(letter_ids))


@functools.partial(jax.jit, static_argnums=0)
def _prefill(graphdef, state, tokens_1p, mask_1p) -> KVCache:
    model: Decoder = nnx.merge(graphdef, state)
    cache = KVCache.zeros(model.cfg, 1, tokens_1p.shape[1], model.dtype)
    return model(tokens_1p, mask_1p, cache=cache, compute_logits=False).cache


def prefill(model: Decoder, prefix_ids, pad_to: int, pad_id: int = 0, mesh=None) -> tuple[KVCache, int]:
    """The KV cache [L, 1, pad_to, K, d] of one right-padded prefix, and its real length
    (mesh: the model's, on which the one-row prompt is replicated in every process)."""
    n = len(prefix_ids)
    tokens = np.full((1, pad_to), pad_id, np.int32)
    mask = np.zeros((1, pad_to), np.int32)
    tokens[0, :n], mask[0, :n] = prefix_ids, 1
    graphdef, state = nnx.split(model)
    if mesh is not None:
        tokens, mask = sharding.replicated((tokens, mask), mesh)
    return _prefill(graphdef, state, jnp.asarray(tokens), jnp.asarray(mask)), n


@functools.partial(jax.jit, static_argnums=0)
def _letter_logprobs_cached(graphdef, state, prefix: KVCache, n_prefix, tokens_bt, mask_bt, letter_ids):
    model: Decoder = nnx.merge(graphdef, state)
    b, t = tokens_bt.shape
    # Broadcast the one prefix to the batch and append t empty slots for the suffix; the
    # prefix's padding slots stay invalid, so only its n_prefix real tokens are attended to.
    grow = lambda x: jnp.concatenate(  # noqa: E731  [L, 1, P, K, d] -> [L, B, P + t, K, d]
        [jnp.broadcast_to(x, (x.shape[0], b) + x.shape[2:]), jnp.zeros((x.shape[0], b, t) + x.shape[3:], x.dtype)], 2)
    valid = jnp.concatenate([jnp.broadcast_to(prefix.valid, (b, prefix.valid.shape[1])), jnp.zeros((b, t), bool)], 1)
    cache = KVCache(grow(prefix.k), grow(prefix.v), valid, jnp.int32(prefix.valid.shape[1]))
    positions = n_prefix + jnp.maximum(jnp.cumsum(mask_bt, axis=1) - 1, 0)  # RoPE continues the prefix's
    out = model(tokens_bt, mask_bt, positions, cache, compute_logits=False)
    return _letters_at_last(model, out.hidden, mask_bt, letter_ids)


def letter_logprobs_cached(model: Decoder, prefix: KVCache, n_prefix: int, tokens_bt, mask_bt, letter_ids) -> jax.Array:
    """Like `letter_logprobs` for prompts prefix + row, rows right-padded, the prefix in `prefix`."""
    graphdef, state = nnx.split(model)
    return _letter_logprobs_cached(graphdef, state, prefix, jnp.int32(n_prefix), jnp.asarray(tokens_bt),
                                   jnp.asarray(mask_bt), jnp.asarray(letter_ids))
