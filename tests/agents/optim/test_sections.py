"""OptoPrime's prompt sections rendered from feedback subgraphs."""

from __future__ import annotations

import pytest

from optiforge.agents.optim.sections import SECTION_NAMES, render_sections
from optiforge.trace import ExecutionError, Module, bundle, feedback_subgraphs, node
from optiforge.trace.feedback import backward


@bundle
def combine(text, n):
    """Repeat text n times."""
    return text * n


@bundle(trainable=True)
def fragile(x):
    """Invert x."""
    return 1 / x


class Pipeline(Module):
    def __init__(self):
        self.prompt = node("ab", trainable=True, description="the text", constraint="two letters")
        self.times = node(2, trainable=True, constraint="between 1 and 5")

    def forward(self, suffix):
        return combine(self.prompt, self.times) + suffix


def test_sections_for_a_pipeline():
    m = Pipeline()
    out = m(node("!"))
    assert out.value == "abab!"
    out.backward("Make it longer.")
    s = render_sections(feedback_subgraphs(m.parameters()))
    assert s.code.splitlines() == [
        "combine0 = combine(text=prompt, n=times)",
        "add0 = add(x=combine0, y=str0)",
    ]
    assert s.documentation.splitlines() == [
        "[combine] Repeat text n times.",
        "[add] Returns x + y.",
        "[prompt] the text",
    ]
    assert s.variables.splitlines() == ["(str) prompt=ab", "(int) times=2"]
    assert s.constraints.splitlines() == ["(prompt) two letters", "(times) between 1 and 5"]
    assert s.inputs == "(str) str0=!"
    assert s.others == "(str) combine0=abab"
    assert s.outputs == "(str) add0=abab!"
    assert s.feedback == "Make it longer."
    assert list(s.parameters) == ["prompt", "times"]
    assert s.names["add0"] is out
    assert list(s.as_dict()) == list(SECTION_NAMES)
    assert s.text().startswith("#Code\ncombine0 = combine(text=prompt, n=times)")
    assert str(s) == s.text()


def test_optimizing_one_parameter_shows_the_other_as_an_input():
    m = Pipeline()
    out = m(node("!"))
    out.backward("fb")
    s = render_sections(feedback_subgraphs([m.times]))
    assert s.variables == "(int) times=2"
    assert "(str) prompt=ab" in s.inputs.splitlines()
    assert list(s.parameters) == ["times"]


def test_minibatch_lists_each_output_and_its_feedback():
    m = Pipeline()
    outs = [m(node(sfx)) for sfx in ("!", "?")]
    outs[0].backward("longer")
    outs[1].backward("shorter")
    s = render_sections(feedback_subgraphs(m.parameters()))
    assert s.outputs.splitlines() == ["(str) add0=abab!", "(str) add1=abab?"]
    assert s.feedback.splitlines() == ["[add0] longer", "[add1] shorter"]
    assert s.code.count("combine(") == 2


def test_exception_output_shows_the_traceback():
    x = node(0)
    with pytest.raises(ExecutionError) as info:
        fragile(x)
    info.value.exception_node.backward("x can be zero; handle it")
    s = render_sections(feedback_subgraphs([fragile.code]))
    assert s.code == "fragile0 = fragile(x=int0, __code=__code_fragile)  # raised ZeroDivisionError"
    assert s.outputs.startswith("(ZeroDivisionError) fragile0=Traceback")
    assert "return 1 / x" in s.outputs
    assert s.variables.startswith("(code) __code_fragile:def fragile(x):")
    assert s.feedback == "x can be zero; handle it"
    fragile.code.zero_feedback()


def test_long_values_are_cut_but_variables_are_not():
    big = node("x" * 5000, trainable=True, name="big")
    out = big + node("y" * 5000)
    out.backward("fb")
    s = render_sections(feedback_subgraphs([big]), max_value_chars=100)
    assert len(s.variables) > 5000
    assert len(s.inputs) < 200 and "more chars" in s.inputs
    assert len(s.outputs) < 200


def test_structured_feedback_is_rendered_as_json():
    p = node(1, trainable=True, name="p")
    (p + 1).backward({"score": 0.5, "hint": "raise p"})
    s = render_sections(feedback_subgraphs([p]))
    assert '"score": 0.5' in s.feedback and '"hint": "raise p"' in s.feedback


def test_one_subgraph_renders_like_a_list_of_one():
    m = Pipeline()
    out = m(node("!"))
    rec = out.backward("fb")
    sub = rec.subgraph(m.prompt)
    assert render_sections(sub).text() == render_sections([sub]).text()
    assert render_sections(sub).variables == "(str) prompt=ab"


def test_a_parameter_the_output_does_not_depend_on_still_shows_the_output():
    # As when a run stops at its deadline before any step read the prompt: the output and
    # its feedback are rendered, with no code for the parameter.
    m = Pipeline()
    out = combine(node("xy"), node(1)) + "!"
    record = backward(out, "Too late: no answer.")
    s = render_sections(record.subgraph(m.prompt), parameters=[m.prompt])
    assert s.code == ""
    assert s.outputs.startswith("(str) ") and s.outputs.endswith("=xy!")
    assert s.feedback == "Too late: no answer."


def test_inputs_may_keep_more_room_than_the_steps_values():
    m = Pipeline()
    out = m(node("!" * 300))
    out.backward("ok")
    (sub,) = feedback_subgraphs([m.prompt])
    s = render_sections(sub, max_value_chars=50, max_input_chars=400)
    assert "!" * 300 in s.inputs  # the input whole
    assert "more chars]" in s.outputs and len(s.outputs) < 100  # the values cut at 50
    assert render_sections(sub, max_value_chars=50).inputs.endswith("more chars]")
