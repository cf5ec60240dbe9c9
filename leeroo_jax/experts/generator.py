"""New multiple-choice questions written by a live expert, parsed strictly and validated.

A request shows the model two bank questions of a subject in a fixed format and asks for one
more (`generator_prompt`); its greedy continuation is parsed (`parse`) into a Question or a
reject reason. Every generated question must also be new (its id is neither a bank question's
nor an earlier generated one's) and must fall in TRAIN by the id rule (data/splits.py), so VAL
and TEST stay real MMLU questions. Rejects are counted by reason and never recorded:

  format     no "question / A-D options / Answer: X" block in the reply
  options    an empty or repeated option, or a question under 10 characters
  duplicate  the same question (by id) as a bank or earlier generated one
  split      a valid new question whose id falls in VAL or TEST

The generator's own "Answer:" is a claim, not a grade: generated questions are graded by the
judge (experts/judge.py).
"""

from __future__ import annotations

import collections
import re
from typing import Mapping, Sequence

import numpy as np

from leeroo_jax.data import splits
from leeroo_jax.data.mmlu import LETTERS, Question, make_question
from leeroo_jax.errors import DataError

REASONS = ("format", "options", "duplicate", "split")
_BLOCK = re.compile(r"^\s*(?P<q>\S.*?)\s*\nA[.)]\s*(?P<a>[^\n]*)\nB[.)]\s*(?P<b>[^\n]*)\nC[.)]\s*(?P<c>[^\n]*)"
                    r"\nD[.)]\s*(?P<d>[^\n]*)\nAnswer:\s*(?P<ans>[A-D])\b", re.DOTALL)


def _block(q: Question) -> str:
    options = "".join(f"\n{letter}. {c}" for letter, c in zip(LETTERS, q.choices))
    return f"Question: {q.question.strip()}{options}\nAnswer: {LETTERS[q.answer]}\n\n"


def generator_prompt(subject: str, exemplars: Sequence[Question]) -> str:
    """The request: a header, the exemplars in the strict format, then "Question:" to continue."""
    header = (f"Write a new multiple-choice question about {subject.replace('_', ' ')}: the question, four options "
              "A-D, one correct, and the answer letter, exactly in this format.\n\n")
    return header + "".join(_block(e) for e in exemplars if len(e.choices) == 4) + "Question:"


def parse(reply: str, subject: str) -> tuple[Question | None, str]:
    """(the question the reply writes, "") or (None, reject reason)."""
    m = _BLOCK.match(reply)
    if not m:
        return None, "format"
    text = " ".join(m["q"].split())
    options = [" ".join(m[k].split()) for k in "abcd"]
    norm = [o.lower() for o in options]
    if len(text) < 10 or not all(options) or len(set(norm)) < 4:
        return None, "options"
    try:
        return make_question(subject, text, options, m["ans"], "generated"), ""
    except DataError:
        return None, "options"


def generate(live, bank: Mapping[str, Sequence[Question]], subjects: Sequence[str], per_subject: int,
             known_ids: set[str], rng: np.random.Generator, shots: int = 2,
             max_new_tokens: int = 96) -> tuple[list[Question], collections.Counter]:
    """Up to per_subject new TRAIN questions per subject from `live` (a LiveExpert); returns them
    and the reject counts. Each request shows different exemplars, so greedy decoding differs."""
    requests = []
    for subject in subjects:
        pool = [q for q in bank.get(subject, ()) if len(q.choices) == 4]
        for _ in range(per_subject):
            pick = rng.choice(len(pool), size=min(shots, len(pool)), replace=False) if pool else []
            requests.append((subject, generator_prompt(subject, [pool[i] for i in pick])))
    replies = live.continue_texts([p for _, p in requests], max_new_tokens)
    made, rejects, seen = [], collections.Counter({r: 0 for r in REASONS}), set(known_ids)
    for (subject, _), reply in zip(requests, replies):
        q, reason = parse(reply, subject)
        if q is None:
            rejects[reason] += 1
        elif q.id in seen:
            rejects["duplicate"] += 1
        elif splits.split_of(q.id) is not splits.Split.TRAIN:
            rejects["split"] += 1
        else:
            seen.add(q.id)
            made.append(q)
    return made, rejects

