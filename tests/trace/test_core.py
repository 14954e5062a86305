"""Core semantics: nodes, bundle, Module, backward and the rendered sections."""

from __future__ import annotations

import pytest

from optiforge.agents.optim.sections import render_sections
from optiforge.trace import (
    ExceptionNode,
    ExecutionError,
    MessageNode,
    Module,
    Node,
    ParameterNode,
    bundle,
    feedback_subgraphs,
    node,
)


class Agent(Module):
    def __init__(self):
        self.offset = node(1, trainable=True, description="added at the end")

    @bundle(trainable=True)
    def scale(self, x):
        """Multiply x."""
        return x * 2

    def forward(self, x):
        return self.scale(x) + self.offset


def test_issue_example_runs_and_every_ancestor_gets_feedback():
    agent = Agent()
    x = node(3)
    y = agent(x)
    assert isinstance(y, MessageNode)
    assert y.value == 7
    y.backward("The output should be 14.")
    scaled = y.parents[0]
    code = agent.scale.code
    for n in (y, scaled, x, agent.offset, code):
        assert n.feedback == "The output should be 14."
    assert agent.parameters() == [agent.offset, code]
    assert list(agent.named_parameters()) == ["offset", "scale.__code"]
    assert len(agent.offset.feedback_records) == 1


def test_rendered_sections_hold_code_variables_inputs_outputs_feedback():
    agent = Agent()
    y = agent(node(3))
    y.backward("The output should be 14.")
    s = render_sections(feedback_subgraphs(agent.parameters()))
    assert s.code.splitlines() == [
        "scale0 = scale(x=int0, __code=__code_scale)",
        "add0 = add(x=scale0, y=offset)",
    ]
    assert "[scale] Multiply x." in s.documentation
    assert "[offset] added at the end" in s.documentation
    assert "(int) offset=1" in s.variables
    assert "(code) __code_scale:def scale(self, x):" in s.variables
    assert "return x * 2" in s.variables
    assert s.inputs == "(int) int0=3"
    assert s.others == "(int) scale0=6"
    assert s.outputs == "(int) add0=7"
    assert s.feedback == "The output should be 14."
    assert s.parameters == {"offset": agent.offset, "__code_scale": agent.scale.code}
    text = s.text()
    heads = [line for line in text.splitlines() if line.startswith("#")]
    assert heads == [
        "#Code",
        "#Documentation",
        "#Variables",
        "#Constraints",
        "#Inputs",
        "#Others",
        "#Outputs",
        "#Feedback",
    ]


def test_trainable_code_swap_is_used_on_next_call():
    agent = Agent()
    agent.scale.code.value = "def scale(self, x):\n    return x * 5\n"
    assert agent(node(3)).value == 16
    # Each instance owns its code: another Agent still runs the original.
    assert Agent()(node(3)).value == 7


def test_invalid_new_code_becomes_exception_node_not_crash():
    agent = Agent()
    agent.scale.code.value = "def scale(self, x):\n    return x *\n"
    with pytest.raises(ExecutionError) as info:
        agent(node(3))
    err = info.value.exception_node
    assert isinstance(err, ExceptionNode)
    assert "syntax error" in err.message
    assert agent.scale.code in err.parents
    err.backward("fix the syntax")
    assert agent.scale.code.feedback == "fix the syntax"


def test_exception_inside_bundle_carries_traceback():
    @bundle
    def divide(a, b):
        return a / b

    with pytest.raises(ExecutionError) as info:
        divide(node(1), node(0))
    err = info.value.exception_node
    assert isinstance(err.value, ZeroDivisionError)
    assert "ZeroDivisionError" in err.traceback
    assert "return a / b" in err.traceback
    assert [p.value for p in err.parents] == [1, 0]
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_node_identity_equality_and_recorded_comparison():
    a, b = node(2), node(2)
    assert a != b and a == a
    assert len({a, b}) == 2
    eq = a.eq(b)
    assert eq.value is True and eq.parents == (a, b)
    lt = a < 3
    assert lt.value is True and isinstance(lt, MessageNode)


def test_parameter_node_kinds():
    p = node("hello", trainable=True, constraint="short")
    assert isinstance(p, ParameterNode) and p.trainable and p.constraint == "short"
    plain = node(1)
    assert type(plain) is Node and not plain.trainable
    assert node(plain) is plain
