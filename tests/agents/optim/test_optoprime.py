"""OptoPrime with a scripted LLM: prompt sections, parsing, memory, code repair, state."""

from __future__ import annotations

import json

import pytest

from optiforge.agents.optim import OptimizerError, OptoPrime
from optiforge.llm.testing import ScriptedLLM
from optiforge.trace import ExecutionError, Module, bundle, node


@bundle
def add(x, y):
    """Add x and y."""
    return x + y


def program():
    offset = node(
        1,
        name="offset",
        trainable=True,
        description="added to the input",
        constraint="an integer between 0 and 100",
    )
    x = node(3, name="x")
    return offset, x


def test_prompt_has_every_section_with_the_right_values():
    offset, x = program()
    llm = ScriptedLLM('{"reasoning": "3 + 7 = 10", "suggestion": {"offset": 7}}')
    opt = OptoPrime([offset], llm)
    opt.zero_feedback()
    opt.backward(add(x, offset), "The output should be 10.")
    report = opt.step()

    assert report.ok and offset.value == 7 and isinstance(offset.value, int)
    assert report.changes[0].old == 1 and report.changes[0].reason == "3 + 7 = 10"
    req = llm.requests[0]
    prompt = req.prompt
    for section in (
        "#Instruction",
        "#Code",
        "#Documentation",
        "#Variables",
        "#Constraints",
        "#Inputs",
        "#Others",
        "#Outputs",
        "#Feedback",
    ):
        assert section in prompt, section
    assert "add0 = add(x=x0, y=offset)" in prompt
    assert "[add] Add x and y." in prompt
    assert "(int) offset=1" in prompt
    assert "(offset) an integer between 0 and 100" in prompt
    assert "(int) x0=3" in prompt
    assert "(int) add0=4" in prompt
    assert "The output should be 10." in prompt
    assert '"offset": ...' in prompt
    assert "#Variables" in req.system and "suggestion" in req.system
    assert req.response_format is not None


def test_malformed_then_wrong_type_then_good_reply():
    offset, x = program()
    llm = ScriptedLLM(
        [
            "I think offset should become seven.",
            '{"reasoning": "r", "suggestion": {"offset:0": "seven"}}',
            '```json\n{"reasoning": "r", "suggestion": {"offset:0": 7,}}\n```',
        ]
    )
    opt = OptoPrime([offset], llm, structured=False, max_attempts=3)
    opt.backward(add(x, offset), "should be 10")
    report = opt.step()
    assert report.ok and report.attempts == 3 and offset.value == 7
    assert "no JSON object" in report.errors[0]
    assert "is not a number" in report.errors[1]
    # The retry tells the model what was wrong, and samples instead of repeating itself.
    assert "could not be used" in llm.requests[1].messages[-1]["content"]
    assert [r.temperature for r in llm.requests] == [0.0, 0.7, 0.7]
    assert len({r.seed for r in llm.requests}) == 3


def test_all_replies_unusable_changes_nothing(caplog):
    offset, x = program()
    llm = ScriptedLLM("no idea")
    opt = OptoPrime([offset], llm, structured=False, max_attempts=2)
    opt.backward(add(x, offset), "should be 10")
    with caplog.at_level("WARNING", logger="optiforge.agents.optim"):
        report = opt.step()
    assert not report.ok and report.changes == [] and offset.value == 1
    assert report.attempts == 2 and len(llm.requests) == 2
    assert "unusable reply" in caplog.text
    assert "no change" in str(report)
    assert opt.log[-1]["ok"] is False


def test_step_without_feedback_makes_no_call():
    offset, _ = program()
    llm = ScriptedLLM([])
    report = OptoPrime([offset], llm).step()
    assert report.ok and not report.changes and not llm.requests


def test_minibatch_feedback_and_memory():
    offset, _ = program()
    llm = ScriptedLLM(
        [
            '{"reasoning": "r", "suggestion": {"offset": 5}}',
            '{"reasoning": "r", "suggestion": {"offset": 7}}',
        ]
    )
    opt = OptoPrime([offset], llm, memory=3)
    opt.backward(add(node(3, name="a"), offset), "should be 10")
    opt.backward(add(node(5, name="b"), offset), "should be 12")
    opt.step()
    first = llm.requests[0].prompt
    assert "should be 10" in first and "should be 12" in first
    assert "#Past attempts" not in first
    opt.zero_feedback()
    opt.backward(add(node(3, name="a"), offset), "should be 10, got 8")
    opt.step()
    second = llm.requests[1].prompt
    assert "#Past attempts" in second and "offset = 1" in second
    assert offset.value == 7
    assert len(opt.memory) == 2


def test_two_parameters_with_the_same_name_get_unique_names():
    a = node(1.0, name="w", trainable=True)
    b = node(2.0, name="w", trainable=True)
    probe = OptoPrime([a, b], ScriptedLLM([]))
    first, second = probe.names
    assert first == "w" and second != "w"
    llm = ScriptedLLM(json.dumps({"reasoning": "r", "suggestion": {first: 4.0, second: 5.0}}))
    opt = OptoPrime([a, b], llm)
    opt.backward(add(a, b), "make it 9")
    opt.step()
    schema = json.dumps(llm.requests[0].response_format)
    assert f'"{first}"' in schema and f'"{second}"' in schema
    assert f"(float) {second}=2.0" in llm.requests[0].prompt
    assert (a.value, b.value) == (4.0, 5.0)


class Buggy(Module):
    @bundle(trainable=True)
    def mean(self, xs):
        """Return the arithmetic mean of the list xs."""
        return sum(xs) / (len(xs) - 1)

    def forward(self, xs):
        return self.mean(xs)


def test_code_repair_from_an_exception_node(tmp_path):
    model = Buggy()
    fixed = "def mean(self, xs):\n    return sum(xs) / len(xs)\n"
    llm = ScriptedLLM(
        [
            json.dumps(
                {"reasoning": "r", "suggestion": {"__code_mean": "def mean(xs):\n    return 1"}}
            ),
            json.dumps({"reasoning": "divide by len(xs)", "suggestion": {"__code_mean": fixed}}),
        ]
    )
    opt = OptoPrime(model.parameters(), llm, structured=False)
    with pytest.raises(ExecutionError) as info:
        model(node([4], name="xs"))
    opt.backward(info.value.exception_node, "It crashed; it must return the mean.")
    report = opt.step()
    assert report.ok and report.attempts == 2
    assert "signature" in report.errors[0]
    assert "ZeroDivisionError" in llm.requests[0].prompt
    assert "(code) __code_mean:def mean(self, xs):" in llm.requests[0].prompt
    assert model(node([2, 4])).value == 3

    path = opt.save(tmp_path / "state.json")
    model2 = Buggy()
    opt2 = OptoPrime(model2.parameters(), ScriptedLLM([]))
    opt2.load(path)
    assert model2(node([2, 4])).value == 3
    assert opt2.step_count == 1 and opt2.log == opt.log


def test_load_rejects_foreign_state(tmp_path):
    offset, _ = program()
    other = node("x", name="other", trainable=True)
    path = OptoPrime([other], ScriptedLLM([])).save(tmp_path / "s.json")
    with pytest.raises(OptimizerError, match="does not have"):
        OptoPrime([offset], ScriptedLLM([])).load(path)
    state = json.loads(path.read_text())
    state["optimizer"] = "opro"
    path.write_text(json.dumps(state))
    with pytest.raises(OptimizerError, match="not 'optoprime'"):
        OptoPrime([other], ScriptedLLM([])).load(path)


def test_state_is_the_shared_format_and_old_files_still_load(tmp_path):
    offset, _ = program()
    opt = OptoPrime([offset], ScriptedLLM([]), memory=2)
    opt.memory = [{"variables": {"offset": 1}, "feedback": "m"}]
    path = opt.save(tmp_path / "s.json")
    doc = json.loads(path.read_text())
    assert (doc["format"], doc["version"], doc["kind"]) == ("optiforge.state", 1, "optimizer")
    assert doc["optimizer"] == "optoprime" and doc["parameters"] == {"offset": 1}

    # a state saved before the shared format: same fields, no "format"/"kind"
    old = {
        "version": 1,
        "optimizer": "optoprime",
        "step_count": 4,
        "parameters": {"offset": 9},
        "log": [],
        "memory": [{"variables": {"offset": 4}, "feedback": "old"}],
    }
    (tmp_path / "old.json").write_text(json.dumps(old))
    offset2, _ = program()
    opt2 = OptoPrime([offset2], ScriptedLLM([]), memory=2)
    opt2.load(tmp_path / "old.json")
    assert offset2.value == 9 and opt2.step_count == 4 and opt2.memory == old["memory"]

    (tmp_path / "old2.json").write_text(json.dumps({**old, "version": 2}))
    with pytest.raises(OptimizerError, match="unsupported optimizer state version 2"):
        opt2.load(tmp_path / "old2.json")
    (tmp_path / "new9.json").write_text(json.dumps({**doc, "version": 9}))
    with pytest.raises(OptimizerError, match="version 9 of the optiforge state format"):
        opt2.load(tmp_path / "new9.json")
    (tmp_path / "module.json").write_text(json.dumps({**doc, "kind": "module"}))
    with pytest.raises(OptimizerError, match="kind 'module', not 'optimizer'"):
        opt2.load(tmp_path / "module.json")


@bundle
def shout(text, n):
    """Repeat text n times."""
    return text * n


def test_the_prompt_is_cut_to_max_prompt_chars(caplog):
    times = node(2, name="times", trainable=True, constraint="an integer")

    def llm():
        return ScriptedLLM('{"reasoning": "r", "suggestion": {"times": 3}}')

    def step(cap):
        opt = OptoPrime([times], llm(), max_prompt_chars=cap)
        opt.zero_feedback()
        for k in range(4):  # a minibatch of four long runs
            opt.backward(shout(node(f"{k}" + "w" * 3000), times), "Too short.")
        report = opt.step()
        return report, sum(len(m["content"]) for m in opt.llm.requests[0].messages)

    uncapped = step(None)[1]
    assert uncapped > 12000
    report, sent = step(9000)
    assert report.ok and sent <= 9000
    with caplog.at_level("WARNING"):
        _, sent = step(1000)  # the instructions alone are longer: sent with a warning
    assert sent > 1000 and "over max_prompt_chars=1000" in caplog.text
