"""Nodes and recorded operators."""

from __future__ import annotations

import copy
import pickle

import pytest

from optiforge.trace import (
    ExecutionError,
    MessageNode,
    Node,
    ParameterNode,
    TraceError,
    ValueTypeError,
    coerce_value,
    is_node,
    is_tracing,
    no_trace,
    node,
    tracing,
    value_of,
)


def _check(result, value, op, parents):
    assert isinstance(result, MessageNode)
    assert result.value == value
    assert result.op.name == op
    assert result.parents == tuple(parents)


def test_arithmetic_operators_record_messages():
    a, b = node(7), node(2)
    _check(a + b, 9, "add", (a, b))
    _check(a - b, 5, "sub", (a, b))
    _check(a * b, 14, "mul", (a, b))
    _check(a / b, 3.5, "truediv", (a, b))
    _check(a // b, 3, "floordiv", (a, b))
    _check(a % b, 1, "mod", (a, b))
    _check(a**b, 49, "pow", (a, b))
    _check(a & b, 2, "and", (a, b))
    _check(a | b, 7, "or", (a, b))
    _check(a ^ b, 5, "xor", (a, b))
    _check(a << b, 28, "lshift", (a, b))
    _check(a >> b, 1, "rshift", (a, b))
    _check(-a, -7, "neg", (a,))
    _check(+a, 7, "pos", (a,))
    n = node(-3)
    _check(abs(n), 3, "abs", (n,))
    _check(~a, -8, "invert", (a,))


def test_plain_operand_becomes_constant_input_both_sides():
    a = node(10)
    r = a - 3
    assert r.value == 7 and r.parents[0] is a
    assert type(r.parents[1]) is Node and r.parents[1].value == 3
    r2 = 3 - a
    assert r2.value == -7 and r2.parents[1] is a and r2.parents[0].value == 3
    assert r2.argnames == ("x", "y")


def test_comparisons_are_recorded_and_equality_is_identity():
    a, b = node(1), node(2)
    for r, v in ((a < b, True), (a <= b, True), (a > b, False), (a >= b, False)):
        assert isinstance(r, MessageNode) and r.value is v
    assert (a == node(1)) is False
    assert a.eq(node(1)).value is True
    assert a.ne(b).value is True
    d = {a: "x", b: "y"}
    assert d[a] == "x"


def test_indexing_attributes_call_len_iteration_format():
    d = node({"k": [1, 2, 3]})
    item = d["k"]
    _check(item, [1, 2, 3], "getitem", (d, item.parents[1]))
    assert item.argnames == ("x", "index")
    s = node("Hello {name}")
    up = s.upper()
    assert isinstance(up, MessageNode) and up.value == "HELLO {NAME}"
    assert up.op.name == "call" and up.parents[0].op.name == "getattr"
    f = s.format(name=node("Ada"))
    assert f.value == "Hello Ada" and f.argnames == ("template", "name")
    assert s.attr("upper").op.name == "getattr"
    ln = node([1, 2]).len()
    assert ln.value == 2 and ln.op.name == "len"
    assert len(node([1, 2])) == 2
    items = list(node(["a", "b"]))
    assert [i.value for i in items] == ["a", "b"]
    assert all(i.op.name == "iter" for i in items)
    fn = node(lambda x, y: x * y)
    c = fn(node(3), y=4)
    assert c.value == 12 and c.argnames == ("fn", "args[0]", "y")
    assert node([1, 2]).contains(2).value is True
    assert 2 in node([1, 2])
    pct = node("%d apples") % node(3)
    assert pct.value == "3 apples"


def test_protocol_methods_read_values_without_recording():
    n = node(0)
    assert not n and bool(node(1))
    assert str(node("x")) == "x"
    assert f"{node(3.14159):.2f}" == "3.14"
    assert repr(n) == "Node(name='int', value=0)"


def test_private_attributes_are_not_forwarded():
    n = node({"a": 1})
    with pytest.raises(AttributeError):
        n._secret  # noqa: B018
    with pytest.raises(AttributeError, match="without attribute 'nope'"):
        n.nope  # noqa: B018
    assert not hasattr(node(1), "__array__")


def test_operator_error_raises_execution_error_with_node():
    a = node(1)
    with pytest.raises(ExecutionError) as info:
        a + "x"
    err = info.value.exception_node
    assert isinstance(err.value, TypeError)
    assert err.parents[0] is a
    assert "add raised TypeError" in err.message


def test_node_constructor_rules():
    p = node(1, trainable=True)
    assert node(p) is p and node(p, trainable=True) is p
    with pytest.raises(TraceError, match="already a non-trainable node"):
        node(node(1), trainable=True)
    with pytest.raises(TraceError, match="only meaningful"):
        node(1, constraint="x")
    with pytest.raises(TraceError, match="cannot wrap"):
        Node(node(1))
    assert is_node(p) and not is_node(1)
    assert value_of(p) == 1 and value_of(5) == 5
    assert node(1, name="one").name == "one" and node("s").name == "str"


def test_parameter_value_set_and_validate():
    p = ParameterNode(3, name="k", description="a count", constraint="positive")
    assert p.trainable and p.kind == "parameter"
    p.value = 4
    assert p.value == 4
    assert p.set("5") == 5 and p.value == 5
    with pytest.raises(ValueTypeError, match="not a number"):
        p.set("five")
    assert p.value == 5
    p.trainable = False
    assert not p.trainable


@pytest.mark.parametrize(
    ("current", "raw", "expected"),
    [
        (1, "3", 3),
        (1, 4.0, 4),
        (1.5, "2", 2.0),
        (1.5, 3, 3.0),
        (True, "false", False),
        ("text", 5, "5"),
        ([1], "[2, 3]", [2, 3]),
        ([1], "['a']", ["a"]),
        ({"a": 1}, '{"b": 2}', {"b": 2}),
        ((1, 2), [3, 4], (3, 4)),
        (None, {"x": 1}, {"x": 1}),
    ],
)
def test_coerce_value_accepts(current, raw, expected):
    got = coerce_value(current, raw)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("current", "raw"),
    [
        (1, "1.5"),
        (1, 2.5),
        (1, True),
        (1.0, "abc"),
        (True, "maybe"),
        (True, 2),
        (1.0, "nan"),
        (1.0, "inf"),
        (1.0, "between 1 and 2"),
        ("t", {"a": 1}),
        ("t", ""),
        ([1], "{oops"),
        ({}, "[1]"),
        ("t", [1]),
    ],
)
def test_coerce_value_rejects(current, raw):
    with pytest.raises(ValueTypeError):
        coerce_value(current, raw, "p")


def test_no_trace_returns_parentless_nodes_and_restores():
    a = node(1)
    assert is_tracing()
    with no_trace():
        assert not is_tracing()
        r = a + 1
        assert type(r) is Node and r.parents == () and r.value == 2
        with tracing():
            assert (a + 1).parents[0] is a
        assert not is_tracing()
    assert is_tracing()
    assert (a + 1).parents[0] is a


def test_copy_and_pickle_of_nodes_work():
    p = node([1, 2], trainable=True, name="xs")
    q = copy.deepcopy(p)
    assert q is not p and q.value == [1, 2] and q.name == "xs"
    r = pickle.loads(pickle.dumps(p))
    assert r.value == [1, 2] and isinstance(r, ParameterNode)


def test_round_is_recorded_and_int_float_read_values():
    x = node(2.567)
    r = round(x, 1)
    assert isinstance(r, MessageNode) and r.value == 2.6 and r.op.name == "round"
    assert round(x).value == 3
    assert int(node(3.9)) == 3 and float(node(2)) == 2.0
