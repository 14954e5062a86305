"""The team on the real 1.5B model (Qwen2.5-Coder-1.5B, embedded server): solved objectives."""

from __future__ import annotations

from pathlib import Path

import pytest

from optiforge.agents.team import asolve

ROOT = Path(__file__).resolve().parents[3]

ACCOUNTANTS = (
    "An accounting firm has senior accountants earning $3000 per week and junior accountants "
    "earning $1000 per week. The contracts with companies to provide accounting services "
    "require at least 100 accountants, of whom at least 5 must be senior accountants. To make "
    "sure there is enough experience on the accounting team, the number of senior accountants "
    "should be at least a third of the number to junior accountants. The firm wants to keep "
    "the weekly wage bill below $150000. Formulate an LP to minimize the wage bill."
)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ((ROOT / "examples/problems/printers.txt").read_text(), 5050.0),
        (ACCOUNTANTS, 150000.0),
    ],
    ids=["printers", "accountants"],
)
async def test_team_solves_small_problems(coder_llm, text, answer):
    sol = await asolve(text, llm=coder_llm, samples=3, budget=6)
    assert sol.answer is not None, (sol.failure_class, sol.error)
    assert abs(sol.answer - answer) / (abs(answer) + 1) < 1e-6
    assert sol.result is not None and sol.result.ok
    assert sol.formulation is not None and sol.code
    assert 1 <= sum(s.calls for s in sol.steps if s.role == "formulator") <= 6
