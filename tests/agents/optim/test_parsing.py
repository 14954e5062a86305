"""Reply parsing and type checks: malformed and partial replies from small models."""

from __future__ import annotations

import pytest

from optiforge.agents.optim.checks import check_code, coerce_value, function_signature, same_value
from optiforge.agents.optim.errors import InvalidValueError, ReplyError
from optiforge.agents.optim.parsing import (
    extract_json_object,
    extract_tagged,
    match_name,
    parse_suggestion,
)

NAMES = ["offset:0", "scale:0", "prompt:0"]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("offset:0", "offset:0"),
        ("offset", "offset:0"),
        ("Offset", "offset:0"),
        ("`offset:0`", "offset:0"),
        ("offset0", "offset:0"),
        ("(float) offset:0", "offset:0"),
        ("offset:1", "offset:0"),
        ("nothing", None),
    ],
)
def test_match_name_tolerates_dropped_suffix(key, expected):
    assert match_name(key, NAMES) == expected


def test_match_name_refuses_ambiguous_base():
    names = ["x:0", "x:1"]
    assert match_name("x:1", names) == "x:1"
    assert match_name("x", names) is None


def test_match_name_prefers_full_name_over_base():
    names = ["x:0", "x1:0"]
    assert match_name("x1", names) == "x1:0"
    assert match_name("x", names) == "x:0"


def test_extract_json_from_fences_and_prose():
    text = 'Sure! Here it is:\n```json\n{"reasoning": "r", "suggestion": {"offset": 2}}\n```\nDone.'
    assert extract_json_object(text) == {"reasoning": "r", "suggestion": {"offset": 2}}
    assert extract_json_object('blah {"a": 1,} blah') == {"a": 1}
    assert extract_json_object("{'a': True}") == {"a": True}
    assert extract_json_object("no json here") is None


def test_extract_json_closes_truncated_reply():
    assert extract_json_object('{"suggestion": {"offset": 3') == {"suggestion": {"offset": 3}}


def test_extract_json_ignores_braces_inside_strings():
    text = '{"suggestion": {"prompt": "use {braces} }"}}'
    assert extract_json_object(text) == {"suggestion": {"prompt": "use {braces} }"}}


def test_tag_format():
    text = """<reasoning>make it bigger</reasoning>
    <variable><name>offset:0</name><value>4.5</value></variable>
    <variable><name>code</name><value>```python
def f(x):
    return x
```</value></variable>"""
    reasoning, found = extract_tagged(text)
    assert reasoning == "make it bigger"
    assert found["offset:0"] == "4.5"
    assert found["code"] == "def f(x):\n    return x"


def test_parse_suggestion_variants():
    assert parse_suggestion({"reasoning": "r", "suggestion": {"offset": 1}}, NAMES) == (
        "r",
        {"offset:0": 1},
    )
    assert parse_suggestion('{"offset:0": 1, "scale": 2}', NAMES)[1] == {
        "offset:0": 1,
        "scale:0": 2,
    }
    listed = '{"reasoning": "x", "suggestion": [{"name": "scale", "value": 3}]}'
    assert parse_suggestion(listed, NAMES)[1] == {"scale:0": 3}
    tagged = "<variable><name>scale</name><value>7</value></variable>"
    assert parse_suggestion(tagged, NAMES)[1] == {"scale:0": "7"}


def test_parse_suggestion_partial_reply_keeps_known_names():
    _, values = parse_suggestion('{"suggestion": {"offset": 1, "bogus": 2}}', NAMES)
    assert values == {"offset:0": 1}


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ("", "empty"),
        ("I think offset should be larger.", "no JSON object"),
        ('{"suggestion": {"bogus": 1}}', "names no known parameter"),
        ('{"reasoning": "only words"}', "no suggested values"),
    ],
)
def test_parse_suggestion_errors_say_why(reply, message):
    with pytest.raises(ReplyError, match=message):
        parse_suggestion(reply, NAMES)


def test_numbers_stay_numbers():
    assert coerce_value("2.5", 1.0) == 2.5
    assert coerce_value("w = -3e-1", 1.0) == -0.3
    assert coerce_value(4, 1.0) == 4.0 and isinstance(coerce_value(4, 1.0), float)
    assert coerce_value("7", 3) == 7 and isinstance(coerce_value("7", 3), int)
    assert coerce_value(7.0, 3) == 7
    with pytest.raises(InvalidValueError, match="integer"):
        coerce_value(7.5, 3)
    with pytest.raises(InvalidValueError, match="number"):
        coerce_value("bigger", 1.0)
    with pytest.raises(InvalidValueError, match="number"):
        coerce_value("between 1 and 2", 1.0)
    with pytest.raises(InvalidValueError, match="finite"):
        coerce_value("nan", 1.0)
    with pytest.raises(InvalidValueError, match="bool"):
        coerce_value(True, 1.0)


def test_other_kinds():
    assert coerce_value("true", False) is True
    assert coerce_value("[1, 2]", [0]) == [1, 2]
    assert coerce_value({"a": 1}, {"b": 2}) == {"a": 1}
    assert coerce_value(3, "text") == "3"
    with pytest.raises(InvalidValueError):
        coerce_value("maybe", False)
    with pytest.raises(InvalidValueError, match="list"):
        coerce_value('{"a": 1}', [0])
    with pytest.raises(InvalidValueError, match="empty"):
        coerce_value("  ", "an instruction")


OLD = "def add(x, y=1):\n    return x - y\n"


def test_code_must_compile_and_keep_signature():
    fixed = check_code("```python\ndef add(x, y=2):\n    return x + y\n```", OLD)
    assert fixed.startswith("def add(x, y=2)")
    assert (
        coerce_value("def add(x, y):\n    return x + y", OLD) == "def add(x, y):\n    return x + y"
    )
    with pytest.raises(InvalidValueError, match="does not compile"):
        check_code("def add(x, y):\n    return x +", OLD)
    with pytest.raises(InvalidValueError, match="signature"):
        check_code("def add(x):\n    return x", OLD)
    with pytest.raises(InvalidValueError, match="signature"):
        check_code("def plus(x, y):\n    return x + y", OLD)
    with pytest.raises(InvalidValueError, match="no function"):
        check_code("x = 1", OLD)


def test_function_signature():
    assert function_signature("def f(a, *args, b, **kw): pass") == "f(a, *args, b, **kw)"
    assert function_signature("def f(a, /, b, *, c): pass") == "f(a, /, b, *, c)"
    assert function_signature("not python (") is None


def test_same_value():
    assert same_value(1.0, 1.0000000000001)
    assert not same_value(1.0, 1.1)
    assert same_value("a  b\n", "a b")
    assert not same_value(True, 1)
