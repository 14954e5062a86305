"""The one rule for new parameter values (optiforge.trace.values), and the cases where the
trace engine and the optimizers used to disagree before it owned the rule."""

from __future__ import annotations

import pytest

from optiforge.trace import CodeError, ParameterNode, ValueTypeError, coerce_value, node
from optiforge.trace.values import check_source, looks_like_code


@pytest.mark.parametrize(
    ("current", "raw", "expected"),
    [
        # bools: yes/no and 0/1 were accepted by the optimizers only
        (False, "yes", True),
        (True, "No", False),
        (False, " 'TRUE' ", True),
        (True, "0", False),
        (False, 1, True),
        (True, 0, False),
        # numbers: separators, quotes and one number in prose were optimizer-only
        (1, "1,000", 1000),
        (1.0, "`2.5`", 2.5),
        (1.0, "w = -3e-1", -0.3),
        (1, "about 7", 7),
        (1.0, [2.5], 2.5),
        (1, "12345678901234567890123", 12345678901234567890123),  # exact, not via float
        (1, "7.0", 7),
        # containers: sets and tuples from any sequence were trace-only
        ({1}, "[1, 2]", {1, 2}),
        ((1,), {"a"}, ("a",)),
        # a value of some other type is accepted when it has that type
        (b"x", b"y", b"y"),
    ],
)
def test_disagreements_are_settled(current, raw, expected):
    got = coerce_value(current, raw, "p")
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("current", "raw", "message"),
    [
        (1.0, "nan", "finite"),  # trace used to accept NaN and inf for a float
        (1.0, "-inf", "finite"),
        (1.0, "1 or 2", "not a number"),
        (1, True, "bool"),
        (True, 2, "true or false"),
        ("prompt", "   ", "empty"),  # trace used to accept empty text
        ("prompt", ["a", "b"], "not text"),  # the optimizers used to write JSON text
        ("prompt", {"a": 1}, "not text"),
        (b"x", "y", "not a bytes"),  # the optimizers refused every other type
    ],
)
def test_rejections_say_why(current, raw, message):
    with pytest.raises(ValueTypeError, match=message) as info:
        coerce_value(current, raw, "p")
    assert "'p'" in str(info.value)


def test_empty_text_stays_allowed_for_empty_text_and_direct_assignment():
    assert coerce_value("", "", "p") == ""
    p = ParameterNode("prompt")
    p.value = ""  # assignment is not checked
    assert p.value == ""


OLD = "def add(x, y=1):\n    return x - y\n"


def test_text_holding_a_def_is_checked_as_code():
    p = ParameterNode(OLD, name="fn")
    assert looks_like_code(p.value)
    assert p.set("def add(x, y):\n    return x + y\n").startswith("def add(x, y)")
    with pytest.raises(CodeError, match="signature: expected add\\(x, y\\), got add\\(x\\)"):
        p.set("def add(x):\n    return x")
    with pytest.raises(CodeError, match="does not compile"):
        p.set("def add(x, y):\n    return (")
    with pytest.raises(CodeError, match="must be text"):
        check_source(3, OLD, "fn")
    # is_code=False: plain text, no compile check
    assert coerce_value(OLD, "not code", "fn", is_code=False) == "not code"
    # is_code=True: checked even when the current text is not recognisably a def
    with pytest.raises(CodeError, match="no function"):
        coerce_value("", "x = 1", "fn", is_code=True)


def test_nodes_count_as_their_values():
    assert coerce_value(1, node("4")) == 4
    assert ParameterNode(1.0).set(node(2)) == 2.0
