"""MMLU questions from any source, with one id rule, fixed splits and lm-eval prompts.

Sources, all yielding the same `Question` schema:
  * the vendored test split (default; `assets/mmlu_test.jsonl.gz`, see assets/NOTICE.md),
  * any jsonl file of the same schema (e.g. ../shared/data/mmlu/mmlu_test.jsonl),
  * the original Berkeley CSV layout (`<dir>/test/*_test.csv`, or `<dir>/data/test/...`),
  * `cais/mmlu` on the Hugging Face hub through the `datasets` library, when online.

Ids are recomputed from the text everywhere (`question_id`), so records from any source join;
the split of a question is a function of its id alone (`splits.py`).
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import json
import pathlib
import re
import unicodedata
from typing import Iterable, Iterator, Sequence

from leeroo_jax.errors import DataError

ASSETS = pathlib.Path(__file__).resolve().parent / "assets"
DEFAULT_PATH = ASSETS / "mmlu_test.jsonl.gz"
HF_DATASET = "cais/mmlu"
LETTERS = "ABCD"


@dataclasses.dataclass(frozen=True)
class Question:
    id: str
    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: int


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).lower()).strip()


def question_id(question: str, choices: Sequence[str]) -> str:
    """16 hex chars of sha1 over the normalised question and choices (the data README's rule)."""
    return hashlib.sha1("\n".join([_norm(question)] + [_norm(c) for c in choices]).encode()).hexdigest()[:16]


def make_question(subject: str, question: str, choices: Sequence[str], answer: int | str, where: str) -> Question:
    """Validate one row; `where` ("file:line") goes into the one-line error."""
    choices = tuple(str(c) for c in choices)
    if len(choices) != 4:
        raise DataError(f"{where}: question has {len(choices)} choices, MMLU needs exactly 4; fix or drop the row")
    if isinstance(answer, str) and answer.strip().upper() in LETTERS:
        answer = LETTERS.index(answer.strip().upper())
    try:
        answer = int(answer)
    except (TypeError, ValueError):
        raise DataError(f"{where}: answer {answer!r} is not 0-3 or A-D; fix the row") from None
    if not 0 <= answer < 4:
        raise DataError(f"{where}: answer {answer} is out of range 0-3; fix the row")
    return Question(question_id(question, choices), subject, question, choices, answer)  # type: ignore[arg-type]


def _dedupe(rows: Iterable[tuple[Question, str]]) -> list[Question]:
    """Drop verbatim repeats; the same id with different content is an error."""
    seen: dict[str, tuple[Question, str]] = {}
    out = []
    for q, where in rows:
        if q.id in seen:
            first, first_where = seen[q.id]
            if (first.subject, first.answer) != (q.subject, q.answer):
                raise DataError(f"{where}: id {q.id} repeats {first_where} with a different subject or answer; remove one")
            continue
        seen[q.id] = (q, where)
        out.append(q)
    return out


def _read_jsonl(path: pathlib.Path) -> Iterator[tuple[Question, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path.name}:{n}"
            try:
                row = json.loads(line)
                q = make_question(row["subject"], row["question"], row["choices"], row["answer"], where)
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(f"{where}: not a valid MMLU row ({type(e).__name__}: {e}); fix the line") from None
            if "id" in row and row["id"] != q.id:
                raise DataError(f"{where}: id {row['id']} does not match its text (expected {q.id}); recompute it")
            yield q, where


def _read_berkeley(root: pathlib.Path, split: str) -> Iterator[tuple[Question, str]]:
    folder = next((d for d in (root / split, root / "data" / split) if d.is_dir()), None)
    if folder is None:
        raise DataError(f"{root} has no {split}/ or data/{split}/ folder of *_{split}.csv files; pass the MMLU data dir")
    for path in sorted(folder.glob(f"*_{split}.csv")):
        subject = path.name[: -len(f"_{split}.csv")]
        with open(path, newline="", encoding="utf-8") as f:
            for n, row in enumerate(csv.reader(f), 1):
                where = f"{path.name}:{n}"
                if len(row) != 6:
                    raise DataError(f"{where}: expected question, 4 choices and an answer (6 fields), got {len(row)}")
                yield make_question(subject, row[0], row[1:5], row[5], where), where


def _read_hf(split: str) -> Iterator[tuple[Question, str]]:
    try:
        import datasets
    except ImportError:
        raise DataError("loading cais/mmlu needs the `datasets` package; pip install datasets, or use the vendored copy") from None
    try:
        ds = datasets.load_dataset(HF_DATASET, "all", split=split)
    except Exception as e:  # offline, or the hub refused
        raise DataError(f"cannot load {HF_DATASET} ({type(e).__name__}); when offline use the vendored copy (source='vendored')") from None
    for n, row in enumerate(ds):
        yield make_question(row["subject"], row["question"], row["choices"], row["answer"], f"{HF_DATASET}[{n}]"), f"{HF_DATASET}[{n}]"


def load_questions(source: str | pathlib.Path = "vendored", split: str = "test", limit: int | None = None) -> list[Question]:
    """Questions from `source`: "vendored", a .jsonl(.gz) file, a Berkeley CSV dir, or "cais/mmlu"."""
    if str(source) == "vendored":
        rows = _read_jsonl(DEFAULT_PATH)
    elif str(source) == HF_DATASET:
        rows = _read_hf(split)
    else:
        path = pathlib.Path(source)
        if path.is_dir():
            rows = _read_berkeley(path, split)
        elif path.exists():
            rows = _read_jsonl(path)
        else:
            raise DataError(f"MMLU source {source} does not exist; pass 'vendored', a .jsonl file, a CSV dir or cais/mmlu")
    out = _dedupe(rows)
    return out[:limit] if limit is not None else out


# --- prompts -------------------------------------------------------------------------------


def _format(q: Question, with_answer: bool) -> str:
    options = "".join(f"\n{letter}. {c}" for letter, c in zip(LETTERS, q.choices))
    tail = f" {LETTERS[q.answer]}\n\n" if with_answer else ""
    return f"{q.question.strip()}{options}\nAnswer:{tail}"


def prompt(q: Question, exemplars: Sequence[Question] = ()) -> str:
    """The lm-eval MMLU prompt, zero-shot or k-shot; the answer is the next token (" A".." D").

    Exemplars must come from TRAIN questions of the same subject (see `few_shot_exemplars`).
    """
    header = f"The following are multiple choice questions (with answers) about {q.subject.replace('_', ' ')}.\n\n"
    return header + "".join(_format(e, True) for e in exemplars) + _format(q, False)


def zero_shot_prompt(q: Question) -> str:
    return prompt(q)


def few_shot_exemplars(q: Question, train: Sequence[Question], k: int) -> list[Question]:
    """k TRAIN questions of q's subject (never q itself), in a fixed order per question."""
    pool = [t for t in train if t.subject == q.subject and t.id != q.id]
    pool.sort(key=lambda t: hashlib.sha1((q.id + t.id).encode()).hexdigest())
    return pool[:k]
