"""Experts that answer chats: what a served request is sent to.

A backend answers a chat ([{"role", "content"}, ...]) with a `Completion`, or raises
`BackendError` when it cannot (down, timing out, refusing): the caller then tries the next
expert. Two kinds: `LiveChat` here (a Flax decoder of ours, greedy decoding with the KV cache,
many chats in one batch) and experts/remote.py (any OpenAI-compatible endpoint).

LiveChat compiles one program per (batch rows, prompt length) bucket: rows in `batch_sizes`,
prompts left-padded to a length in `lengths` (a longer prompt keeps its last tokens), and
`max_new_tokens` new tokens at most (a request asking fewer is cut after decoding).
"""

from __future__ import annotations

import dataclasses
from typing import AsyncIterator, Protocol, Sequence

import jax.numpy as jnp
from jax.sharding import Mesh

from leeroo_jax.data.pool import Expert
from leeroo_jax.errors import ConfigError
from leeroo_jax.experts import generate
from leeroo_jax.experts.live import check_decoder
from leeroo_jax.models.decoder import Decoder
from leeroo_jax.weights.loader import load

ROLES = ("system", "user", "assistant")


class BackendError(RuntimeError):
    """The expert could not answer (connection refused, timeout, an error status)."""


class BadMessages(ValueError):
    """A chat that is not a non-empty list of {role, content} with a user message."""


@dataclasses.dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"  # "stop" (EOS) | "length" (max_tokens reached)


class ChatBackend(Protocol):
    async def complete(self, messages: list[dict], max_tokens: int) -> Completion: ...

    def stream(self, messages: list[dict], max_tokens: int) -> AsyncIterator[str]: ...


def as_messages(query) -> list[dict]:
    """A chat from a string (one user message) or a list of {role, content}; BadMessages otherwise."""
    if isinstance(query, str):
        query = [{"role": "user", "content": query}]
    if not isinstance(query, (list, tuple)) or not query:
        raise BadMessages("messages must be a non-empty list of {role, content}")
    out = []
    for i, m in enumerate(query):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise BadMessages(f"messages[{i}] must be {{role: one of {', '.join(ROLES)}, content: a string}}")
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "user" and m["content"].strip() for m in out):
        raise BadMessages("messages hold no non-empty user message: nothing to answer")
    return out


class LiveChat:
    """A Flax decoder answering batches of chats (synchronous: the server runs it on a worker
    thread and batches concurrent requests into one call)."""

    def __init__(self, name: str, model: Decoder, tokenizer, mesh: Mesh | None = None, max_new_tokens: int = 64,
                 batch_sizes: Sequence[int] = (1, 2, 4, 8), lengths: Sequence[int] = (64, 128, 256, 512)):
        if getattr(tokenizer, "chat_template", None) is None:
            raise ConfigError(f"expert {name}: its tokenizer has no chat template; serve an instruction-tuned checkpoint")
        self.name, self.model, self.tokenizer, self.mesh = name, model, tokenizer, mesh
        self.max_new_tokens = max_new_tokens
        self.batch_sizes, self.lengths = tuple(sorted(batch_sizes)), tuple(sorted(lengths))
        self.eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @classmethod
    def load(cls, expert: Expert, mesh: Mesh | None = None, **kw) -> "LiveChat":
        loaded = load(check_decoder(expert), mesh, dtype=jnp.dtype(expert.dtype))
        if loaded.tokenizer is None:
            raise ConfigError(f"expert {expert.name}: {expert.checkpoint} ships no tokenizer; copy its tokenizer files next to the weights")
        return cls(expert.name, loaded.model, loaded.tokenizer, mesh, **kw)

    def reply(self, chats: Sequence[list[dict]], max_tokens: Sequence[int]) -> list[Completion]:
        """Greedy answers of chats, in batches of the largest bucket at most."""
        out: list[Completion] = []
        top = self.batch_sizes[-1]
        for s in range(0, len(chats), top):
            out += self._batch(chats[s:s + top], max_tokens[s:s + top])
        return out

    def _batch(self, chats, max_tokens) -> list[Completion]:
        prompts = [generate.chat_ids(self.tokenizer, m)[-self.lengths[-1]:] for m in chats]  # too long: keep the end
        b = next(x for x in self.batch_sizes if x >= len(prompts))
        t = next(x for x in self.lengths if x >= max(len(p) for p in prompts))
        rows = prompts + [prompts[-1]] * (b - len(prompts))
        new = generate.greedy_generate(self.model, rows, self.max_new_tokens, self.eos, self.mesh, pad_to=t,
                                       limit=max(int(m) for m in max_tokens))
        done = []
        for ids, limit, prompt in zip(new, max_tokens, prompts):
            limit = min(int(limit), self.max_new_tokens)
            stop = next((k for k, i in enumerate(ids) if i in self.eos), len(ids))  # EOS is kept by the generator
            kept = ids[:min(stop, limit)]
            reason = "stop" if stop < len(ids) and stop <= limit else "length"
            done.append(Completion(self.tokenizer.decode(kept, skip_special_tokens=True).strip(), len(prompt), len(kept),
                                   reason))
        return done

    def warmup(self) -> int:
        """Compile every (rows, length) program; returns how many."""
        for b in self.batch_sizes:
            for t in self.lengths:
                generate.greedy_generate(self.model, [[self.pad_id] * t] * b, self.max_new_tokens, self.eos, self.mesh,
                                         pad_to=t, limit=1)  # the program every limit runs, one step of it
        return len(self.batch_sizes) * len(self.lengths)


def chunks(text: str) -> list[str]:
    """A finished answer as stream deltas, word by word (whitespace kept, so they join back to it)."""
    parts, word = [], ""
    for ch in text:
        word += ch
        if ch.isspace():
            parts.append(word)
            word = ""
    return parts + [word] if word else parts
