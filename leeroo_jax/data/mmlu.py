"""MMLU questions from any source, with one id rule, fixed splits and lm-eval prompts.

A question has 2 to 10 choices, lettered A-J (MMLU has 4, MMLU-Pro style rows up to 10), so
live experts can letter-score any of them; the Berkeley CSV layout is MMLU's and stays 4.

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
LETTERS = "ABCDEFGHIJ"
MIN_CHOICES, MAX_CHOICES = 2, len(LETTERS)


@dataclasses.dataclass(frozen=True)
class Question:
    id: str
    subject: str
    question: str
    choices: tuple[str, ...]  # 2..10 options, lettered LETTERS[:len(choices)]
    answer: int


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).lower()).strip()


def question_id(question: str, choices: Sequence[str]) -> str:
    """16 hex chars of sha1 over the normalised question and choices (the data README's rule)."""
    return hashlib.sha1("\n".join([_norm(question)] + [_norm(c) for c in choices]).encode()).hexdigest()[:16]


def make_question(subject: str, question: str, choices: Sequence[str], answer: int | str, where: str) -> Question:
    """Validate one row; `where` ("file:line") goes into the one-line error.

    2 to 10 choices; `answer` is an index 0..n-1 or one of the question's own letters (A.. the n-th).
    """
    choices = tuple(str(c) for c in choices)
    n = len(choices)
    if not MIN_CHOICES <= n <= MAX_CHOICES:
        raise DataError(f"{where}: question has {n} choices; letter scoring handles {MIN_CHOICES} to {MAX_CHOICES} "
                        f"(A-{LETTERS[-1]}); fix or drop the row")
    valid = f"0-{n - 1} or A-{LETTERS[n - 1]} for its {n} choices"
    raw = answer
    if isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().upper() in LETTERS:
        answer = LETTERS.index(answer.strip().upper())
    elif isinstance(answer, bool):
        raise DataError(f"{where}: answer {raw!r} is not {valid}; fix the row")
    try:
        answer = int(answer)
    except (TypeError, ValueError):
        raise DataError(f"{where}: answer {raw!r} is not {valid}; fix the row") from None
    if not 0 <= answer < n:
        raise DataError(f"{where}: answer {raw!r} is out of range; valid is {valid}; fix the row")
    return Question(question_id(question, choices), subject, question, choices, answer)


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
                if len(row) != 6:  # MMLU's own layout: always exactly 4 choices
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
    """q's question and its own lettered options (A.. the n-th letter), then "Answer:" [" X"]."""
    options = "".join(f"\n{letter}. {c}" for letter, c in zip(LETTERS, q.choices))
    tail = f" {LETTERS[q.answer]}\n\n" if with_answer else ""
    return f"{q.question.strip()}{options}\nAnswer:{tail}"


def prompt_prefix(q: Question, exemplars: Sequence[Question] = ()) -> str:
    """The part of `prompt(q, exemplars)` before q's own question: the subject header and the
    answered exemplars. `prompt(q, ex) == prompt_prefix(q, ex) + <q without its answer>` always,
    and with `few_shot_exemplars` it is the same string for (nearly) every question of a subject,
    so a prefix KV cache can share it."""
    header = f"The following are multiple choice questions (with answers) about {q.subject.replace('_', ' ')}.\n\n"
    return header + "".join(_format(e, True) for e in exemplars)


def prompt(q: Question, exemplars: Sequence[Question] = ()) -> str:
    """The lm-eval MMLU prompt, zero-shot or k-shot; the answer is the next token, one of the
    question's own letters (" A".." D" for MMLU, up to " A".." J" for 10 choices).

    Exemplars must come from TRAIN questions of the same subject (see `few_shot_exemplars`).
    """
    return prompt_prefix(q, exemplars) + _format(q, False)


def zero_shot_prompt(q: Question) -> str:
    return prompt(q)


def _subject_order(subject: str, qid: str) -> tuple[str, str]:
    return hashlib.sha1((subject + qid).encode()).hexdigest(), qid


def few_shot_exemplars(q: Question, train: Sequence[Question], k: int) -> list[Question]:
    """k TRAIN questions of q's subject (never q itself), shared across the subject.

    The subject's questions in `train` take one fixed order (sha1 of subject + id, whatever the
    order of `train`) and q gets the first k of them that are not q. So every question of a
    subject sees the same k exemplars, and the same `prompt_prefix`, except those k exemplars
    themselves, which each get the other k-1 plus the (k+1)-th. The caller passes TRAIN
    questions (`splits.split_of(id) is Split.TRAIN`), so no exemplar is ever evaluated on.
    """
    pool = {t.id: t for t in train if t.subject == q.subject}
    order = sorted(pool, key=lambda qid: _subject_order(q.subject, qid))
    return [pool[qid] for qid in order if qid != q.id][:k]
