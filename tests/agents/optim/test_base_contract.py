"""The optimizer base as a small contract: a subclass that only implements ``_propose``
gets checked updates, a report, and state that saves and loads."""

from __future__ import annotations

import json

import pytest

from optiforge.agents.optim import (
    Change,
    Optimizer,
    OptimizerError,
    StepReport,
    base,
    replies,
    report,
    state_io,
)
from optiforge.trace import node


class Fixed(Optimizer):
    """Proposes the same values every step (no LLM call)."""

    kind = "fixed"

    def __init__(self, params, proposal):
        super().__init__(params, llm=object())
        self.proposal = proposal

    def _propose(self, report):
        values, errors = self.check(self.proposal)
        report.errors.extend(errors)
        return "because", values


def test_names_moved_out_of_base_still_import_from_it():
    assert base.StepReport is report.StepReport is StepReport
    assert base.Change is report.Change is Change
    assert base.jsonable is replies.jsonable
    assert base.suggestion_schema is replies.suggestion_schema
    assert base.LEGACY_STATE_VERSION == state_io.LEGACY_STATE_VERSION == 1


def test_a_subclass_with_only_propose_steps_saves_and_loads(tmp_path):
    x = node(1.0, trainable=True, name="x")
    opt = Fixed([x], {"x": "2.5"})
    rep = opt.step()
    assert rep.ok and rep.changed == {"x": 2.5} and x.value == 2.5
    assert rep.calls == 0 and opt.step_count == 1 and len(opt.log) == 1
    path = opt.save(tmp_path / "s.json")
    doc = json.loads(path.read_text())
    assert doc["kind"] == "optimizer" and doc["optimizer"] == "fixed"
    assert doc["parameters"] == {"x": 2.5}

    y = node(0.0, trainable=True, name="x")
    other = Fixed([y], {})
    other.load(path)
    assert y.value == 2.5 and other.step_count == 1 and other.log == opt.log


def test_a_rejected_value_is_reported_and_not_applied():
    x = node(3, trainable=True, name="x")
    rep = Fixed([x], {"x": "not a number"}).step()
    assert rep.ok and rep.changes == [] and x.value == 3
    assert rep.errors and rep.errors[0].startswith("x: ")


def test_state_files_that_are_not_an_object_are_refused(tmp_path):
    x = node(1.0, trainable=True, name="x")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(OptimizerError, match="does not hold an optimizer state object"):
        Fixed([x], {}).load(bad)
    with pytest.raises(OptimizerError, match="no optimizer state at"):
        Fixed([x], {}).load(tmp_path / "missing.json")


class Asking(Optimizer):
    """Asks its LLM once per step through the shared re-ask loop."""

    kind = "asking"

    def _propose(self, report):
        messages = [{"role": "user", "content": "Give x. " + "context " * 300}]  # 2,408
        return self._ask(messages, report)


def test_a_reask_repeats_only_the_latest_reply_cut_to_the_prompt_cap():
    from optiforge.llm.testing import ScriptedLLM

    bad = ["first broken reply " * 200, "second broken reply " * 200]
    llm = ScriptedLLM([*bad, '{"reasoning": "r", "suggestion": {"x": 4.0}}'])
    x = node(1.0, trainable=True, name="x")
    opt = Asking([x], llm, structured=False, max_prompt_chars=3000)
    rep = opt.step()
    assert rep.ok and x.value == 4.0 and rep.attempts == 3
    third = llm.requests[2].messages
    assert len(third) == 3  # the first ask, the latest reply, the correction
    assert "second broken reply" in third[1]["content"]
    assert all("first broken reply" not in m["content"] for m in third)
    assert all(sum(len(m["content"]) for m in r.messages) <= 3000 for r in llm.requests)


def test_prompt_cap_is_checked_and_defaults_to_a_4096_token_context():
    x = node(1.0, trainable=True, name="x")
    assert Fixed([x], {}).max_prompt_chars == replies.DEFAULT_MAX_PROMPT_CHARS == 9000
    for bad in (0, -5, True):
        with pytest.raises(OptimizerError, match="max_prompt_chars"):
            Asking([x], object(), max_prompt_chars=bad)
    assert Asking([x], object(), max_prompt_chars=None).max_prompt_chars is None
