"""Multiple-choice scoring by answer-letter log-likelihood (the lm-eval MMLU convention).

For a prompt ending in "Answer:", the model's next-token log-probabilities of " A" .. " D"
are its scores; the prediction is their argmax. One batched, jitted forward per length
bucket, logits only at each row's last real token (a [B, V] slice, not [B, T, V]).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from leeroo_jax.data.mmlu import LETTERS
from leeroo_jax.models import layers
from leeroo_jax.models.decoder import Decoder


def letter_token_ids(tokenizer, letters: str = LETTERS) -> np.ndarray:
    """Token id of " A", " B", ... (a single token each in Llama/Mistral/Qwen vocabularies)."""
    ids = []
    for letter in letters:
        toks = tokenizer.encode(" " + letter, add_special_tokens=False)
        ids.append(toks[-1])
    return np.asarray(ids, np.int32)


@functools.partial(jax.jit, static_argnums=0)
def _letter_logprobs(graphdef, state, tokens_bt, mask_bt, letter_ids):
    model: Decoder = nnx.merge(graphdef, state)
    out = model(tokens_bt, mask_bt, compute_logits=False)
    last = layers.last_token_pool(out.hidden, mask_bt)[:, None, :].astype(model.dtype)  # [B, 1, D]
    logp = jax.nn.log_softmax(model.logits(last)[:, 0], axis=-1)  # [B, V] f32
    return logp[:, letter_ids]


def letter_logprobs(model: Decoder, tokens_bt, mask_bt, letter_ids) -> jax.Array:
    """[B, len(letter_ids)] log-probabilities of each answer letter as the next token."""
    graphdef, state = nnx.split(model)
    return _letter_logprobs(graphdef, state, jnp.asarray(tokens_bt), jnp.asarray(mask_bt), jnp.asarray(letter_ids))
