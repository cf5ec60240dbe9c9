"""MMLU loading from every source, the id rule, the fixed splits and the prompts."""

import csv
import hashlib
import json
import pathlib
import sys
import types

import pytest

from leeroo_jax.data import mmlu
from leeroo_jax.errors import DataError

SHARED = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "mmlu" / "mmlu_test.jsonl"


@pytest.fixture(scope="module")
def vendored():
    return mmlu.load_questions()


def test_vendored_copy_is_the_real_test_split(vendored):
    assert len(vendored) == 13937  # the data README's count of distinct questions
    assert len({q.subject for q in vendored}) == 57
    assert len({q.id for q in vendored}) == 13937


@pytest.mark.skipif(not SHARED.exists(), reason="../shared not beside this clone")
def test_vendored_equals_shared_file(vendored):
    rows = [json.loads(line) for line in SHARED.read_text(encoding="utf-8").split("\n") if line]
    assert [r["id"] for r in rows] == [q.id for q in vendored]  # the shared ids, recomputed by us
    assert mmlu.load_questions(SHARED) == vendored


def test_berkeley_csv_layout_gives_the_same_ids(vendored, tmp_path):
    sample = [q for q in vendored if q.subject in ("anatomy", "virology")][:20]
    folder = tmp_path / "data" / "test"
    folder.mkdir(parents=True)
    for subject in ("anatomy", "virology"):
        with open(folder / f"{subject}_test.csv", "w", newline="") as f:
            for q in (q for q in sample if q.subject == subject):
                csv.writer(f).writerow([q.question, *q.choices, "ABCD"[q.answer]])
    got = mmlu.load_questions(tmp_path)
    assert sorted(got, key=lambda q: q.id) == sorted(sample, key=lambda q: q.id)


def test_id_rule_normalises_case_space_and_unicode():
    a = mmlu.question_id("What is  2+2?", ["3", "4", "5", "6"])
    b = mmlu.question_id(" what is 2+2? ", ["3", "4", "5", "６"])  # full-width 6 folds under NFKC
    assert a == b and len(a) == 16


def _bad_jsonl(tmp_path, rows):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError) as e:
        mmlu.load_questions(path)
    assert "\n" not in str(e.value)
    return str(e.value)


GOOD = {"subject": "anatomy", "question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 1}


def test_three_choices_is_an_error_naming_file_and_line(tmp_path):
    msg = _bad_jsonl(tmp_path, [GOOD, {**GOOD, "question": "R?", "choices": ["a", "b", "c"]}])
    assert msg.startswith("bad.jsonl:2:") and "3 choices" in msg


def test_answer_out_of_range(tmp_path):
    assert "out of range" in _bad_jsonl(tmp_path, [{**GOOD, "answer": 7}])


def test_duplicate_id_with_different_content(tmp_path):
    msg = _bad_jsonl(tmp_path, [GOOD, {**GOOD, "answer": 2}])
    assert "bad.jsonl:2" in msg and "bad.jsonl:1" in msg


def test_verbatim_repeats_are_dropped(tmp_path):
    path = tmp_path / "rep.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n")
    assert len(mmlu.load_questions(path)) == 1


def _fake_datasets(monkeypatch, load_dataset):
    """A stand-in `datasets` module in sys.modules: no network, the same answer on every machine."""
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))


# Rows in cais/mmlu's schema (question, subject, choices, answer as a 0-3 class index), text
# already lower-case and single-spaced so the id is sha1 of the plain lines, computed by hand.
HUB_ROWS = [
    {"question": "what is 2 + 2?", "subject": "elementary_mathematics", "choices": ["3", "4", "5", "22"], "answer": 1},
    {"question": "which gas do plants absorb?", "subject": "high_school_biology",
     "choices": ["oxygen", "nitrogen", "carbon dioxide", "helium"], "answer": 2},
    {"question": "what is 2 + 2?", "subject": "elementary_mathematics", "choices": ["3", "4", "5", "22"], "answer": 1},
]


def test_hf_source_maps_hub_rows_to_questions(monkeypatch):
    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return list(HUB_ROWS)

    _fake_datasets(monkeypatch, load_dataset)
    got = mmlu.load_questions("cais/mmlu", split="validation")
    assert calls == [(("cais/mmlu", "all"), {"split": "validation"})]
    want_ids = [hashlib.sha1("\n".join([r["question"], *r["choices"]]).encode()).hexdigest()[:16] for r in HUB_ROWS[:2]]
    assert len(set(want_ids)) == 2 and all(len(i) == 16 for i in want_ids)
    assert got == [  # the verbatim repeat (row 3) is dropped
        mmlu.Question(want_ids[0], "elementary_mathematics", "what is 2 + 2?", ("3", "4", "5", "22"), 1),
        mmlu.Question(want_ids[1], "high_school_biology", "which gas do plants absorb?",
                      ("oxygen", "nitrogen", "carbon dioxide", "helium"), 2),
    ]
    assert mmlu.load_questions("cais/mmlu", limit=1) == got[:1]


def test_hf_source_offline_is_one_line(monkeypatch):
    def load_dataset(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'cais/mmlu' on the Hub (LocalEntryNotFoundError)\nmore lines")

    _fake_datasets(monkeypatch, load_dataset)
    with pytest.raises(DataError) as err:
        mmlu.load_questions("cais/mmlu")
    assert str(err.value) == ("cannot load cais/mmlu (ConnectionError); when offline use the vendored copy "
                              "(source='vendored')")


def test_hf_source_without_datasets_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    with pytest.raises(DataError) as err:
        mmlu.load_questions("cais/mmlu")
    assert "\n" not in str(err.value) and str(err.value).startswith("loading cais/mmlu needs the `datasets` package")


def test_zero_shot_prompt_is_lm_eval_format():
    q = mmlu.make_question("high_school_physics", "What is g?", ["1", "9.8", "3", "4"], 1, "x")
    assert mmlu.prompt(q) == (
        "The following are multiple choice questions (with answers) about high school physics.\n\n"
        "What is g?\nA. 1\nB. 9.8\nC. 3\nD. 4\nAnswer:"
    )


def test_few_shot_exemplars_come_from_train_of_the_same_subject(vendored):
    q = vendored[500]
    train = [t for t in vendored if t.id != vendored[501].id]
    shots = mmlu.few_shot_exemplars(q, train, 5)
    assert len(shots) == 5 and all(s.subject == q.subject and s.id != q.id for s in shots)
    text = mmlu.prompt(q, shots)
    assert text.count("Answer:") == 6 and text.endswith("Answer:")
    assert f"Answer: {'ABCD'[shots[0].answer]}\n\n" in text
