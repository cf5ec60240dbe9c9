"""A pretrained backbone as a text -> vector function, batched by length bucket.

Texts are sorted by token count and cut into fixed-size batches, each padded to the
smallest bucket length that holds it, so a whole job compiles one program per bucket
(a handful) and wastes little compute on padding. Works for encoders (BERT/MiniLM, right
padding) and decoders (Llama/Qwen2, left padding so the last token sits at the end).
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from leeroo_jax.models import layers
from leeroo_jax.models.decoder import Decoder
from leeroo_jax.weights.loader import Loaded



@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _pooled(graphdef, state, tokens_bt, mask_bt, pooling: str, normalize: bool) -> jax.Array:
    model = nnx.merge(graphdef, state)
    if isinstance(model, Decoder):
        hidden = model(tokens_bt, mask_bt, compute_logits=False).hidden
    else:
        hidden = model(tokens_bt, mask_bt).hidden
    vec = layers.POOLERS[pooling](hidden, mask_bt)
    return layers.l2_normalize(vec) if normalize else vec


def bucket_for(n: int, step: int, max_length: int) -> int:
    """n rounded up to a multiple of `step`, at most max_length: sorted batches then pad only
    a few tokens a row, for one compiled program per multiple (cached on disk across runs)."""
    return min(-(-n // step) * step, max_length)


class Backbone:
    """Pooled vectors [N, D] (f32) for texts; `encode` is the whole batched pipeline."""

    def __init__(self, loaded: Loaded, pooling: str = "mean", max_length: int = 256, batch_size: int = 16,
                 normalize: bool = False, bucket_step: int = 16):
        if loaded.tokenizer is None:
            raise ValueError(f"{loaded.path} has no tokenizer; a backbone needs one")
        self.loaded, self.pooling, self.max_length = loaded, pooling, max_length
        self.batch_size, self.normalize, self.bucket_step = batch_size, normalize, bucket_step
        self.tokenizer = loaded.tokenizer
        self.decoder = isinstance(loaded.model, Decoder)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._graphdef, self._state = nnx.split(loaded.model)

    @property
    def dim(self) -> int:
        return self.loaded.config.hidden_size

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]

    def _pack(self, seqs: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """[batch_size, bucket] tokens and mask; rows past len(seqs) are all padding."""
        t = bucket_for(max(len(s) for s in seqs), self.bucket_step, self.max_length)
        tokens = np.full((self.batch_size, t), self.pad_id, np.int32)
        mask = np.zeros((self.batch_size, t), np.int32)
        for i, s in enumerate(seqs):
            s = s[:t]
            if self.decoder:  # left padding: the last real token is the last column
                tokens[i, t - len(s):], mask[i, t - len(s):] = s, 1
            else:
                tokens[i, :len(s)], mask[i, :len(s)] = s, 1
        return tokens, mask

    def encode(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        seqs = self.tokenize(texts)
        order = np.argsort([len(s) for s in seqs], kind="stable")
        out = np.empty((len(texts), self.dim), np.float32)
        pending = None  # (indices, device array): overlap host packing with device compute
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            tokens, mask = self._pack([seqs[i] for i in idx])
            vec = _pooled(self._graphdef, self._state, tokens, mask, self.pooling, self.normalize)
            if pending is not None:
                out[pending[0]] = np.asarray(pending[1])[: len(pending[0])]
            pending = (idx, vec)
            if progress:
                progress(len(idx))
        if pending is not None:
            out[pending[0]] = np.asarray(pending[1])[: len(pending[0])]
        return out
