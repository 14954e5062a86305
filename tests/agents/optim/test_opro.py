"""OPRO with a scripted LLM: meta-prompt contents, candidates, dedup, history, state."""

from __future__ import annotations

import json
import re

import pytest

from optiforge.agents.optim import OPRO, OptimizerError
from optiforge.llm.testing import ScriptedLLM
from optiforge.trace.nodes import node


def params(w=0.0, b=0.0):
    return node(w, name="w", trainable=True, description="slope"), node(
        b, name="b", trainable=True, description="intercept"
    )


def loss(v):
    return (v["w"] - 3.0) ** 2 + (v["b"] + 1.0) ** 2


def test_opro_step_scores_candidates_and_keeps_best():
    w, b = params()
    llm = ScriptedLLM(
        [
            '{"suggestion": {"w": 1.0, "b": 0.0}}',
            '{"suggestion": {"w": 3.0, "b": -1.0}}',
            '{"suggestion": {"w": 0.0, "b": 0.0}}',  # duplicate of the start
            "I would try w=2",  # unusable
        ]
    )
    opt = OPRO(
        [w, b], llm, objective=loss, maximize=False, n=4, task="Fit a line.", structured=False
    )
    report = opt.step()
    assert report.ok
    assert w.value == 3.0 and b.value == -1.0
    assert isinstance(w.value, float)
    assert report.changed == {"w": 3.0, "b": -1.0}
    assert report.detail["duplicates"] == 1
    assert any("no JSON object" in e for e in report.errors)
    assert sorted(h["score"] for h in opt.history) == [0.0, 5.0, 10.0]
    req = llm.requests[0]
    assert req.n == 4
    assert "Fit a line." in req.prompt
    assert "w (float): slope" in req.prompt
    assert "lower score is better" in req.prompt


def test_structured_output_is_requested_and_repaired():
    w, b = params()
    llm = ScriptedLLM(['{"suggestion": {"w": "x"}}', '{"suggestion": {"w": 2.0, "b": 0.5}}'])
    opt = OPRO([w, b], llm, objective=loss, maximize=False, n=1)
    report = opt.step()
    assert report.ok and (w.value, b.value) == (2.0, 0.5)
    schema = json.dumps(llm.requests[0].response_format)
    assert '"w"' in schema and '"b"' in schema and "number" in schema


def test_structured_failure_falls_back_to_lenient_parsing():
    w, b = params()
    # Valid for the tag parser, invalid for the JSON schema: both the reply and the re-ask.
    tagged = "<variable><name>w</name><value>2.5</value></variable>"
    llm = ScriptedLLM([tagged, tagged])
    opt = OPRO([w, b], llm, objective=loss, maximize=False, n=1)
    report = opt.step()
    assert report.ok and w.value == 2.5 and b.value == 0.0


def test_one_invalid_structured_sample_does_not_lose_the_valid_ones():
    """n=3 structured samples, one unusable even after the re-ask: the other two are scored."""
    w, b = params()
    llm = ScriptedLLM(
        [
            '{"suggestion": {"w": 1.0, "b": 0.0}}',
            "no idea",
            '{"suggestion": {"w": 3.0, "b": -1.0}}',
            "still no idea",  # the re-ask of sample 1
        ]
    )
    opt = OPRO([w, b], llm, objective=loss, maximize=False, n=3)
    report = opt.step()
    assert report.ok and (w.value, b.value) == (3.0, -1.0)
    assert sorted(h["score"] for h in opt.history) == [0.0, 5.0, 10.0]


def test_meta_prompt_lists_top_k_worst_first():
    w, b = params()
    opt = OPRO([w, b], ScriptedLLM([]), objective=loss, maximize=False, top_k=2)
    opt.observe({"w": 0.0, "b": 0.0}, 10.0)
    opt.observe({"w": 1.0, "b": 0.0}, 5.0)
    opt.observe({"w": 2.0, "b": -1.0}, 1.0)
    prompt = opt.meta_prompt()[1]["content"]
    scores = [float(s) for s in re.findall(r"score: ([\d.]+)", prompt)]
    assert scores == [5.0, 1.0]  # top 2, best last
    assert "w=2, b=-1" in prompt
    opt_max = OPRO([w, b], ScriptedLLM([]), objective=loss, maximize=True)
    opt_max.history = opt.history
    scores = [float(s) for s in re.findall(r"score: ([\d.]+)", opt_max.meta_prompt()[1]["content"])]
    assert scores == [1.0, 5.0, 10.0]


def test_text_parameter_and_examples():
    instr = node("Classify the text.", name="instruction", trainable=True)
    llm = ScriptedLLM(['{"suggestion": {"instruction": "Say positive or negative."}}'])
    opt = OPRO(
        [instr],
        llm,
        objective=lambda v: float("positive" in v["instruction"]),
        examples=[("great movie", "positive")],
        n=1,
    )
    report = opt.step()
    assert instr.value == "Say positive or negative."
    assert report.detail["best_score"] == 1.0
    prompt = llm.requests[0].prompt
    assert "<solution>\nClassify the text.\n</solution>" in prompt
    assert "Input: great movie\nExpected output: positive" in prompt


def test_all_duplicates_retry_then_report_failure():
    w, b = params()
    llm = ScriptedLLM('{"suggestion": {"w": 0.0, "b": 0.0}}')
    opt = OPRO([w, b], llm, objective=loss, maximize=False, n=2, max_attempts=2)
    report = opt.step()
    assert not report.ok
    assert report.attempts == 2
    assert report.changes == []
    assert len(llm.requests) == 2
    assert w.value == 0.0


def test_type_check_rejects_text_for_number():
    w, b = params()
    llm = ScriptedLLM(
        ['{"suggestion": {"w": "bigger", "b": 1}}', '{"suggestion": {"w": 2, "b": 1}}']
    )
    opt = OPRO([w, b], llm, objective=loss, maximize=False, n=1, structured=False)
    report = opt.step()
    assert report.ok and report.attempts == 2
    assert any("is not a number" in e for e in report.errors)
    assert (w.value, b.value) == (2.0, 1.0)
    assert llm.requests[0].response_format is None


def test_objective_failure_is_reported_not_raised():
    w, b = params()

    def fragile(v):
        if v["w"] > 5:
            raise ValueError("out of range")
        return loss(v)

    llm = ScriptedLLM(['{"suggestion": {"w": 9, "b": 0}}', '{"suggestion": {"w": 2, "b": 0}}'])
    opt = OPRO([w, b], llm, objective=fragile, maximize=False, n=2, workers=2)
    report = opt.step()
    assert w.value == 2.0
    assert any("out of range" in e for e in report.errors)


def test_async_objective():
    w, b = params()

    async def aloss(v):
        return loss(v)

    llm = ScriptedLLM(['{"suggestion": {"w": 3, "b": -1}}'])
    opt = OPRO([w, b], llm, objective=aloss, maximize=False, n=1)
    opt.step()
    assert opt.best["score"] == 0.0


def test_without_objective_uses_backward_scores():
    w, b = params()
    llm = ScriptedLLM(['{"suggestion": {"w": 1, "b": 1}}'])
    opt = OPRO([w, b], llm, maximize=False, n=1)
    opt.backward(None, 10.0)
    opt.step()
    assert (w.value, b.value) == (1.0, 1.0)
    opt.backward(None, "4.5")
    assert [h["score"] for h in opt.history] == [10.0, 4.5]
    with pytest.raises(OptimizerError, match="numeric score"):
        opt.backward(None, "too big")


def test_without_objective_tries_queued_candidates_one_per_step():
    w, b = params()
    llm = ScriptedLLM(['{"suggestion": {"w": 1, "b": 1}}', '{"suggestion": {"w": 2, "b": 2}}'])
    opt = OPRO([w, b], llm, maximize=False, n=2)
    opt.backward(None, 10.0)
    opt.step()
    assert (w.value, b.value) == (1.0, 1.0) and len(llm.requests) == 1
    opt.backward(None, 5.0)
    report = opt.step()  # the second sample of the first call: no new request
    assert (w.value, b.value) == (2.0, 2.0) and len(llm.requests) == 1
    assert report.detail["from_queue"] and report.calls == 0


def test_state_roundtrip(tmp_path):
    w, b = params()
    llm = ScriptedLLM(['{"suggestion": {"w": 3, "b": -1}}'])
    opt = OPRO([w, b], llm, objective=loss, maximize=False, n=1)
    opt.step()
    path = opt.save(tmp_path / "opro.json")
    state = json.loads(path.read_text())
    assert state["optimizer"] == "opro" and len(state["history"]) == 2

    w2, b2 = params()
    opt2 = OPRO([w2, b2], ScriptedLLM([]), objective=loss, maximize=False)
    opt2.load(path)
    assert (w2.value, b2.value) == (3.0, -1.0)
    assert opt2.history == opt.history and opt2.step_count == 1
    assert opt2.best["score"] == 0.0

    with pytest.raises(OptimizerError, match="maximize"):
        OPRO([w2, b2], ScriptedLLM([]), maximize=True).load(path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(OptimizerError, match="cannot read"):
        opt2.load(bad)
    with pytest.raises(OptimizerError, match="no optimizer state"):
        opt2.load(tmp_path / "missing.json")


def test_needs_parameters():
    with pytest.raises(OptimizerError, match="no trainable parameters"):
        OPRO([], ScriptedLLM([]))
    frozen = node(1.0, name="f", trainable=True)
    frozen.trainable = False
    with pytest.raises(OptimizerError, match="no trainable parameters"):
        OPRO([frozen], ScriptedLLM([]))


def test_meta_prompt_leaves_out_the_worst_solutions_to_fit_the_prompt_cap(caplog):
    """The team's prompts are thousands of characters each: twenty of them in the meta-prompt
    would not fit a small model's context, so the worst give way and the best stays."""
    instr = node("x" * 100, name="instruction", trainable=True)
    long = OPRO([instr], ScriptedLLM([]), objective=len, top_k=20, max_prompt_chars=None)
    capped = OPRO([instr], ScriptedLLM([]), objective=len, top_k=20, max_prompt_chars=6000)
    for i in range(20):
        long.observe({"instruction": f"prompt {i:02d} " + "y" * 1000}, float(i))
    capped.history = long.history
    assert sum(len(m["content"]) for m in long.meta_prompt()) > 20_000
    messages = capped.meta_prompt()
    assert sum(len(m["content"]) for m in messages) <= 6000
    shown = [int(s) for s in re.findall(r"prompt (\d\d)", messages[1]["content"])]
    assert shown and shown == list(range(20 - len(shown), 20))  # the best, best last
    assert len(shown) >= 3  # dropping stops as soon as it fits
    assert "over max_prompt_chars" not in caplog.text

    tiny = OPRO([instr], ScriptedLLM([]), objective=len, max_prompt_chars=1000)
    tiny.history = long.history
    shown = re.findall(r"prompt (\d\d)", tiny.meta_prompt()[1]["content"])
    assert shown == ["19"]  # the best always stays, and the log says it did not fit
    assert "over max_prompt_chars=1000" in caplog.text


def test_a_meta_prompt_the_server_refuses_for_its_length_is_a_failed_step_not_a_crash():
    from optiforge.llm.errors import ContextLengthError

    def refuse(messages, **kw):
        raise ContextLengthError("the request exceeds the available context size")

    w, b = params()
    opt = OPRO([w, b], ScriptedLLM(refuse), objective=loss, maximize=False, n=2)
    report = opt.step()
    assert not report.ok and (w.value, b.value) == (0.0, 0.0)
    assert any("does not fit the model's context" in e for e in report.errors)
    assert any("max_prompt_chars (now 9000)" in e for e in report.errors)


def test_max_prompt_chars_must_be_positive_or_none():
    w, b = params()
    with pytest.raises(OptimizerError, match="max_prompt_chars"):
        OPRO([w, b], ScriptedLLM([]), objective=loss, max_prompt_chars=0)
