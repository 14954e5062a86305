"""backward(): order, combine rules, propagators, minimal subgraphs."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest

from optiforge.trace import (
    FeedbackError,
    GraphCycleError,
    GraphPropagator,
    Node,
    Propagator,
    bundle,
    combine_feedback,
    feedback_subgraphs,
    node,
    topological_order,
)


@bundle
def inc(x):
    return x + 1


def test_topological_order_puts_children_before_parents():
    a = node(1)
    b = a + 1
    c = a * 2
    d = b + c
    order = topological_order(d)
    assert order[0] is d and set(order) == {d, b, c, a, d.parents[0], b.parents[1], c.parents[1]}
    pos = {n: i for i, n in enumerate(order)}
    for n in order:
        for p in n.parents:
            assert pos[n] < pos[p]


def test_chain_of_100k_nodes_needs_no_recursion():
    limit = sys.getrecursionlimit()
    x = node(0)
    for _ in range(100_000):
        x = inc(x)
    sys.setrecursionlimit(200)
    try:
        record = x.backward("more")
    finally:
        sys.setrecursionlimit(limit)
    assert x.value == 100_000
    assert len(record.order) == 100_001
    root = record.order[-1]
    assert root.value == 0 and root.feedback == "more"


def test_diamond_keeps_one_copy_of_the_feedback():
    a = node(1, trainable=True)
    d = (a + 1) * (a + 2)
    d.backward("smaller")
    assert a.feedback == "smaller"
    assert len(a.feedback_records) == 1


def test_feedback_accumulates_over_backward_calls_until_zeroed():
    p = node(2, trainable=True)
    y1 = p * 3
    y2 = p + 1
    y1.backward("too big")
    y2.backward("too small")
    assert p.feedback == "too big\n\ntoo small"
    assert len(p.feedback_records) == 2
    p.zero_feedback()
    assert p.feedback is None and p.feedback_records == []


@dataclass
class Score:
    value: float

    def combine(self, other):
        return Score(self.value + other.value)


@dataclass(frozen=True)
class Votes:
    n: int

    def __add__(self, other):
        return Votes(self.n + other.n)


def test_combine_rules():
    assert combine_feedback(None, "a") == "a" and combine_feedback("a", None) == "a"
    assert combine_feedback("a", "b") == "a\n\nb"
    assert combine_feedback("", "b") == "b"
    assert combine_feedback(1, 2.5) == 3.5
    assert combine_feedback({"x": 1, "t": "a"}, {"x": 2, "y": 3, "t": "b"}) == {
        "x": 3,
        "y": 3,
        "t": "a\n\nb",
    }
    assert combine_feedback([1], [2]) == [1, 2]
    assert combine_feedback(Score(1), Score(2)) == Score(3)
    assert combine_feedback(Votes(1), Votes(4)) == Votes(5)
    with pytest.raises(FeedbackError, match="cannot combine feedback of type str with int"):
        combine_feedback("a", 1)
    with pytest.raises(FeedbackError):
        combine_feedback(object(), object())
    with pytest.raises(FeedbackError, match="true/false"):
        combine_feedback(True, True)
    with pytest.raises(FeedbackError, match="true/false"):
        combine_feedback(1, False)


def test_numeric_feedback_over_two_outputs_is_summed():
    p = node(1.0, trainable=True)
    (p * 2).backward(0.5)
    (p + 2).backward(0.25)
    assert p.feedback == 0.75


def test_user_type_feedback_flows_and_combines():
    p = node(1, trainable=True)
    (p + 1).backward(Votes(2))
    (p + 2).backward(Votes(3))
    assert p.feedback == Votes(5)


class HalvingPropagator(Propagator):
    """A numeric per-edge propagator: each edge passes half of the child's feedback."""

    def __init__(self):
        self.calls = []

    def propagate(self, child, feedback):
        self.calls.append(child)
        return {p: feedback / 2 for p in child.parents}


def test_custom_propagator_is_called_once_per_node_with_combined_feedback():
    a = node(1.0, trainable=True)
    b = a + 1  # parents: a, const
    c = a * b  # parents: a, b
    prop = HalvingPropagator()
    c.backward(8.0, propagator=prop)
    assert c.feedback == 8.0
    assert b.feedback == 4.0
    # a gets 4 from c directly and 2 from b: combined by summing in the same pass.
    assert a.feedback == 6.0
    assert prop.calls.count(b) == 1 and prop.calls.count(c) == 1
    assert a not in prop.calls  # roots have no parents to propagate to


class OnlyFirstParent(Propagator):
    def propagate(self, child, feedback):
        return {child.parents[0]: f"{feedback} via {child.op.name}"}


def test_propagator_may_leave_edges_out():
    a, b = node(1), node(2)
    y = a + b
    y.backward("fb", propagator=OnlyFirstParent())
    assert a.feedback == "fb via add" and b.feedback is None


class Broken(Propagator):
    def __init__(self, result):
        self.result = result

    def propagate(self, child, feedback):
        return self.result


def test_bad_propagator_output_is_a_clear_error():
    y = node(1) + 1
    with pytest.raises(FeedbackError, match="must return a mapping"):
        y.backward("x", propagator=Broken(["no"]))
    with pytest.raises(FeedbackError, match="not a parent"):
        y.backward("x", propagator=Broken({node(5): "stray"}))


def test_cycle_is_detected():
    a = node(1)
    b = a + 1
    c = b + 1
    a.parents = (c,)  # only possible by editing parents by hand
    with pytest.raises(GraphCycleError, match="own ancestor"):
        c.backward("x")
    with pytest.raises(GraphCycleError):
        topological_order(c)
    x = node(1)
    y = x + 1
    z = y * 2
    out = z - 1
    x.parents = (y,)  # a cycle above the output, not through it
    with pytest.raises(GraphCycleError, match="own ancestor"):
        out.backward("x")
    assert out.feedback is None  # nothing was changed
    s = node(0)
    s.parents = (s,)
    with pytest.raises(GraphCycleError):
        s.backward("x")


def test_minimal_subgraph_excludes_nodes_off_the_path():
    p = node(2, trainable=True, name="p")
    q = node(5, trainable=True, name="q")
    x = node(10, name="x")
    side = x * 3  # does not depend on p
    hp = p + 1
    y = hp * side + q
    y.backward("fb")
    sub = p.feedback_records[0].subgraph(p)
    assert sub.nodes == [p, hp, y.parents[0], y]
    assert side not in sub.nodes and x not in sub.nodes and q not in sub.nodes
    assert side in sub.inputs and q in sub.inputs
    assert sub.output is y and sub.feedback == "fb"
    both = p.feedback_records[0].subgraph(p, q)
    assert q in both.nodes and both.parameters == [p, q]


def test_feedback_subgraphs_groups_parameters_per_backward_pass():
    p = node(1, trainable=True, name="p")
    q = node(2, trainable=True, name="q")
    y1 = p + q
    y2 = q * 2
    y1.backward("one")
    y2.backward("two")
    subs = feedback_subgraphs([p, q])
    assert [s.feedback for s in subs] == ["one", "two"]
    assert subs[0].parameters == [p, q] and subs[1].parameters == [q]
    assert subs[1].nodes[-1] is y2


def test_default_propagator_is_graph_propagator():
    assert isinstance(GraphPropagator(), Propagator)
    y = node(1) + 1
    rec = y.backward("x")
    assert rec.output is y and rec.feedback == "x"
    with pytest.raises(TypeError):
        from optiforge.trace import backward

        backward("not a node", "x")
    assert isinstance(y, Node)


def test_failed_combination_changes_nothing():
    p = node(1, trainable=True)
    (p + 1).backward("text first")
    y = p * 3
    with pytest.raises(FeedbackError):
        y.backward(2.0)
    assert y.feedback is None and y.parents[1].feedback is None
    assert p.feedback == "text first" and len(p.feedback_records) == 1
