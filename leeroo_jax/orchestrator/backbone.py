"""A pretrained backbone as a text -> vector function, batched by length bucket.

Texts are sorted by token count and cut into fixed-size batches, each padded to the
smallest bucket length that holds it, so a whole job compiles one program per bucket
(a handful) and wastes little compute on padding. Works for encoders (BERT/MiniLM, right
padding) and decoders (Llama/Qwen2, left padding so the last token sits at the end).
"""

from __future__ import annotations

import functools
import pathlib
import time
from typing import Callable, Sequence

import jax
import numpy as np
from flax import nnx

from leeroo_jax import distributed
from leeroo_jax.data.buckets import bucket_length
from leeroo_jax.data.embed_cache import EmbeddingCache
from leeroo_jax.errors import WeightsError
from leeroo_jax.models import layers
from leeroo_jax.models.decoder import Decoder
from leeroo_jax.weights import assets
from leeroo_jax.weights.digest import content_digest
from leeroo_jax.weights.loader import Loaded, load, read_hf_config, resolve


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _pooled(graphdef, state, tokens_bt, mask_bt, pooling: str, normalize: bool) -> jax.Array:
    model = nnx.merge(graphdef, state)
    if isinstance(model, Decoder):
        hidden = model(tokens_bt, mask_bt, compute_logits=False).hidden
    else:
        hidden = model(tokens_bt, mask_bt).hidden
    vec = layers.POOLERS[pooling](hidden, mask_bt)
    return layers.l2_normalize(vec) if normalize else vec


class TokenTable:
    """Every question tokenized once; `pack(rows)` -> tokens, attn [n, T] with T the smallest
    multiple of `bucket_step` that holds the longest row (a few compiled programs per run)."""

    def __init__(self, seqs: Sequence[Sequence[int]], pad_id: int, left_pad: bool, max_length: int,
                 bucket_step: int = 32):
        self.seqs = [list(s[:max_length]) for s in seqs]
        self.lengths = np.array([len(s) for s in self.seqs])
        self.pad_id, self.left_pad, self.max_length, self.bucket_step = pad_id, left_pad, max_length, bucket_step

    def sort_by_length(self, rows: np.ndarray) -> np.ndarray:
        return rows[np.argsort(self.lengths[rows], kind="stable")]

    def length(self, rows: np.ndarray) -> int:
        """T: the bucketed length a batch of these rows is padded to."""
        return bucket_length(int(self.lengths[rows].max()), self.bucket_step, self.max_length)

    def pack(self, rows: np.ndarray, pad_rows_to: int = 1, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """[n', T] int32 tokens and attention mask; n' = len(rows) rounded up to `pad_rows_to`
        (all-padding rows at the end, so a batch splits evenly over the data axes). length: T
        (default: `length(rows)`); a process packing its share of a global batch passes the
        global batch's, so every process's part has one shape."""
        t = self.length(rows) if length is None else length
        n = -(-len(rows) // pad_rows_to) * pad_rows_to
        tokens = np.full((n, t), self.pad_id, np.int32)
        attn = np.zeros((n, t), np.int32)
        for i, r in enumerate(rows):
            s = self.seqs[r]
            sl = slice(t - len(s), t) if self.left_pad else slice(0, len(s))
            tokens[i, sl], attn[i, sl] = s, 1
        return tokens, attn


class Backbone:
    """Pooled vectors [N, D] (f32) for texts; `encode` is the whole batched pipeline."""

    def __init__(self, loaded: Loaded, pooling: str = "mean", max_length: int = 256, batch_size: int = 16,
                 normalize: bool = False, bucket_step: int = 16):
        if loaded.tokenizer is None:
            raise WeightsError(f"{loaded.path} has no tokenizer files; copy the checkpoint's tokenizer "
                               "(tokenizer.json or vocab.txt and tokenizer_config.json) next to its weights")
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
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        vocab = self.loaded.config.vocab_size
        top = max((max(s) for s in ids if s), default=-1)
        if top >= vocab:  # an embedding lookup past the table gives NaN / garbage, silently
            raise WeightsError(f"{self.loaded.path}: the tokenizer produces id {top} but the model's vocabulary has "
                               f"{vocab} rows; pair the checkpoint with its own tokenizer files")
        return ids

    def token_table(self, texts: Sequence[str], bucket_step: int | None = None) -> TokenTable:
        return TokenTable(self.tokenize(texts), self.pad_id, self.decoder, self.max_length,
                          bucket_step or self.bucket_step)

    def encode(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        table = self.token_table(texts)
        order = table.sort_by_length(np.arange(len(texts)))
        out = np.empty((len(texts), self.dim), np.float32)
        pending = None  # (indices, device array): overlap host packing with device compute
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            tokens, mask = table.pack(idx, self.batch_size)  # a fixed batch: one program per bucket
            vec = _pooled(self._graphdef, self._state, tokens, mask, self.pooling, self.normalize)
            if pending is not None:
                out[pending[0]] = np.asarray(pending[1])[: len(pending[0])]
            pending = (idx, vec)
            if progress:
                progress(len(idx))
        if pending is not None:
            out[pending[0]] = np.asarray(pending[1])[: len(pending[0])]
        return out


def _nothing_missing(texts: Sequence[str]) -> np.ndarray:
    raise RuntimeError(f"{len(texts)} texts are missing from the embedding cache after process 0 wrote it; "
                       "another job wrote the same cache meanwhile")


class Embedder:
    """A frozen backbone as a cached text -> vector function (what `data.dataset.load` takes).

    Vectors [N, D] f32 are cached on disk under the backbone's *content* digest, pooling and
    max length, so a different checkpoint in a same-named folder never reads stale entries.
    The backbone itself is loaded only when some text is missing from the cache.

    As N processes, every process calls it with the same texts (`coordinated`): process 0's
    view of the cache decides what is missing, each process embeds its share of that on its
    own first device, the vectors are all-gathered, process 0 appends them to the cache, and
    the others reopen it after a barrier. Nobody else writes the cache meanwhile.
    """

    coordinated = True  # data.dataset.load calls it in every process rather than in process 0 first

    def __init__(self, path: str, pooling: str = "mean", max_length: int = 256, batch_size: int = 16,
                 cache_dir: str | None = None):
        self.path = resolve(assets.backbone_path(path))
        self.pooling, self.max_length, self.batch_size = pooling, max_length, batch_size
        root = pathlib.Path(cache_dir) if cache_dir else assets.cache_root()
        digest = content_digest(self.path, memo_dir=root)
        self.key = f"{self.path.name}|{digest[:16]}|{pooling}|{max_length}"
        self.dim = int(read_hf_config(self.path).hidden_size)
        self.cache = EmbeddingCache(root / "embeddings", self.key, self.dim)

    @classmethod
    def from_config(cls, bb_cfg) -> "Embedder":
        return cls(bb_cfg.path, bb_cfg.pooling, bb_cfg.max_length, bb_cfg.batch_size)

    def _compute(self, texts: Sequence[str]) -> np.ndarray:
        t0 = time.perf_counter()
        vecs = Backbone(load(self.path), self.pooling, self.max_length, self.batch_size).encode(texts)
        print(f"embedded {len(texts)} texts with {self.path.name} in {time.perf_counter() - t0:.0f}s")
        return vecs

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if jax.process_count() == 1:
            return self.cache.get(texts, self._compute)
        first = np.zeros(len(texts), bool)
        first[self.cache.missing(texts)] = True
        todo = np.flatnonzero(distributed.broadcast_from_main(first))  # in `missing` order, as `get` asks
        if len(todo):
            share = todo[distributed.process_share(len(todo))]
            local = self._compute([texts[i] for i in share]) if len(share) else np.zeros((0, self.dim), np.float32)
            vecs = distributed.allgather_shares(np.asarray(local, np.float32), len(todo))
            if distributed.is_main_process():
                self.cache.get(texts, lambda _: vecs)
            distributed.barrier("embed_cache")
            if not distributed.is_main_process():  # the manifest and the array's shape are read at open
                self.cache = EmbeddingCache(self.cache.dir.parent, self.key, self.dim)
        return self.cache.get(texts, _nothing_missing)
