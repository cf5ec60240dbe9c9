"""MMLU loading from every source, the id rule, the fixed splits and the prompts."""

import csv
import hashlib
import json
import pathlib
import random
import sys
import types

import pytest

from leeroo_jax.data import mmlu
from leeroo_jax.data.splits import Split, split_of
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


TEN = {"subject": "physics", "question": "Pick one.", "choices": [f"opt{i}" for i in range(10)], "answer": "J"}


def test_one_choice_is_an_error_naming_file_and_line(tmp_path):
    msg = _bad_jsonl(tmp_path, [GOOD, {**GOOD, "question": "R?", "choices": ["a"], "answer": 0}])
    assert msg.startswith("bad.jsonl:2:") and "1 choices" in msg and "2 to 10 (A-J)" in msg


def test_eleven_choices_is_an_error_naming_file_and_line(tmp_path):
    msg = _bad_jsonl(tmp_path, [GOOD, {**TEN, "choices": [f"o{i}" for i in range(11)], "answer": 0}])
    assert msg == "bad.jsonl:2: question has 11 choices; letter scoring handles 2 to 10 (A-J); fix or drop the row"


@pytest.mark.parametrize("n", [2, 3, 10])
def test_two_to_ten_choices_load_from_jsonl(tmp_path, n):
    path = tmp_path / "ok.jsonl"
    path.write_text(json.dumps({**TEN, "choices": [f"opt{i}" for i in range(n)], "answer": n - 1}) + "\n")
    (q,) = mmlu.load_questions(path)
    assert len(q.choices) == n and q.answer == n - 1


def test_ten_choice_question_loads_and_its_prompt_lists_a_to_j(tmp_path):
    path = tmp_path / "pro.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(TEN) + "\n")
    four, ten = mmlu.load_questions(path)
    assert ten.choices == tuple(f"opt{i}" for i in range(10)) and ten.answer == 9  # "J"
    assert mmlu.prompt(ten).endswith("Pick one.\n" + "".join(f"{L}. opt{i}\n" for i, L in enumerate("ABCDEFGHIJ"))
                                      + "Answer:")
    # a 4-choice question renders only its own letters, even beside a 10-choice one
    assert "\nD. d\nAnswer:" in mmlu.prompt(four) and "\nE." not in mmlu.prompt(four)
    assert mmlu.prompt(four, [ten]).count("\nJ. opt9\nAnswer: J\n\n") == 1


def test_answer_letters_are_limited_to_the_questions_own():
    assert mmlu.make_question("s", "Q?", [str(i) for i in range(10)], "J", "x:1").answer == 9
    assert mmlu.make_question("s", "Q?", [str(i) for i in range(10)], " j ", "x:1").answer == 9
    assert mmlu.make_question("s", "Q?", ["a", "b", "c"], "C", "x:1").answer == 2
    with pytest.raises(DataError) as e:
        mmlu.make_question("s", "Q?", ["a", "b", "c", "d"], "E", "x.jsonl:7")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("x.jsonl:7:") and "0-3 or A-D" in msg
    for bad in ("", "AB", None, True, -1, 4):
        with pytest.raises(DataError, match="0-3 or A-D"):
            mmlu.make_question("s", "Q?", ["a", "b", "c", "d"], bad, "x:1")


def test_answer_out_of_range(tmp_path):
    msg = _bad_jsonl(tmp_path, [{**GOOD, "answer": 7}])
    assert "out of range" in msg and "0-3 or A-D" in msg
    msg = _bad_jsonl(tmp_path, [{**GOOD, "choices": ["a", "b", "c"], "answer": 3}])
    assert "out of range" in msg and "0-2 or A-C" in msg


def test_berkeley_csv_stays_four_choices(tmp_path):
    folder = tmp_path / "test"
    folder.mkdir()
    with open(folder / "anatomy_test.csv", "w", newline="") as f:
        csv.writer(f).writerow(["Q?", "a", "b", "c", "d", "e", "A"])
    with pytest.raises(DataError, match="anatomy_test.csv:1: expected question, 4 choices"):
        mmlu.load_questions(tmp_path)


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


@pytest.fixture(scope="module")
def train(vendored):
    return [q for q in vendored if split_of(q.id) is Split.TRAIN]


def test_few_shot_exemplars_come_from_train_of_the_same_subject(vendored, train):
    q = next(q for q in vendored if split_of(q.id) is Split.TEST)
    shots = mmlu.few_shot_exemplars(q, train, 5)
    assert len(shots) == 5 and len({s.id for s in shots}) == 5
    assert all(s.subject == q.subject and s.id != q.id and split_of(s.id).value == "train" for s in shots)
    text = mmlu.prompt(q, shots)
    assert text.count("Answer:") == 6 and text.endswith("Answer:")
    assert f"Answer: {'ABCD'[shots[0].answer]}\n\n" in text
    # q itself in the candidates is never its own exemplar
    assert q.id not in {s.id for s in mmlu.few_shot_exemplars(q, [q, *train], 5)}


def test_few_shot_exemplars_are_shared_across_a_subject(vendored, train):
    subject = "anatomy"
    questions = [q for q in vendored if q.subject == subject]
    k = 5
    shots = {q.id: [s.id for s in mmlu.few_shot_exemplars(q, train, k)] for q in questions}
    shared = next(v for qid, v in shots.items() if split_of(qid) is not Split.TRAIN)
    assert len(shared) == k
    for qid, got in shots.items():
        assert len(got) == k and qid not in got  # an exemplar never sees itself
        assert all(split_of(s).value == "train" for s in got)
        if qid in shared:  # an exemplar gets the other k-1 plus the (k+1)-th
            assert set(got) - set(shared) == {got[-1]} and set(shared) - set(got) == {qid}
        else:
            assert got == shared
    assert sum(qid in shared for qid in shots) == k
    # the order is fixed by the subject and ids, not by the order of `train`
    shuffled = list(train)
    random.Random(0).shuffle(shuffled)
    assert {q.id: [s.id for s in mmlu.few_shot_exemplars(q, shuffled, k)] for q in questions} == shots
    # non-exemplar prompts share one prefix
    prefixes = {mmlu.prompt_prefix(q, mmlu.few_shot_exemplars(q, train, k)) for q in questions if q.id not in shared}
    assert len(prefixes) == 1


def test_prompt_is_prefix_plus_the_question(vendored, train):
    for q in vendored[::997]:
        for ex in ([], mmlu.few_shot_exemplars(q, train, 5)):
            prefix = mmlu.prompt_prefix(q, ex)
            text = mmlu.prompt(q, ex)
            assert text == prefix + mmlu._format(q, False)
            assert text[len(prefix):].startswith(q.question.strip()) and text.endswith("Answer:")
    q = mmlu.make_question("high_school_physics", "What is g?", ["1", "9.8", "3", "4"], 1, "x")
    assert mmlu.prompt_prefix(q) == "The following are multiple choice questions (with answers) about high school physics.\n\n"
