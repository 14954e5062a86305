"""TextGrad-style optimizer with a scripted LLM on a real trace graph."""

from __future__ import annotations

import json

from optiforge.agents.optim import TextGrad
from optiforge.llm.testing import ScriptedLLM
from optiforge.trace.bundle import bundle
from optiforge.trace.nodes import node


@bundle
def scale(x, factor):
    """Multiply x by factor."""
    return x * factor


def scripted(step_reply: str):
    def reply(messages, **kw):
        system = messages[0]["content"]
        if "like a gradient" in system:
            user = messages[-1]["content"]
            target = user.rsplit("the input `", 1)[1].split("`", 1)[0]
            return f"GRADIENT for {target}: make it larger"
        return step_reply

    return reply


def test_gradients_flow_only_along_trainable_edges_then_step_rewrites():
    factor = node(2.0, name="factor", trainable=True, constraint="factor > 0")
    x = node(3.0, name="x")
    llm = ScriptedLLM(scripted('{"reasoning": "larger", "suggestion": {"factor": 3.0}}'))
    opt = TextGrad([factor], llm, memory=2)
    out = scale(x, factor) + 1.0
    opt.zero_feedback()
    opt.backward(out, "The result should be 10.")
    gradient_calls = [r for r in llm.requests if "like a gradient" in r.system]
    # add(x=scale, y=1.0): only the first input leads to a parameter; scale(x, factor): only factor.
    assert len(gradient_calls) == 2
    first, second = gradient_calls
    assert "The result should be 10." in first.prompt
    assert "add0 = add(x=scale0, y=float0)" in first.prompt
    assert "Returns x + y." in first.prompt and "add0 = 7.0" in first.prompt
    assert "Multiply x by factor." in second.prompt
    assert "GRADIENT for scale0" in second.prompt  # the upstream gradient is this edge's feedback
    assert "factor (trainable) = 2.0" in second.prompt
    assert factor.feedback.startswith("GRADIENT for factor")

    report = opt.step()
    assert report.ok and factor.value == 3.0
    assert report.changes[0].reason == "larger"
    step_req = llm.requests[-1]
    assert "# Constraints\nfactor > 0" in step_req.prompt
    assert "GRADIENT for factor" in step_req.prompt
    assert report.detail["gradients"]["factor"].startswith("GRADIENT")
    assert opt.gradient_memory["factor"] == [report.detail["gradients"]["factor"]]
    assert factor.feedback is None  # the step consumed the feedback

    # Second round: the first gradient shows up as memory.
    opt.zero_feedback()
    opt.backward(scale(x, factor) + 1.0, "Now it should be 12.")
    opt.step()
    assert "Feedback from earlier steps" in llm.requests[-1].prompt
    assert len(opt.gradient_memory["factor"]) == 2


def test_step_without_feedback_changes_nothing():
    p = node("hello", name="greeting", trainable=True)
    opt = TextGrad([p], ScriptedLLM([]))
    report = opt.step()
    assert report.ok and report.changes == []
    assert "backward" in report.reasoning


def test_trainable_code_is_rewritten_and_checked(tmp_path):
    @bundle(trainable=True)
    def double(x):
        return x + 2

    bad = json.dumps(
        {"reasoning": "r", "suggestion": {"__code_double": "def double(x, y):\n    return 2 * x"}}
    )
    good = json.dumps(
        {"reasoning": "r", "suggestion": {"__code_double": "def double(x):\n    return 2 * x"}}
    )
    replies = iter([bad, good])

    def reply(messages, **kw):
        if "like a gradient" in messages[0]["content"]:
            return "It adds 2 instead of doubling."
        return next(replies)

    llm = ScriptedLLM(reply)
    code = double.code
    opt = TextGrad([code], llm, structured=False)
    out = double(node(5, name="x"))
    opt.backward(out, "expected 10")
    report = opt.step()
    assert report.ok and report.attempts == 2
    assert any("signature" in e for e in report.errors)
    assert double(node(5)).value == 10

    path = opt.save(tmp_path / "tg.json")
    code.set("def double(x):\n    return x + 2\n")
    opt2 = TextGrad([code], ScriptedLLM([]))
    opt2.load(path)
    assert double(node(5)).value == 10
    assert opt2.gradient_memory == opt.gradient_memory
