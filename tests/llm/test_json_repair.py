"""Lenient JSON from small models: the broken-reply corpus (broken_replies.json), parsed by
json-repair where a repair cannot change what the reply says, and the re-ask it saves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from optiforge.agents.optim.errors import ReplyError
from optiforge.agents.optim.parsing import extract_json_object, parse_suggestion
from optiforge.llm.structured import extract_json, find_json, parse_reply

CORPUS = json.loads((Path(__file__).parent / "broken_replies.json").read_text(encoding="utf-8"))


class Answer(BaseModel):
    x: float
    label: str = Field(max_length=10)


@pytest.mark.parametrize("case", CORPUS, ids=[c["kind"] for c in CORPUS])
def test_corpus_parses_to_the_expected_object_or_to_nothing(case):
    assert extract_json_object(case["reply"]) == case["expected"]
    # The structured-output extractor reads the same value (as JSON text).
    raw = extract_json(case["reply"])
    if case["expected"] is None:
        assert raw is None or not isinstance(json.loads(raw), dict)
    else:
        assert json.loads(raw) == case["expected"]


def test_corpus_covers_the_failure_modes_the_issue_names():
    kinds = " ".join(c["kind"] for c in CORPUS)
    for mode in (
        "unquoted keys",
        "missing commas",
        "trailing commas",
        "truncated",
        "fence",
        "prose",
        "single quotes",
        "python literals",
    ):
        assert mode in kinds
    assert sum(c["expected"] is None for c in CORPUS) >= 5  # and the refusals


def test_valid_json_is_returned_verbatim_by_extract_json():
    text = '{"x": 1.0, "label": "a"}'
    assert extract_json(text) == text
    assert extract_json('say ```json\n{"x": 2}\n``` ok') == '{"x": 2}'


def test_a_repair_never_invents_or_reinterprets_a_value():
    assert find_json('{"a": 1, "b": ') is None  # json-repair alone would give b = ""
    assert find_json('{"a": "cut mid-str') is None  # the string's end is unknown
    assert find_json('{"a": 3 + 4}') is None  # json-repair alone would give a = 3
    assert find_json('{"a": tru') is None  # json-repair alone would give a = "tru"
    assert find_json('{"a": 10,000}') is None  # json-repair alone would give "10,000"


def test_parse_suggestion_reads_a_truncated_unquoted_reply():
    reply = 'Here you go: {reasoning: "bigger", suggestion: {offset: 4.5, scale: 2'
    assert parse_suggestion(reply, ["offset:0", "scale:0"]) == (
        "bigger",
        {"offset:0": 4.5, "scale:0": 2},
    )
    with pytest.raises(ReplyError, match="no JSON object"):
        parse_suggestion('{"suggestion": {"offset": 3 + 4}}', ["offset:0"])


def test_parse_reply_validates_a_repaired_reply():
    obj, err = parse_reply("{x: 1.5, label: 'a',}", Answer)
    assert err is None and obj == Answer(x=1.5, label="a")


def test_truncated_structured_reply_is_rescued_without_a_reask(scripted_llm):
    # Cut at max_tokens after a complete value: closing the braces recovers it.
    llm = scripted_llm(['```json\n{"x": 1.5, "label": "a"', '{"x": 9, "label": "reask"}'])
    r = llm.chat("q", response_format=Answer)
    assert r.value == Answer(x=1.5, label="a")
    assert len(llm.requests) == 1  # the re-ask was not needed


def test_reply_cut_inside_a_string_still_gets_the_reask(scripted_llm):
    llm = scripted_llm(['{"x": 1.5, "label": "abc', '{"x": 2, "label": "fixed"}'])
    r = llm.chat("q", response_format=Answer)
    assert r.value == Answer(x=2, label="fixed")
    assert len(llm.requests) == 2
