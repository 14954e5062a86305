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


@bundle
def answer(instruction, problem):
    """Answer the problem following the instruction."""
    return f"{instruction[:10]} ... {problem[-10:]}"


def test_gradient_requests_fit_the_prompt_cap_keeping_the_trainable_input_and_feedback(caplog):
    instruction = node("Write the model. " * 60, name="instruction", trainable=True)  # 1,020
    problem = node("A long table row. " * 600, name="problem")  # 10,800 characters
    llm = ScriptedLLM(scripted('{"reasoning": "r", "suggestion": {"instruction": "Be exact."}}'))
    feedback = "Wrong: the demand of row 3 is missing. " * 20  # 800 characters
    opt = TextGrad([instruction], llm, value_chars=5000, max_prompt_chars=6000)
    opt.backward(answer(instruction, problem), feedback)
    [request] = [r for r in llm.requests if "like a gradient" in r.system]
    assert sum(len(m["content"]) for m in request.messages) <= 6000
    assert instruction.value in request.prompt  # the trainable input whole
    assert feedback.strip() in request.prompt  # and the feedback
    assert "A long table row." in request.prompt and "(truncated)" in request.prompt
    assert "over max_prompt_chars" not in caplog.text

    uncapped = ScriptedLLM(scripted("{}"))
    TextGrad([instruction], uncapped, value_chars=5000, max_prompt_chars=None).backward(
        answer(instruction, problem), feedback
    )
    assert sum(len(m["content"]) for m in uncapped.requests[0].messages) > 6000


def test_rewrite_requests_drop_old_gradients_first_then_cut_the_gradient():
    p = node("Say hello. " * 50, name="greeting", trainable=True)  # 550 characters
    opt = TextGrad([p], ScriptedLLM([]), memory=3, max_prompt_chars=3500)
    opt.gradient_memory["greeting"] = ["old advice " * 50, "older " * 100, "last advice " * 50]
    messages = opt._step_messages(p, "greeting", "now: be brief. " * 100)  # 1,500
    text = messages[1]["content"]
    assert sum(len(m["content"]) for m in messages) <= 3500
    assert p.value in text  # the value being rewritten is never cut
    assert "last advice" in text and "old advice" not in text  # oldest dropped first
    small = TextGrad([p], ScriptedLLM([]), memory=3, max_prompt_chars=2000)
    small.gradient_memory = opt.gradient_memory
    text = small._step_messages(p, "greeting", "now: be brief. " * 100)[1]["content"]
    assert "Feedback from earlier steps" not in text and "(truncated)" in text
    assert p.value in text


def test_requests_the_server_refuses_for_length_pass_feedback_on_and_fail_the_step(caplog):
    from optiforge.llm.errors import ContextLengthError

    def refuse(messages, **kw):
        raise ContextLengthError("the request exceeds the available context size")

    factor = node(2.0, name="factor", trainable=True)
    opt = TextGrad([factor], ScriptedLLM(refuse))
    opt.backward(scale(node(3.0, name="x"), factor), "The result should be 10.")
    assert factor.feedback == "The result should be 10."  # passed on, not raised
    assert "does not fit the model's context" in caplog.text
    report = opt.step()
    assert not report.ok and factor.value == 2.0
    assert any("does not fit the model's context" in e for e in report.errors)
