"""Levers ``hints`` and ``weighted_vote`` (issue #12) firing on the real 1.5B model
(Qwen2.5-Coder-1.5B, embedded server) on problems of the NL4Opt training split
(``optiforge/evals/samples/nl4opt-tune-train.txt``)."""

from __future__ import annotations

import pytest

from optiforge.agents.team import TeamConfig, asolve
from optiforge.datasets import load_dataset
from optiforge.evals.sample import load_sample

TRAIN = set(load_sample("nl4opt-tune-train"))


def _problem(pid: str):
    assert pid in TRAIN  # only training-split problems here
    (p,) = load_dataset("nl4opt", ids=[pid])
    return p


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_hints_fire_on_a_training_problem(coder_llm):
    # "at least three times as much as the amount invested in healthcare": a ratio.
    p = _problem("nl4opt-0006")
    sol = await asolve(p.text, llm=coder_llm, samples=1, budget=1, config=TeamConfig(hints=True))
    assert sol.levers == ["hints"]
    step = next(s for s in sol.steps if "hints" in s.detail)
    assert "ratio" in step.detail["hints"] and step.detail["classes"]["ratio"] == "three times"
    # one formulator call, its reply solved by the real solver
    assert sum(s.calls for s in sol.steps if s.role == "formulator") == 1
    assert sol.result is not None and sol.result.ok, (sol.failure_class, sol.error)
    assert sol.answer is not None


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_weighted_vote_fires_on_a_training_problem(coder_llm):
    # "at least 5 times the number of short cables are needed than the long cables": an
    # awkward ratio that a greedy and a sampled formulation (T=1) read differently, so the
    # two answers split the vote and the lever buys samples (or the verdicts pick the winner).
    p = _problem("nl4opt-0015")
    cfg = TeamConfig(weighted_vote=True, temperature=1.0, code_route=False, llm_critic=False)
    sol = await asolve(p.text, llm=coder_llm, samples=2, budget=4, config=cfg)
    assert sol.levers == ["weighted_vote"], [s.summary for s in sol.steps]
    bought = [s.detail["split_vote"] for s in sol.steps if "split_vote" in s.detail]
    changed = [s.detail["weighted_vote"] for s in sol.steps if "weighted_vote" in s.detail]
    assert bought or changed
    # a split vote's samples come out of the budget: 2 in the first round, at most 2 more
    assert sum(b["samples"] for b in bought) <= 2
    assert sum(s.calls for s in sol.steps if s.role == "formulator") <= 4
    assert sol.answer is not None and sol.result is not None and sol.result.ok
