"""Live experts: a Flax decoder that answers multiple-choice questions, batched on the mesh.

    expert = LiveExpert.load(pool_entry, mesh, train=train_questions)
    for ans in expert.answer(questions):  # one `Answers` per jitted batch, in order of completion
        ...

Recipes (`Expert.recipe`, data/pool.py):
  mmlu_0shot, mmlu_<k>shot  the lm-eval prompt (data/mmlu.py), scored by the next-token
                            log-probabilities of the option letters " A" .. " J" (mcq.py). The
                            k exemplars are TRAIN questions of the subject, fixed per subject,
                            so each distinct prefix runs once into a KV cache and every
                            question of the subject runs only its own tokens against it.
  chat                      the question as one user message through the tokenizer's chat
                            template, greedy generation with the KV cache until EOS or
                            `max_new_tokens`, the letter parsed from the reply (`parse_letter`);
                            a reply without a letter is answered -1 (graded wrong, counted).

Batches: rows sorted by token count and cut by `data.buckets.plan_batches` (one compiled
program per padded shape), padded with dummy rows to a multiple of the mesh's data axes and
split over them; the weights sit on the mesh by the logical rules (weights/loader.py). The
next batch is dispatched before the previous one is read back, so the host's work (parsing,
writing records) overlaps the device's.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Iterable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from leeroo_jax import sharding
from leeroo_jax.data.buckets import bucket_length, plan_batches
from leeroo_jax.data.mmlu import LETTERS, Question, few_shot_exemplars, prompt, prompt_prefix
from leeroo_jax.data.pool import Expert, chat_message, parse_recipe
from leeroo_jax.errors import ConfigError, DataError
from leeroo_jax.experts import generate, mcq
from leeroo_jax.models import hf
from leeroo_jax.models.decoder import Decoder
from leeroo_jax.weights import assets
from leeroo_jax.weights.loader import load, read_hf_config, resolve

N_LETTERS = len(LETTERS)  # 10: A..J


@dataclasses.dataclass
class Answers:
    """One batch's answers; row i answers questions[index[i]] of the `answer` call."""

    index: np.ndarray  # [n] int
    logp: np.ndarray  # [n, 10] next-token log-probability of " A" .. " J" (NaN for chat)
    probs: np.ndarray  # [n, 10] P(letter) renormalised over the question's options; NaN beyond them / for chat
    choice: np.ndarray  # [n] int option index; -1 = no letter in the reply (chat)
    in_tokens: np.ndarray  # [n] prompt tokens (a k-shot prompt counts its exemplars)
    out_tokens: np.ndarray  # [n] 1 for a scored letter; generated tokens for chat
    seconds: float  # wall time from the previous batch's end to this one's
    replies: list[str] | None = None  # chat: the decoded replies


def parse_letter(reply: str, n_options: int) -> int:
    """Option index named by a free-form reply, or -1. Tries, in order: "answer is (X)",
    a reply that starts with the letter ("B", "B.", "(B)"), then the first standalone letter."""
    valid = LETTERS[:n_options]
    for pattern in (r"answer(?: is|:)\s*\(?([A-J])\b", r"^\s*\(?([A-J])(?:[).:,\s]|$)", r"\b([A-J])\b"):
        m = re.search(pattern, reply, flags=re.IGNORECASE if pattern.startswith("answer") else 0)
        if m and m.group(1).upper() in valid:
            return valid.index(m.group(1).upper())
    return -1


def check_decoder(expert: Expert) -> str:
    """The expert's checkpoint directory, checked to be a causal LM before any weight is read."""
    path = resolve(assets.backbone_path(expert.checkpoint))
    cfg = hf.model_config(read_hf_config(path))
    if not isinstance(cfg, hf.DecoderConfig):
        raise ConfigError(f"expert {expert.name}: {expert.checkpoint} is a {cfg.model_type} encoder, not a decoder; "
                          "a live expert needs a causal LM checkpoint (Llama, Mistral, Qwen2)")
    return str(path)


class LiveExpert:
    """A loaded decoder and its recipe. bank: TRAIN questions by subject (pool.by_subject),
    the k-shot exemplars."""

    def __init__(self, expert: Expert, model: Decoder, tokenizer, mesh: Mesh, bank: Mapping[str, Sequence[Question]],
                 *, batch: int = 16, max_tokens: int = 2048, step: int = 8, prefix_step: int = 256,
                 max_new_tokens: int = 16):
        self.expert, self.model, self.tokenizer, self.mesh, self.bank = expert, model, tokenizer, mesh, bank
        self.kind, self.shots = parse_recipe(expert.recipe, expert.name)
        self.batch, self.max_tokens, self.step, self.prefix_step = batch, max_tokens, step, prefix_step
        self.max_new_tokens = max_new_tokens
        self.letter_ids = sharding.replicated(mcq.letter_token_ids(tokenizer), mesh)  # [10]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.row_multiple = mesh.shape["data"] * mesh.shape["fsdp"]  # batch rows split over these axes
        self._prefix_ids: dict[str, list[int]] = {}

    @classmethod
    def load(cls, expert: Expert, mesh: Mesh, bank: Mapping[str, Sequence[Question]], **kw) -> "LiveExpert":
        path = check_decoder(expert)
        loaded = load(path, mesh, dtype=jnp.dtype(expert.dtype))
        if loaded.tokenizer is None:
            raise ConfigError(f"expert {expert.name}: {path} ships no tokenizer; copy its tokenizer files next to the weights")
        return cls(expert, loaded.model, loaded.tokenizer, mesh, bank, **kw)

    # --- prompts ---------------------------------------------------------------------------

    def _exemplars(self, q: Question) -> list[Question]:
        return few_shot_exemplars(q, self.bank.get(q.subject, ()), self.shots) if self.shots else []

    def prompt_ids(self, questions: Sequence[Question]) -> list[list[int]]:
        """Token ids of each question's whole prompt: exactly what the model reads."""
        if self.kind == "chat":
            return [generate.chat_ids(self.tokenizer, [{"role": "user", "content": chat_message(q)}]) for q in questions]
        texts = [prompt(q, self._exemplars(q)) for q in questions]
        return [list(x) for x in self.tokenizer(texts)["input_ids"]]

    def _prefix_len(self, q: Question, ids: list[int]) -> int:
        """How many leading tokens of `ids` are q's exemplar prefix, tokenized the same alone.

        BPE can merge across the prefix/question boundary, so the shared part is the common
        prefix of the two tokenizations less one token; the model still reads exactly `ids`."""
        text = prompt_prefix(q, self._exemplars(q))
        if text not in self._prefix_ids:  # one tokenization per distinct prefix (a few per subject)
            self._prefix_ids[text] = self.tokenizer(text)["input_ids"]
        alone = self._prefix_ids[text]
        n = 0
        while n < min(len(alone), len(ids)) and alone[n] == ids[n]:
            n += 1
        return max(0, min(n, len(alone) - 1))

    # --- answering -------------------------------------------------------------------------

    def answer(self, questions: Sequence[Question], ids: list[list[int]] | None = None) -> Iterator[Answers]:
        """Answers for every question, one batch at a time (ids: `prompt_ids(questions)`)."""
        for q in questions:
            if not 2 <= len(q.choices) <= N_LETTERS:
                raise DataError(f"question {q.id} has {len(q.choices)} options; letter scoring handles 2 to {N_LETTERS}")
        if not questions:
            return
        ids = self.prompt_ids(questions) if ids is None else ids
        with jax.set_mesh(self.mesh):
            if self.kind == "chat":
                yield from self._chat(questions, ids)
            else:
                work = self._cached_batches(questions, ids) if self.shots else self._batches(ids)
                yield from self._pipelined(questions, ids, work)

    def _padded(self, seqs: Sequence[Sequence[int]], b: int, t: int) -> tuple[np.ndarray, np.ndarray]:
        """[b', t] tokens and mask, right-padded; b' = b rounded up to the data axes, dummy
        rows (copies of the last real one) fill it."""
        b = -(-max(b, len(seqs)) // self.row_multiple) * self.row_multiple
        x = np.full((b, t), self.pad_id, np.int32)
        m = np.zeros((b, t), np.int32)
        for r in range(b):
            s = seqs[min(r, len(seqs) - 1)]
            x[r, :len(s)], m[r, :len(s)] = s, 1
        return x, m

    def _batches(self, ids) -> Iterable[tuple[list[int], jax.Array]]:
        for b, t, rows in plan_batches([len(s) for s in ids], self.batch, self.step, self.max_tokens):
            x, m = sharding.shard_global(self._padded([ids[i] for i in rows], b, t), self.mesh)
            yield rows, mcq.letter_logprobs(self.model, x, m, self.letter_ids)  # dispatched, not awaited

    def _cached_batches(self, questions, ids) -> Iterable[tuple[list[int], jax.Array]]:
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, q in enumerate(questions):
            groups.setdefault(tuple(ids[i][: self._prefix_len(q, ids[i])]), []).append(i)
        for prefix, members in groups.items():
            cache, n = mcq.prefill(self.model, prefix, bucket_length(len(prefix), self.prefix_step), self.pad_id,
                                   self.mesh)
            suffix = [ids[i][n:] for i in members]
            for b, t, rows in plan_batches([len(s) for s in suffix], self.batch, self.step, self.max_tokens):
                x, m = sharding.shard_global(self._padded([suffix[r] for r in rows], b, t), self.mesh)
                yield [members[r] for r in rows], mcq.letter_logprobs_cached(self.model, cache, n, x, m, self.letter_ids)

    def _pipelined(self, questions, ids, work) -> Iterator[Answers]:
        """Reads batch i back only after batch i + 1 is dispatched, so host and device overlap.

        A batch's seconds run from the previous batch's hand-over to its own, the caller's time
        in between included: the device computes during it, so the seconds sum to the wall time."""
        pending, last = None, time.perf_counter()
        for item in work:
            if pending is not None:
                ans = self._letters(questions, ids, *pending, 0.0)
                now = time.perf_counter()
                ans.seconds, last = now - last, now
                yield ans
            pending = item
        if pending is not None:
            ans = self._letters(questions, ids, *pending, 0.0)
            ans.seconds = time.perf_counter() - last
            yield ans

    def _letters(self, questions, ids, rows, logp, seconds) -> Answers:
        logp = sharding.gather(logp)[: len(rows)]  # [n, 10]; blocks until the batch is done
        n_opt = np.array([len(questions[i].choices) for i in rows])
        valid = np.arange(N_LETTERS)[None, :] < n_opt[:, None]  # only the question's own letters
        z = np.where(valid, logp, -np.inf)
        p = np.exp(z - z.max(1, keepdims=True))
        probs = np.where(valid, p / p.sum(1, keepdims=True), np.nan).astype(np.float32)
        in_tokens = np.array([len(ids[i]) for i in rows], np.int32)
        return Answers(np.asarray(rows), logp, probs, z.argmax(1), in_tokens, np.ones(len(rows), np.int32), seconds)

    def _generate(self, ids: list[list[int]], max_new_tokens: int) -> Iterator[tuple[list[int], list[list[int]], float]]:
        """(rows, generated token ids per row, seconds) per length-bucketed batch, greedy."""
        eos = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
        for b, _, rows in plan_batches([len(s) for s in ids], self.batch, self.step, self.max_tokens):
            t0 = time.perf_counter()
            prompts = [ids[i] for i in rows]
            prompts += [prompts[-1]] * (-(-max(b, len(rows)) // self.row_multiple) * self.row_multiple - len(prompts))
            with jax.set_mesh(self.mesh):
                outs = generate.greedy_generate(self.model, prompts, max_new_tokens, eos, self.mesh)[: len(rows)]
            yield rows, outs, time.perf_counter() - t0

    def continue_texts(self, texts: Sequence[str], max_new_tokens: int) -> list[str]:
        """Greedy continuations of raw text prompts (no chat template), decoded."""
        ids = [list(x) for x in self.tokenizer(list(texts))["input_ids"]]
        out = [""] * len(texts)
        for rows, outs, _ in self._generate(ids, max_new_tokens):
            for i, o in zip(rows, outs):
                out[i] = self.tokenizer.decode(o, skip_special_tokens=True)
        return out

    def _chat(self, questions, ids) -> Iterator[Answers]:
        for rows, outs, seconds in self._generate(ids, self.max_new_tokens):
            replies = [self.tokenizer.decode(o, skip_special_tokens=True).strip() for o in outs]
            choice = np.array([parse_letter(r, len(questions[i].choices)) for r, i in zip(replies, rows)])
            none = np.full((len(rows), N_LETTERS), np.nan, np.float32)
            yield Answers(np.asarray(rows), none, none, choice, np.array([len(ids[i]) for i in rows], np.int32),
                          np.array([len(o) for o in outs], np.int32), seconds, replies)
