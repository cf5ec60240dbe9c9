"""The expert pool: names, list prices, and the per-query cost matrix.

The pool is declared in the config (configs/base.py), not here. An expert's cost for a
query is its price times the query's tokens:

    cost[q, e] = (in_tokens(q) * in_price[e] + out_tokens[e] * out_price[e]) / 1e6   (USD)

with in_tokens = ceil(len(text) / 4) by default, text = the question followed by its options
as "\\nA. " + choice0 + "\\nB. " + ..., and 1 output token for a multiple-choice answer. A
real tokenizer can replace the 4-characters rule per expert (`tokenizer=<HF dir>`).

An expert's outcomes come from somewhere: `backend="recorded"` experts are known only by the
graded answers in the record store (imported tables, self-play reveals); `backend="flax"`
experts are models we run (experts/live.py): a checkpoint, a prompt recipe and a dtype. A
live expert's input is its recipe's prompt (a k-shot prompt carries its k exemplars), so its
cost counts that prompt, not just the query text.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np

from leeroo_jax.data import mmlu, splits
from leeroo_jax.data.mmlu import LETTERS, Question
from leeroo_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Expert:
    name: str
    input_price: float  # USD per 1M input tokens
    output_price: float  # USD per 1M output tokens
    tokenizer: str = ""  # HF dir whose tokenizer counts input tokens; "" = ceil(chars / 4)
    output_tokens: int = 1  # a multiple-choice answer is one letter
    backend: str = "recorded"  # "recorded" (outcomes from the record store) | "flax" (a model we run)
    checkpoint: str = ""  # flax: an HF directory, a hub id, or "smollm2" (the fetched real weights)
    recipe: str = ""  # flax: "mmlu_0shot", "mmlu_<k>shot" (letter log-likelihood) or "chat" (generate, parse)
    dtype: str = "float32"  # flax: compute dtype, float32 | bfloat16
    # Serving (serving/backends.py): an OpenAI-compatible endpoint that answers as this expert
    # (vLLM, Ollama, a cloud API), the environment variable holding its key, and the model name
    # it knows the expert by (default: name). Without one, a flax expert is run here and a
    # recorded expert cannot answer.
    endpoint: str = ""
    api_key_env: str = ""
    endpoint_model: str = ""

    def __post_init__(self):
        if not self.name:
            raise ConfigError("pool: an expert has no name; give every expert a unique name")
        if not (self.input_price >= 0 and self.output_price >= 0):
            raise ConfigError(f"pool: expert {self.name} has a negative or NaN price; prices are USD per 1M tokens")
        if self.backend not in BACKENDS:
            raise ConfigError(f"pool: expert {self.name} has backend {self.backend!r}; use one of {', '.join(BACKENDS)}")
        if self.endpoint and not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"pool: expert {self.name} has endpoint {self.endpoint!r}; give its base URL, "
                              "e.g. http://localhost:8000/v1")
        if self.live:
            if not self.checkpoint:
                raise ConfigError(f"pool: live expert {self.name} names no checkpoint; set checkpoint to an HF "
                                  "directory, a hub id or 'smollm2'")
            parse_recipe(self.recipe, self.name)
            if self.dtype not in ("float32", "bfloat16"):
                raise ConfigError(f"pool: expert {self.name} has dtype {self.dtype!r}; use float32 or bfloat16")
        elif self.checkpoint or self.recipe:
            raise ConfigError(f"pool: expert {self.name} sets checkpoint/recipe but its backend is 'recorded'; "
                              "set backend='flax' to run it")

    @property
    def live(self) -> bool:
        return self.backend == "flax"

    def usd(self, input_tokens, output_tokens):
        """Cost at list price, USD (numbers or arrays): what a query is estimated at and what an
        answer is charged."""
        return (input_tokens * self.input_price + output_tokens * self.output_price) / 1e6


BACKENDS = ("recorded", "flax")


def parse_recipe(recipe: str, name: str = "?") -> tuple[str, int]:
    """"mmlu_<k>shot" -> ("letters", k); "chat" -> ("chat", 0); anything else is a one-line error."""
    if recipe == "chat":
        return "chat", 0
    if recipe.startswith("mmlu_") and recipe.endswith("shot") and recipe[5:-4].isdigit():
        return "letters", int(recipe[5:-4])
    raise ConfigError(f"pool: expert {name} has recipe {recipe!r}; use mmlu_0shot, mmlu_<k>shot (e.g. mmlu_5shot) or chat")


def by_subject(questions: Sequence[Question]) -> dict[str, list[Question]]:
    """TRAIN questions grouped by subject: the exemplar bank of k-shot recipes."""
    out: dict[str, list[Question]] = {}
    for q in questions:
        if splits.split_of(q.id) is splits.Split.TRAIN:
            out.setdefault(q.subject, []).append(q)
    return out


def recipe_prompt(expert: Expert, q: Question, bank: Mapping[str, Sequence[Question]]) -> str:
    """The text a live expert is given for q; k-shot exemplars come from bank[q.subject]
    (TRAIN questions, `by_subject`), fixed per subject (mmlu.few_shot_exemplars)."""
    kind, shots = parse_recipe(expert.recipe, expert.name)
    if kind == "chat":
        return chat_message(q)
    return mmlu.prompt(q, mmlu.few_shot_exemplars(q, bank.get(q.subject, ()), shots) if shots else ())


def query_text(q: Question) -> str:
    return q.question + "".join(f"\n{letter}. {c}" for letter, c in zip(LETTERS, q.choices))


def chat_message(q: Question) -> str:
    """The user message of the chat recipe: the question, its options, and how to answer."""
    return query_text(q) + f"\n\nAnswer with the letter ({LETTERS[0]}-{LETTERS[len(q.choices) - 1]}) of the correct option."


class Pool:
    """An ordered list of experts; index e in every [.., E] array is `pool.experts[e]`."""

    def __init__(self, experts: Sequence[Expert]):
        names = [e.name for e in experts]
        if not experts:
            raise ConfigError("pool: no experts configured; list at least one under config.pool")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"pool: expert names repeat ({', '.join(dupes)}); names must be unique")
        self.experts = tuple(experts)
        self.names = tuple(names)
        self._index = {n: i for i, n in enumerate(names)}
        self._tokenizers: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.experts)

    def index(self, name: str) -> int:
        if name not in self._index:
            raise ConfigError(f"unknown expert {name!r}; the pool has {', '.join(self.names)}")
        return self._index[name]

    @classmethod
    def from_config(cls, entries: Sequence[Mapping[str, Any]]) -> "Pool":
        experts = []
        fields = {f.name for f in dataclasses.fields(Expert)}
        for i, entry in enumerate(entries):
            entry = dict(entry)
            unknown = sorted(set(entry) - fields)
            if unknown:
                raise ConfigError(f"pool[{i}]: unknown keys {unknown}; allowed: {sorted(fields)}")
            if not isinstance(entry.get("name"), str) or not entry["name"]:
                raise ConfigError(f"config.pool[{i}] has no name; give every expert a unique name")
            try:
                experts.append(Expert(**entry))
            except TypeError as e:
                raise ConfigError(f"pool[{i}]: {e}; each expert needs name, input_price, output_price") from None
        return cls(experts)

    def _input_tokens(self, expert: Expert, texts: Sequence[str]) -> np.ndarray:
        if not expert.tokenizer:
            return np.array([math.ceil(len(t) / 4) for t in texts], np.float64)
        if expert.tokenizer not in self._tokenizers:
            from transformers import AutoTokenizer

            self._tokenizers[expert.tokenizer] = AutoTokenizer.from_pretrained(expert.tokenizer)
        tok = self._tokenizers[expert.tokenizer]
        return np.array([len(ids) for ids in tok(list(texts), add_special_tokens=False)["input_ids"]], np.float64)

    def costs(self, questions: Sequence[Question]) -> np.ndarray:
        """cost[Q, E] in USD per query."""
        texts = [query_text(q) for q in questions]
        bank = by_subject(questions)
        out = np.empty((len(questions), len(self)), np.float64)
        for e, expert in enumerate(self.experts):
            out[:, e] = self._cost(expert, [recipe_prompt(expert, q, bank) for q in questions] if expert.live else texts)
        return out

    def text_costs(self, texts: Sequence[str]) -> np.ndarray:
        """cost[N, E] in USD of free-form queries (served requests): every expert is given the
        text itself, and is priced for its `output_tokens`, as on the questions it was trained on."""
        out = np.empty((len(texts), len(self)), np.float64)
        for e, expert in enumerate(self.experts):
            out[:, e] = self._cost(expert, texts)
        return out

    def _cost(self, expert: Expert, prompts: Sequence[str]) -> np.ndarray:
        return expert.usd(self._input_tokens(expert, prompts), expert.output_tokens)


PRICE_COLUMNS = ("model", "input_price", "output_price")


def read_price_table(path: str | os.PathLike) -> list[dict]:
    """config.pool entries from a price table CSV: model,input_price,output_price (USD per 1M
    tokens), one expert a row; a user's pool without writing Python (configs/custom_pool.py)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"price table {path} does not exist; pass a CSV with columns {','.join(PRICE_COLUMNS)}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not set(PRICE_COLUMNS) <= set(reader.fieldnames):
            raise ConfigError(f"{path.name}: expected columns {','.join(PRICE_COLUMNS)} (USD per 1M tokens); "
                              f"got {reader.fieldnames}")
        out = []
        for n, row in enumerate(reader, 2):
            try:
                prices = [float(row[k]) for k in PRICE_COLUMNS[1:]]
            except (TypeError, ValueError):
                raise ConfigError(f"{path.name}:{n}: a price is not a number; give USD per 1M tokens") from None
            if not all(p >= 0 and math.isfinite(p) for p in prices) or not (row["model"] or "").strip():
                raise ConfigError(f"{path.name}:{n}: needs a model name and prices >= 0 (USD per 1M tokens)")
            out.append(dict(name=row["model"].strip(), input_price=prices[0], output_price=prices[1]))
    if not out:
        raise ConfigError(f"{path.name} lists no expert; add a row per model: {','.join(PRICE_COLUMNS)}")
    Pool.from_config(out)  # repeated names fail here, naming the file's rows
    return out
