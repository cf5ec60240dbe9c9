"""Greedy generation with a fixed-size KV cache, one compiled program per shape.

The prompt batch is left-padded so every row's next token lands in the same cache slot;
prefill writes the prompt in one pass, then a `lax.while_loop` appends one token per step
until every row has produced EOS or `max_new_tokens` is reached.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from leeroo_jax import sharding
from leeroo_jax.models.decoder import Decoder, KVCache


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _generate(graphdef, state, tokens_bt, mask_bt, max_new_tokens: int, eos_ids: tuple[int, ...], limit):
    """limit (traced, <= max_new_tokens): the steps this call may take; the buffers are sized by
    the static max_new_tokens, so a batch asking fewer tokens stops early without a recompile."""
    model: Decoder = nnx.merge(graphdef, state)
    b, t = tokens_bt.shape
    cache = KVCache.zeros(model.cfg, b, t + max_new_tokens, model.dtype)
    positions = jnp.maximum(jnp.cumsum(mask_bt, axis=1) - 1, 0)
    out = model(tokens_bt, mask_bt, positions, cache)
    next_tok = jnp.argmax(out.logits[:, -1], axis=-1).astype(jnp.int32)
    next_pos = positions[:, -1] + 1
    eos = jnp.asarray(eos_ids or (-1,), jnp.int32)

    def cond(carry):
        step, _, _, _, done, _ = carry
        return (step < jnp.minimum(limit, max_new_tokens)) & ~jnp.all(done)

    def body(carry):
        step, tok, pos, cache, done, generated = carry
        tok = jnp.where(done, 0, tok)
        generated = generated.at[:, step].set(jnp.where(done, -1, tok))
        done = done | jnp.isin(tok, eos)
        out = model(tok[:, None], jnp.ones((b, 1), bool), pos[:, None], cache)  # finished rows run on, ignored
        new_tok = jnp.argmax(out.logits[:, -1], axis=-1).astype(jnp.int32)
        return step + 1, new_tok, pos + 1, out.cache, done, generated

    generated = jnp.full((b, max_new_tokens), -1, jnp.int32)
    carry = (jnp.int32(0), next_tok, next_pos, out.cache, jnp.zeros((b,), bool), generated)
    return jax.lax.while_loop(cond, body, carry)[-1]


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int = 0, multiple: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Token lists -> (tokens [B, T], mask [B, T]) left-padded to a multiple of `multiple`."""
    t = max(len(s) for s in sequences)
    t = -(-t // multiple) * multiple
    tokens = np.full((len(sequences), t), pad_id, np.int32)
    mask = np.zeros((len(sequences), t), np.int32)
    for i, s in enumerate(sequences):
        if len(s):
            tokens[i, t - len(s):] = s
            mask[i, t - len(s):] = 1
    return tokens, mask


def greedy_generate(
    model: Decoder, prompts: Sequence[Sequence[int]], max_new_tokens: int, eos_ids: Sequence[int] = (), mesh=None,
    pad_to: int = 8, limit: int | None = None,
) -> list[list[int]]:
    """Greedy continuation of each prompt (token ids); stops a row at its first EOS (kept).
    mesh: the model's; the prompt rows split over its data axes (every process passes the same
    prompts, feeds its rows, and gets every row back). pad_to: prompts are left-padded to a
    multiple of it (a server passes its length bucket: one compiled program per bucket).
    limit: at most this many new tokens this call (default max_new_tokens), same program."""
    tokens, mask = left_pad(prompts, multiple=pad_to)
    if mesh is not None:
        tokens, mask = sharding.shard_global((tokens, mask), mesh)
    graphdef, state = nnx.split(model)
    limit = max_new_tokens if limit is None else min(int(limit), max_new_tokens)
    out = sharding.gather(_generate(graphdef, state, jnp.asarray(tokens), jnp.asarray(mask), max_new_tokens,
                                    tuple(eos_ids), jnp.int32(limit)))
    return [[int(x) for x in row if x >= 0] for row in out]


def chat_ids(tokenizer, messages: Sequence[dict]) -> list[int]:
    """Token ids of a chat through the tokenizer's chat template, ready for the assistant's turn
    (transformers returns a list, or an encoding with input_ids, by tokenizer)."""
    ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def chat_generate(model: Decoder, tokenizer, messages: Sequence[str], max_new_tokens: int = 32) -> list[str]:
    """Greedy replies to single-turn user messages, through the tokenizer's chat template."""
    prompts = [chat_ids(tokenizer, [{"role": "user", "content": m}]) for m in messages]
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    outs = greedy_generate(model, prompts, max_new_tokens, eos)
    return [tokenizer.decode(o, skip_special_tokens=True).strip() for o in outs]
