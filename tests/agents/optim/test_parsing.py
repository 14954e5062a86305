"""Reply parsing and type checks: malformed and partial replies from small models."""

from __future__ import annotations

import pytest

from optiforge.agents.optim.checks import is_code, same_value, validate
from optiforge.agents.optim.errors import InvalidValueError, ReplyError
from optiforge.agents.optim.parsing import (
    extract_json_object,
    extract_tagged,
    match_name,
    parse_suggestion,
)
from optiforge.trace import ParameterNode, bundle
from optiforge.trace.values import function_signature

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


def v(raw, current):
    """What an optimizer does with a suggestion for a parameter holding ``current``."""
    return validate(ParameterNode(current, name="p"), raw)


def test_numbers_stay_numbers():
    assert v("2.5", 1.0) == 2.5
    assert v("w = -3e-1", 1.0) == -0.3
    assert v("`2.5`", 1.0) == 2.5
    assert v("```\n2.5\n```", 1.0) == 2.5
    assert v(4, 1.0) == 4.0 and isinstance(v(4, 1.0), float)
    assert v("7", 3) == 7 and isinstance(v("7", 3), int)
    assert v(7.0, 3) == 7
    with pytest.raises(InvalidValueError, match="whole number"):
        v(7.5, 3)
    with pytest.raises(InvalidValueError, match="number"):
        v("bigger", 1.0)
    with pytest.raises(InvalidValueError, match="number"):
        v("between 1 and 2", 1.0)
    with pytest.raises(InvalidValueError, match="finite"):
        v("nan", 1.0)
    with pytest.raises(InvalidValueError, match="bool"):
        v(True, 1.0)


def test_other_kinds():
    assert v("true", False) is True
    assert v("yes", False) is True
    assert v("[1, 2]", [0]) == [1, 2]
    assert v("```json\n[1, 2]\n```", [0]) == [1, 2]
    assert v({"a": 1}, {"b": 2}) == {"a": 1}
    assert v(3, "text") == "3"
    # text for a text parameter is kept as written, fence and all
    assert v("```\nkeep\n```", "prompt") == "```\nkeep\n```"
    with pytest.raises(InvalidValueError):
        v("maybe", False)
    with pytest.raises(InvalidValueError, match="list"):
        v('{"a": 1}', [0])
    with pytest.raises(InvalidValueError, match="empty"):
        v("  ", "an instruction")


OLD = "def add(x, y=1):\n    return x - y\n"


def test_code_text_must_compile_and_keep_signature():
    fixed = v("```python\ndef add(x, y=2):\n    return x + y\n```", OLD)
    assert fixed.startswith("def add(x, y=2)")
    assert v("    def add(x, y):\n        return x + y", OLD) == "def add(x, y):\n    return x + y"
    with pytest.raises(InvalidValueError, match="does not compile"):
        v("def add(x, y):\n    return x +", OLD)
    with pytest.raises(InvalidValueError, match="signature"):
        v("def add(x):\n    return x", OLD)
    with pytest.raises(InvalidValueError, match="signature"):
        v("def plus(x, y):\n    return x + y", OLD)
    with pytest.raises(InvalidValueError, match="no function"):
        v("x = 1", OLD)


def test_code_of_a_bundle_is_checked_once_by_compiling():
    """The optimizer's check is the CodeParameter's compile, not a second copy of it."""

    @bundle(trainable=True)
    def add(x, y=1):
        return x - y

    calls = []
    real = add.compile_source
    add.compile_source = lambda src: calls.append(src) or real(src)
    code = add.code
    assert is_code(code)
    new = validate(code, "```python\ndef add(x, y=1):\n    return x + y\n```")
    assert new == "def add(x, y=1):\n    return x + y" and len(calls) == 1
    with pytest.raises(InvalidValueError, match="changes its signature"):
        validate(code, "def add(x):\n    return x")


def test_function_signature():
    assert function_signature("def f(a, *args, b, **kw): pass") == "f(a, *args, b, **kw)"
    assert function_signature("def f(a, /, b, *, c): pass") == "f(a, /, b, *, c)"
    assert function_signature("not python (") is None


def test_same_value():
    assert same_value(1.0, 1.0000000000001)
    assert not same_value(1.0, 1.1)
    assert same_value("a  b\n", "a b")
    assert not same_value(True, 1)


def test_collect_takes_trace_parameters_only():
    from optiforge.agents.optim.errors import OptimizerError
    from optiforge.agents.optim.params import backward, collect
    from optiforge.trace import Module, node

    a = node(1, name="a", trainable=True)
    frozen = node(2, name="f", trainable=True)
    frozen.trainable = False
    plain = node(3, name="plain")

    class M(Module):
        def __init__(self):
            self.a = a

    assert collect([a, plain, frozen, a]) == [a]
    assert collect(M()) == [a]
    with pytest.raises(OptimizerError, match="is not a trace node"):
        collect([a, 3])
    with pytest.raises(OptimizerError, match="list of trainable nodes"):
        collect("a")
    with pytest.raises(OptimizerError, match="cannot send feedback from int"):
        backward(3, "bigger")
