"""The team and the direct agent end to end with scripted models (real solver, real sandbox)."""

from __future__ import annotations

import json

import pytest

from optiforge.agents.team import TeamBudget, TeamError, asolve, solve
from optiforge.agents.team.prompts import PromptFileError, load_prompt_values
from optiforge.agents.team.roles import extract_code
from optiforge.llm.testing import ScriptedLLM

PRINTERS = (
    "An office supply company makes color printers and black and white printers. The color "
    "printer team can produce at most 20 color printers per day while the black and white "
    "printer team can produce at most 30 per day. The paper tray machine can make at most 35 "
    "printers of either type each day. Color printers generate a profit of $200 per printer "
    "while black and white printers generate a profit of $70 per printer. How many of each "
    "printer should be made to maximize the company's profit?"
)


def draft(constraints, sense="maximize", obj="200*color + 70*bw", domain="integer"):
    return json.dumps(
        {
            "variables": [
                {
                    "name": "color",
                    "description": "number of color printers",
                    "units": "printers",
                    "domain": domain,
                },
                {
                    "name": "bw",
                    "description": "number of black and white printers",
                    "units": "printers",
                    "domain": domain,
                },
            ],
            "objective": {"sense": sense, "expression": obj},
            "constraints": [{"source": "", "expression": c} for c in constraints],
        }
    )


GOOD = draft(["color <= 20", "bw <= 30", "color + bw <= 35"])
WRONG = draft(["color <= 20", "bw <= 30", "color + bw <= 30"])  # 4700
INFEASIBLE = draft(["color >= 40", "color <= 20"])
CRITIQUE = json.dumps({"verdict": "wrong", "problems": ["c1 contradicts c2"], "fixes": ["drop c1"]})
GOOD_CODE = """```python
import pyomo.environ as pyo
m = pyo.ConcreteModel()
m.c = pyo.Var(domain=pyo.NonNegativeIntegers)
m.b = pyo.Var(domain=pyo.NonNegativeIntegers)
m.obj = pyo.Objective(expr=200*m.c + 70*m.b, sense=pyo.maximize)
m.k1 = pyo.Constraint(expr=m.c <= 20)
m.k2 = pyo.Constraint(expr=m.b <= 30)
m.k3 = pyo.Constraint(expr=m.c + m.b <= 35)
res = pyo.SolverFactory('appsi_highs').solve(m)
report(model=m, results=res)
```"""


def router(formulator, critic=CRITIQUE, coder=GOOD_CODE):
    """A scripted model answering per role; ``formulator`` is a list consumed in order."""
    queue = list(formulator)

    def script(messages, tag=None, **kw):
        if tag == "formulator":
            return queue.pop(0) if len(queue) > 1 else queue[0]
        if tag == "critic":
            return critic
        return coder

    return script


async def test_agreeing_samples_stop_early():
    llm = ScriptedLLM(router([GOOD]))
    sol = await asolve(PRINTERS, llm=llm, samples=3)
    assert sol.answer == pytest.approx(5050)
    assert sol.result is not None and sol.result.status.value == "optimal"
    assert sol.formulation.objective.sense == "maximize"
    assert sol.formulation_markdown and sol.code
    assert sol.calls == 3 and len(llm.requests) == 3
    # one greedy and two sampled formulations
    temps = sorted(r.temperature for r in llm.requests)
    assert temps == [0.0, 0.7, 0.7]
    assert sol.failure_class is None
    roles = {s.role for s in sol.steps}
    assert {"planner", "formulator", "solver", "scheduler"} <= roles
    assert sol.prompt_tokens > 0 and sol.completion_tokens > 0


async def test_majority_wins_over_a_wrong_sample():
    llm = ScriptedLLM(router([WRONG, GOOD, GOOD]))
    sol = await asolve(PRINTERS, llm=llm, samples=3)
    assert sol.answer == pytest.approx(5050)


async def test_sense_is_flipped_deterministically():
    bad_sense = draft(["color <= 20", "bw <= 30", "color + bw <= 35"], sense="minimize")
    llm = ScriptedLLM(router([bad_sense]))
    sol = await asolve(PRINTERS, llm=llm, samples=2)
    assert sol.answer == pytest.approx(5050)
    assert sol.formulation.objective.sense == "maximize"


async def test_inverted_limit_is_flipped_deterministically():
    # "can make at most 35 printers" written as >= 35: unbounded without the fix.
    inverted = draft(["color <= 20", "bw <= 30", "color + bw >= 35"])
    llm = ScriptedLLM(router([inverted]))
    sol = await asolve(PRINTERS, llm=llm, samples=2)
    assert sol.answer == pytest.approx(5050) and len(llm.requests) == 2  # no repair needed
    assert "color + bw <= 35" in [c.expression for c in sol.formulation.constraints]
    solver_steps = [s.summary for s in sol.steps if s.role == "solver"]
    assert all("flipped 1 constraint(s) to match the text" in x for x in solver_steps)


async def test_infeasible_formulation_is_repaired_with_critic_feedback():
    llm = ScriptedLLM(router([INFEASIBLE, GOOD]))
    sol = await asolve(PRINTERS, llm=llm, samples=1, budget=6)
    assert sol.answer == pytest.approx(5050)
    critic_calls = [r for r in llm.requests if r.tag == "critic"]
    assert critic_calls, "the critic was asked before the repair"
    assert "infeasible" in critic_calls[0].text.lower() or "no solution" in critic_calls[0].text
    repair = [r for r in llm.requests if r.tag == "formulator" and len(r.messages) == 4]
    assert repair and "drop c1" in repair[0].prompt
    assert any(s.plan_id == "repair" for s in sol.steps)


async def test_budget_is_respected_and_failure_is_classified():
    llm = ScriptedLLM(router([INFEASIBLE], coder="no code here"))
    sol = await asolve(PRINTERS, llm=llm, samples=1, budget=4)
    assert sol.answer is None
    assert len(llm.requests) <= 4
    assert sol.failure_class in ("infeasible", "formulation", "code_error", "no_answer")
    assert sol.error


async def test_code_route_rescues_unparseable_formulations():
    broken = draft(["color <= 20 +", "bw <= 30"])
    llm = ScriptedLLM(router([broken], critic=json.dumps({"verdict": "correct"})))
    sol = await asolve(
        PRINTERS,
        llm=llm,
        samples=1,
        budget=TeamBudget(llm_samples=10),
    )
    assert sol.answer == pytest.approx(5050)
    assert any(r.tag == "coder" for r in llm.requests)


async def test_roles_can_use_different_models():
    form = ScriptedLLM(router([GOOD]))
    crit = ScriptedLLM(CRITIQUE)
    sol = await asolve(PRINTERS, llm=form, roles={"critic": crit}, samples=2)
    assert sol.answer == pytest.approx(5050)
    with pytest.raises(TeamError, match="unknown role"):
        await asolve(PRINTERS, llm=form, roles={"judge": crit})


async def test_direct_agent_runs_one_program():
    llm = ScriptedLLM([GOOD_CODE])
    sol = await asolve(PRINTERS, llm=llm, agent="direct")
    assert sol.agent == "direct" and sol.answer == pytest.approx(5050)
    assert sol.calls == 1 and "appsi_highs" in sol.code
    bad = await asolve(
        PRINTERS, llm=ScriptedLLM(["```python\nraise ValueError('x')\n```"]), agent="direct"
    )
    assert bad.answer is None and bad.failure_class == "code_error" and "ValueError" in bad.error


def test_sync_solve_and_bad_arguments():
    sol = solve(PRINTERS, llm=ScriptedLLM(router([GOOD])), samples=2)
    assert sol.answer == pytest.approx(5050)
    with pytest.raises(TeamError, match="empty"):
        solve("   ", llm=ScriptedLLM(GOOD))
    with pytest.raises(TeamError, match="agent"):
        solve(PRINTERS, llm=ScriptedLLM(GOOD), agent="solo")
    with pytest.raises(TeamError, match="budget"):
        solve(PRINTERS, llm=ScriptedLLM(GOOD), budget=0)


def test_tuned_prompts_are_used(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"prompts": {"formulator_system": "TUNED RULES"}}))
    llm = ScriptedLLM(router([GOOD]))
    solve(PRINTERS, llm=llm, samples=1, prompts=path)
    assert llm.requests[0].system == "TUNED RULES"
    with pytest.raises(PromptFileError, match="unknown prompt"):
        load_prompt_values({"nope": "x"})
    with pytest.raises(PromptFileError, match="does not exist"):
        load_prompt_values(tmp_path / "missing.json")


def test_extract_code():
    assert extract_code("text\n```python\nimport x\n```\nmore") == "import x"
    assert extract_code("import pyomo.environ as pyo\nm = 1").startswith("import pyomo")
    assert extract_code("no code") is None


async def test_disagreeing_samples_stop_at_the_budget():
    # every formulation differs and is suspicious: the loop must end when the budget is spent
    answers = [
        draft([f"color <= {k}", "bw <= 30", "color + bw <= 35", "bw >= 777"]) for k in range(1, 30)
    ]
    llm = ScriptedLLM(router(answers, critic=json.dumps({"verdict": "correct"}), coder="none"))
    sol = await asolve(PRINTERS, llm=llm, samples=2, budget=5)
    assert len(llm.requests) <= 5
    assert sol.steps[-1].role == "scheduler"


async def test_a_failed_structured_call_keeps_its_cost_in_the_step():
    """A formulator reply that never validates (the call and its re-ask) is charged with
    the calls and tokens the client counted, not as one free call."""
    from optiforge.agents.team.prompts import PromptSet
    from optiforge.agents.team.roles import formulate

    llm = ScriptedLLM(["this is not JSON", "still not JSON"])
    reply = await formulate(llm, PromptSet(), PRINTERS)
    assert reply.error and not reply.values
    usage = llm.usage.snapshot()
    assert reply.step.calls == usage.calls == 2
    assert reply.step.prompt_tokens == usage.prompt_tokens > 0
    assert reply.step.completion_tokens == usage.completion_tokens > 0
