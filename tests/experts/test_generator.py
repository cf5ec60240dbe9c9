"""The generator's strict parser on hand-written replies (the live path is tests/jobs/test_selfplay.py)."""

import pytest

from leeroo_jax.data import mmlu
from leeroo_jax.experts.generator import generator_prompt, parse

GOOD = " What is the capital of France?\nA. Paris\nB. Lyon\nC. Nice\nD. Lille\nAnswer: A\n\nQuestion: more text"


def test_a_well_formed_reply_parses_to_the_question_it_writes():
    q, reason = parse(GOOD, "geography")
    assert reason == "" and q.question == "What is the capital of France?"
    assert q.choices == ("Paris", "Lyon", "Nice", "Lille") and q.answer == 0
    assert q.id == mmlu.question_id(q.question, q.choices)  # the project's one id rule


@pytest.mark.parametrize("reply,reason", [
    (" What is the capital of France?\nA. Paris\nB. Lyon\nC. Nice\nD. Lille\n", "format"),  # no answer line
    (" What is the capital of France?\nA. Paris\nB. Lyon\nC. Nice\nAnswer: A", "format"),  # three options
    (" What is the capital of France?\nA. Paris\nB. Lyon\nC. Nice\nD. Lille\nAnswer: E", "format"),
    (" What is the capital of France?\nA. Paris\nB. paris\nC. Nice\nD. Lille\nAnswer: A", "options"),  # repeated
    (" What is the capital of France?\nA. Paris\nB. \nC. Nice\nD. Lille\nAnswer: A", "options"),  # empty option
    (" Why?\nA. a\nB. b\nC. c\nD. d\nAnswer: B", "options"),  # under 10 characters
])
def test_malformed_replies_are_rejected_with_their_reason(reply, reason):
    assert parse(reply, "geography") == (None, reason)


def test_the_request_shows_exemplars_in_the_format_it_parses():
    ex = mmlu.make_question("geography", "Which river flows through Cairo?", ["Nile", "Congo", "Niger", "Zambezi"], 0, "t")
    text = generator_prompt("high_school_geography", [ex])
    assert text.endswith("Question:") and "about high school geography" in text
    block = text.split("Question:")[1]  # the exemplar, as a reply would write it
    q, reason = parse(block, "geography")
    assert reason == "" and q == ex
