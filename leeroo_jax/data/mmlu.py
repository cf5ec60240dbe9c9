"""MMLU questions (the vendored test split by default).

This is the minimal reader the foundation needs (demo, tests, benchmarks); the full loader
(HF `cais/mmlu`, the Berkeley CSV layout, splits, prompts) grows here.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import pathlib
from typing import Iterator

ASSETS = pathlib.Path(__file__).resolve().parent / "assets"
DEFAULT_PATH = ASSETS / "mmlu_test.jsonl.gz"
LETTERS = "ABCD"


@dataclasses.dataclass(frozen=True)
class Question:
    id: str
    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: int


def _open(path: pathlib.Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def iter_questions(path: str | pathlib.Path = DEFAULT_PATH) -> Iterator[Question]:
    with _open(pathlib.Path(path)) as f:
        for line in f:
            row = json.loads(line)
            yield Question(row["id"], row["subject"], row["question"], tuple(row["choices"]), int(row["answer"]))


def load_questions(path: str | pathlib.Path = DEFAULT_PATH, limit: int | None = None) -> list[Question]:
    out = []
    for q in iter_questions(path):
        if limit is not None and len(out) >= limit:
            break
        out.append(q)
    return out


def zero_shot_prompt(q: Question) -> str:
    """The lm-eval MMLU format; the answer is the next token (' A' .. ' D')."""
    subject = q.subject.replace("_", " ")
    options = "".join(f"\n{l}. {c}" for l, c in zip(LETTERS, q.choices))
    return f"The following are multiple choice questions (with answers) about {subject}.\n\n{q.question.strip()}{options}\nAnswer:"
