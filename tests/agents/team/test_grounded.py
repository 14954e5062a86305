"""The ``grounded_critique`` lever: findings from the solution on hand-built IRs, and in a
scripted team run (the critic and the repair see them)."""

from __future__ import annotations

import json

import pytest

from optiforge.agents.team import asolve
from optiforge.agents.team.grounded import grounded_issues, mentioned_variables, sentences
from optiforge.agents.team.state import TeamConfig
from optiforge.llm.testing import ScriptedLLM
from optiforge.solvers import ModelIR, solve_ir
from optiforge.solvers.result import SolveResult, SolveStatus

FURNITURE = (
    "A shop makes chairs and tables. Each chair takes 2 hours and each table takes 3 hours. "
    "Each week at most 100 hours are available. The shop must produce at least 5 chairs. "
    "A chair gives $20 of profit and a table $45. How many of each should be made to "
    "maximize profit?"
)


def _ir(constraints):
    return {
        "variables": [
            {"name": "chairs", "description": "number of chairs"},
            {"name": "tables", "description": "number of tables"},
        ],
        "objective": {"sense": "maximize", "expression": "20*chairs + 45*tables"},
        "constraints": [
            {"name": f"c{i + 1}", "expression": e, "source": s}
            for i, (s, e) in enumerate(constraints)
        ],
    }


def _solve(ir):
    return solve_ir(ModelIR.from_json(ir))


def test_a_stated_requirement_whose_variable_is_zero_is_flagged_with_the_binding_rows():
    ir = _ir([("Each week at most 100 hours are available", "2*chairs + 3*tables <= 100")])
    res = _solve(ir)
    assert res.variables["chairs"] == pytest.approx(0)
    issues = grounded_issues(FURNITURE, ir, res)
    req = [i for i in issues if i.check == "grounded_requirement"]
    assert len(req) == 1 and req[0].severity == "warning"
    msg = req[0].message
    assert msg.startswith("chairs = 0") and "must produce at least 5 chairs" in msg
    assert "c1 (`2*chairs + 3*tables <= 100`, from 'Each week at most 100 hours" in msg
    assert "binds" in msg
    # 5 is a stated demand that no constraint uses.
    unused = [i for i in issues if i.check == "grounded_unused_number"]
    assert [u.message.endswith("no constraint uses 5") for u in unused] == [True]


def test_a_model_with_every_requirement_gives_no_finding():
    ir = _ir(
        [
            ("Each week at most 100 hours are available", "2*chairs + 3*tables <= 100"),
            ("The shop must produce at least 5 chairs", "chairs >= 5"),
        ]
    )
    assert grounded_issues(FURNITURE, ir, _solve(ir)) == []


def test_a_limit_no_constraint_uses_is_flagged():
    ir = _ir(
        [
            ("The shop must produce at least 5 chairs", "chairs >= 5"),
            ("", "chairs <= 30"),
            ("", "tables <= 30"),
        ]
    )
    issues = grounded_issues(FURNITURE, ir, _solve(ir))
    assert [i.check for i in issues] == ["grounded_unused_number"]
    assert "at most 100 hours" in issues[0].message and "uses 100" in issues[0].message


def test_no_solution_no_findings_and_ratio_sentences_are_not_requirements():
    ir = _ir([("", "2*chairs + 3*tables <= 100")])
    failed = SolveResult(status=SolveStatus.INFEASIBLE)
    assert grounded_issues(FURNITURE, ir, failed) == []
    assert grounded_issues(FURNITURE, ir, None) == []
    text = "There must be at least 3 times as many chairs as tables. At most 100 hours."
    res = SolveResult(
        status=SolveStatus.OPTIMAL, objective=0.0, variables={"chairs": 0.0, "tables": 0.0}
    )
    assert all(i.check != "grounded_requirement" for i in grounded_issues(text, ir, res))


def test_sentences_and_mentions():
    assert sentences("It costs $1.5 per unit. At most 100!") == [
        "It costs $1.5 per unit.",
        "At most 100!",
    ]
    vs = [
        {"name": "color", "description": "number of color printers"},
        {"name": "bw", "description": "number of black and white printers"},
    ]
    assert mentioned_variables("Black and white printers sell less than color ones", vs) == [
        "bw",
        "color",
    ]
    boxes = [{"name": "boxes", "description": ""}, {"name": "batteries", "description": ""}]
    assert mentioned_variables("a battery per box", boxes) == ["batteries", "boxes"]


MISSING_DEMAND = json.dumps(
    {
        "variables": [
            {
                "name": "chairs",
                "description": "number of chairs",
                "units": "chairs",
                "domain": "integer",
            },
            {
                "name": "tables",
                "description": "number of tables",
                "units": "tables",
                "domain": "integer",
            },
        ],
        "objective": {"sense": "maximize", "expression": "20*chairs + 45*tables"},
        "constraints": [
            {
                "source": "Each week at most 100 hours are available",
                "expression": "2*chairs + 3*tables <= 100",
            }
        ],
    }
)
FIXED = json.dumps(
    {
        **json.loads(MISSING_DEMAND),
        "constraints": [
            {
                "source": "Each week at most 100 hours are available",
                "expression": "2*chairs + 3*tables <= 100",
            },
            {"source": "The shop must produce at least 5 chairs", "expression": "chairs >= 5"},
        ],
    }
)
CRITIQUE = json.dumps(
    {"verdict": "wrong", "problems": ["chairs demand missing"], "fixes": ["add chairs >= 5"]}
)


def _script(first, then):
    seen = {"formulator": 0}

    def script(messages, tag=None, **kw):
        if tag == "formulator":
            seen["formulator"] += 1
            return first if seen["formulator"] == 1 else then
        return CRITIQUE

    return script


async def test_the_findings_reach_the_critic_and_the_repair_and_the_lever_is_recorded():
    llm = ScriptedLLM(_script(MISSING_DEMAND, FIXED))
    sol = await asolve(
        FURNITURE, llm=llm, samples=1, budget=3, config=TeamConfig(grounded_critique=True)
    )
    assert sol.levers == ["grounded_critique"]
    critic = [r for r in llm.requests if r.tag == "critic"]
    assert critic and "chairs = 0 at the optimum although the text says" in critic[0].prompt
    repair = [r for r in llm.requests if r.tag == "formulator" and len(r.messages) == 4]
    assert repair and "must produce at least 5 chairs" in repair[0].prompt
    # The repaired model (chairs >= 5) answers: 5 chairs, then tables for the 90 hours left.
    assert sol.answer == pytest.approx(20 * 5 + 45 * 30)
    steps = [s for s in sol.steps if s.role == "critic" and s.detail.get("grounded")]
    assert steps and steps[0].summary.startswith("grounded critique of attempt 0")


async def test_without_the_lever_or_without_a_finding_nothing_fires():
    llm = ScriptedLLM(_script(MISSING_DEMAND, FIXED))
    sol = await asolve(FURNITURE, llm=llm, samples=1, budget=3)
    assert sol.levers == []
    # Without the lever the first attempt checks "ok": no critique, no repair of it.
    assert not [r for r in llm.requests if r.tag == "critic"]
    assert not [s for s in sol.steps if s.detail.get("grounded")]
    llm = ScriptedLLM(_script(FIXED, FIXED))
    sol = await asolve(
        FURNITURE, llm=llm, samples=1, budget=3, config=TeamConfig(grounded_critique=True)
    )
    assert sol.levers == [] and sol.answer == pytest.approx(20 * 5 + 45 * 30)
