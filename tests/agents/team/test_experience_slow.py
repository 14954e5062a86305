"""The experience lever on the real 1.5B model (Qwen2.5-Coder-1.5B, embedded server): a
library built in the test from the fixture run on NL4Opt training problems, and a team run
on another training problem that uses it."""

from __future__ import annotations

from pathlib import Path

import pytest

from optiforge.agents.team import TeamConfig, asolve
from optiforge.agents.team.experience import make_library
from optiforge.datasets import load_dataset
from optiforge.evals.experience import select_experience
from optiforge.evals.tune import is_test_problem

RUN = Path(__file__).resolve().parents[2] / "data" / "experience_run"


@pytest.mark.slow
@pytest.mark.timeout(1200)  # a hang guard: 747 s with several model servers on 2 cores
async def test_experience_fires_on_a_training_problem(coder_llm, tmp_path):
    # Rule insights: the model's distill call is covered by the scripted tests (one call per
    # entry would add to a test that must stay short).
    lib = make_library(select_experience([RUN])).library
    assert [e.id for e in lib.entries] == ["nl4opt-0003", "nl4opt-0012", "nl4opt-0052"]
    path = lib.save(tmp_path / "lib.jsonl")

    # nl4opt-0016 (nl4opt-tune-train): a store's wage bill, like nl4opt-0003's accountants.
    (problem,) = load_dataset("nl4opt", ids=["nl4opt-0016"])
    assert not is_test_problem(problem)
    cfg = TeamConfig(experience=True, experience_library=str(path), experience_k=2)
    sol = await asolve(problem.text, llm=coder_llm, samples=2, budget=4, config=cfg)
    assert sol.levers == ["experience"]
    (step,) = [s for s in sol.steps if s.role == "experience"]
    assert step.detail["ids"][0] == "nl4opt-0003" and step.detail["insights"]
    # The examples fit the server's context: each formulator prompt and reply within 4096.
    forms = [s for s in sol.steps if s.role == "formulator" and s.calls]
    assert 1 <= len(forms) <= 4
    assert all(s.prompt_tokens > 0 and s.prompt_tokens + s.completion_tokens <= 4096 for s in forms)
    # A formulation written with the example was solved (whether it is right is what the
    # ablation measures: in one run under load the model copied the example's ratio with
    # the roles swapped, 27500 for 28250).
    assert sol.answer is not None, (sol.failure_class, sol.error)
    assert sol.result is not None and sol.result.ok
