"""GEPA's requirement check: a new value that leaves out requirements the reflection itself
listed is re-asked (bounded, one LLM call each), with the missing ones named."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from optiforge.agents.optim import GEPA, OptimizerError
from optiforge.agents.optim.base import StepReport
from optiforge.agents.optim.gepa import missing_requirements, requirement_stated
from optiforge.llm.testing import ScriptedLLM
from optiforge.trace import Module, node

sys.path.insert(0, str(Path(__file__).parent))
import gepa_toy as T

LABELS_RULE = "The reply is exactly one of: billing, technical, account or shipping."
ONE_WORD = "The reply is a single word, with no other words."
NARROW = "Classify this support ticket as billing."
FULL = (
    "Label the customer's message with one word: billing, technical, account or shipping. "
    "Reply with the label only, no other words."
)


class Router(Module):
    def __init__(self) -> None:
        self.instruction = node("Classify this support ticket.", trainable=True)


def test_a_value_that_names_one_label_does_not_state_the_label_rule():
    assert not requirement_stated(LABELS_RULE, NARROW)
    assert requirement_stated(LABELS_RULE, FULL)
    # Quoted terms must all appear too; plurals match their singular.
    quoted = "Answer with one label: 'billing', 'technical', 'account' or 'shipping'."
    assert not requirement_stated(quoted, "Answer with one label: 'billing' or 'technical'.")
    assert requirement_stated("Name the allowed labels.", "The allowed label names: a, b.")
    assert missing_requirements([LABELS_RULE, ONE_WORD, " "], NARROW) == [LABELS_RULE, ONE_WORD]
    assert missing_requirements([LABELS_RULE, ONE_WORD], FULL) == []
    # Non-text values are checked on their JSON.
    assert missing_requirements(["keys alpha, beta and gamma"], {"alpha": 1, "beta": 2}) == [
        "keys alpha, beta and gamma"
    ]


def _reply(value: str) -> str:
    return json.dumps(
        {"analysis": "No labels.", "requirements": [LABELS_RULE, ONE_WORD], "new_value": value}
    )


def test_a_narrow_value_is_re_asked_once_with_the_missing_requirements():
    seen: list[list[dict]] = []
    replies = iter([_reply(NARROW), _reply(FULL)])

    def model(messages, **kw):
        seen.append(messages)
        return next(replies)

    opt = GEPA(Router(), ScriptedLLM(model))
    report = StepReport(step=0, optimizer="gepa")
    analysis, value = opt._reflect("instruction", "Classify this support ticket.", "", report)
    assert value == FULL and len(seen) == 2 and analysis.startswith("No labels.")
    ask = seen[1][-1]["content"]
    assert LABELS_RULE in ask and ONE_WORD in ask and "name every one" in ask
    assert seen[1][-2] == {"role": "assistant", "content": _reply(NARROW)}
    assert report.detail["requirement_asks"] == 1 and report.detail["requirements_missing"] == []
    assert opt.llm.usage.snapshot().calls == 2  # the re-ask is a counted call


def test_re_asks_are_bounded_and_keep_the_value_that_misses_fewest():
    calls = {"n": 0}
    half = "Reply with one word: the label only, no other words."  # states ONE_WORD only

    def stubborn(messages, **kw):
        calls["n"] += 1
        return _reply(NARROW if calls["n"] == 1 else half if calls["n"] == 2 else NARROW + "!")

    opt = GEPA(Router(), ScriptedLLM(stubborn), requirement_asks=2, requirement_fill=False)
    report = StepReport(step=0, optimizer="gepa")
    _, value = opt._reflect("instruction", "Classify this support ticket.", "", report)
    assert calls["n"] == 3 and value == half
    assert report.detail["requirement_asks"] == 2
    assert report.detail["requirements_missing"] == [LABELS_RULE]

    # requirement_asks=0: the first usable value is taken as it is, with one call.
    calls["n"] = 0
    opt = GEPA(Router(), ScriptedLLM(stubborn), requirement_asks=0, requirement_fill=False)
    report = StepReport(step=0, optimizer="gepa")
    _, value = opt._reflect("instruction", "Classify this support ticket.", "", report)
    assert calls["n"] == 1 and value == NARROW and "requirement_asks" not in report.detail
    with pytest.raises(OptimizerError, match="requirement_asks"):
        GEPA(Router(), ScriptedLLM(stubborn), requirement_asks=-1)


def test_free_text_reflection_is_never_re_asked():
    calls = {"n": 0}

    def model(messages, **kw):
        calls["n"] += 1
        return f"Requirements: {LABELS_RULE}\n```\n{NARROW}\n```"

    opt = GEPA(Router(), ScriptedLLM(model), structured=False)
    _, value = opt._reflect("instruction", "x", "", StepReport(step=0, optimizer="gepa"))
    assert value == NARROW and calls["n"] == 1


def test_the_search_records_re_asks_in_its_history_and_counts_them():
    """On the lookup task, a reflector that first forgets one of the rules it lists is
    re-asked; the search still improves and the history shows the extra call."""
    asked = {"n": 0}

    def forgetful(messages, **kw):
        good = json.loads(T.reflector(messages, **kw))
        if messages[-1]["role"] == "user" and "does not state" in messages[-1]["content"]:
            asked["n"] += 1
            assert "A rule names '" in messages[-1]["content"]
            return json.dumps(good)
        # It lists each rule's item as a quoted term, then leaves the last rule out.
        items = [r.split(":")[0] for r in good["requirements"]]
        good["requirements"] = [f"A rule names '{item}'." for item in items]
        lines = good["new_value"].splitlines()
        if items and len(lines) > 1:
            good["new_value"] = "\n".join(lines[:-1])
        return json.dumps(good)

    module = T.Lookup()
    opt = GEPA(module, ScriptedLLM(forgetful), max_metric_calls=60, workers=1)
    res = opt.optimize(module, T.TRAIN, T.CountingJudge(), T.VAL)
    assert res.best_val_score > res.initial_val_score and asked["n"] >= 1
    reasked = [h for h in opt.history if h.get("requirement_asks")]
    assert reasked and all(h["llm_calls"] >= 2 for h in reasked)


def test_requirements_still_missing_are_appended_to_a_text_value():
    """Seen with Qwen2.5-Coder-1.5B: the re-asked value still named one label; the
    requirements it listed are then appended, so the child states them."""
    opt = GEPA(Router(), ScriptedLLM(lambda m, **kw: _reply(NARROW)))
    report = StepReport(step=0, optimizer="gepa")
    _, value = opt._reflect("instruction", "Classify this support ticket.", "", report)
    assert value == f"{NARROW}\n{LABELS_RULE}\n{ONE_WORD}"
    assert missing_requirements([LABELS_RULE, ONE_WORD], value) == []
    assert report.detail["requirements_appended"] == [LABELS_RULE, ONE_WORD]
    assert opt.llm.usage.snapshot().calls == 2  # the reply and one re-ask, nothing more
