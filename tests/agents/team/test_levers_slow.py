"""The ``verify`` and ``grounded_critique`` levers firing with the real 1.5B model
(Qwen2.5-Coder-1.5B on the embedded server) on a training-split problem (nl4opt-0099 of
``nl4opt-tune-train``).

The first formulation is scripted (a known formulation error), so that the lever has
something to find whatever the model would have written; the lever's own LLM calls (the
verifier; the critique and the repair the grounded findings feed) are the real model's.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from optiforge.agents.team import asolve
from optiforge.agents.team.state import TeamConfig
from optiforge.datasets import load_dataset
from optiforge.llm.testing import ScriptedLLM

PROBLEM_ID = "nl4opt-0099"  # in optiforge/evals/samples/nl4opt-tune-train.txt


def _draft(constraints: list[tuple[str, str]]) -> str:
    return json.dumps(
        {
            "variables": [
                {
                    "name": "vintage",
                    "description": "number of vintage bottles",
                    "units": "bottles",
                    "domain": "integer",
                },
                {
                    "name": "regular",
                    "description": "number of regular bottles",
                    "units": "bottles",
                    "domain": "integer",
                },
            ],
            "objective": {"sense": "maximize", "expression": "vintage + regular"},
            "constraints": [{"source": s, "expression": e} for s, e in constraints],
        }
    )


CAPACITY = ("The company has available 100000 ml of vine", "500*vintage + 750*regular <= 100000")
MIN_VINTAGE = ("at least 10 vintage bottles must be made", "vintage >= 10")
RATIO_SOURCE = (
    "the number of regular bottles must be at least 4 times as much as the number of vintage "
    "bottles"
)


class _FirstScripted:
    """A client whose first reply is scripted and whose later replies are the real model's."""

    def __init__(self, first: ScriptedLLM, real: Any) -> None:
        self.first, self.real, self.used = first, real, False
        self.asked: list[Any] = []  # the messages of every call

    async def achat(self, messages: Any, **kw: Any) -> Any:
        self.asked.append(messages)
        if not self.used:
            self.used = True
            return await self.first.achat(messages, **kw)
        return await self.real.achat(messages, **kw)


def _problem():
    (p,) = load_dataset("nl4opt", ids=[PROBLEM_ID])
    return p


@pytest.mark.slow
@pytest.mark.timeout(1200)
async def test_verify_fires_on_a_training_problem(coder_llm):
    p = _problem()
    # The ratio written the wrong way round: vintage >= 4*regular.
    reversed_ratio = _draft([CAPACITY, (RATIO_SOURCE, "vintage >= 4*regular"), MIN_VINTAGE])
    formulator = ScriptedLLM([reversed_ratio], cycle=True)
    sol = await asolve(
        p.text,
        roles={
            "formulator": formulator,
            "critic": coder_llm,
            "planner": coder_llm,
            "coder": coder_llm,
        },
        samples=1,
        budget=3,
        config=TeamConfig(verify=True, verify_calls=2, llm_critic=False, code_route=False),
    )
    asked = [s for s in sol.steps if s.role == "verifier" and s.calls]
    assert 1 <= len(asked) <= 2  # the cap
    assert sol.levers == ["verify"], [s.summary for s in sol.steps]
    fixed = [s for s in sol.steps if s.role == "verifier" and s.detail.get("fixes")]
    assert fixed and fixed[0].detail["fixes"][0]["from"] == "vintage >= 4*regular"
    # The fixed ratio (regular >= 4*vintage) gives the dataset's answer and wins the vote.
    assert sol.answer is not None and abs(sol.answer - p.answer) / (abs(p.answer) + 1) < 1e-6


@pytest.mark.slow
@pytest.mark.timeout(1200)
async def test_grounded_critique_fires_on_a_training_problem(coder_llm):
    p = _problem()
    # The ratio left out: the stated 4 of "at least 4 times as much" is used by no constraint.
    no_ratio = _draft([CAPACITY, MIN_VINTAGE])
    formulator = _FirstScripted(ScriptedLLM([no_ratio]), coder_llm)
    real = {"critic": coder_llm, "planner": coder_llm, "coder": coder_llm}
    sol = await asolve(
        p.text,
        roles={"formulator": formulator, **real},
        samples=1,
        budget=2,
        # No LLM critique: the grounded findings go to the repair as they are (one real call).
        config=TeamConfig(grounded_critique=True, llm_critic=False, code_route=False),
    )
    assert sol.levers == ["grounded_critique"]
    found = [s for s in sol.steps if s.detail.get("grounded")]
    assert found and "no constraint uses 4" in found[0].detail["grounded"][0]["message"]
    # The finding went to the real model's repair, which was written and solved.
    assert len(formulator.asked) == 2
    assert "no constraint uses 4" in formulator.asked[1][-1]["content"]
    assert [s for s in sol.steps if s.role == "formulator" and s.plan_id == "repair" and s.calls]
    assert [s for s in sol.steps if s.role == "solver" and s.plan_id == "repair"]
    assert sol.answer is not None
