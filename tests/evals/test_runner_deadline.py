"""The eval runner's deadline: the agent is told the time limit and answers by it; the
runner cancels only a few seconds later; every problem keeps its costs.

The team and direct agents run for real (solver and sandbox included) on a scripted slow
model whose requests sleep inside the client, so the deadline cancels them as it would
cancel real ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from optiforge.agents.spec import AgentSpec, BuiltAgent
from optiforge.datasets.problem import Problem
from optiforge.evals import EvalError, read_journal, run_eval
from optiforge.evals.executor import LocalExecutor
from optiforge.evals.runner import USAGE_FIELDS, cancel_grace
from optiforge.llm.testing import ScriptedLLM
from optiforge.llm.usage import usage_scope

#: How late a deadline may be honoured on a loaded 2-core machine.
SLACK = 1.0
HANG = 3600.0

TEXT = (
    "A company makes color printers and black and white printers. At most 20 color printers "
    "and at most 30 black and white printers can be made per day, and at most 35 printers of "
    "either type in total. A color printer makes a profit of $200 and a black and white one "
    "$70. How many of each should be made to maximize the profit?"
)


def _draft(total: int) -> str:
    var = {"units": "printers", "domain": "integer"}
    return json.dumps(
        {
            "variables": [
                {"name": "color", "description": "color printers", **var},
                {"name": "bw", "description": "black and white printers", **var},
            ],
            "objective": {"sense": "maximize", "expression": "200*color + 70*bw"},
            "constraints": [
                {"source": "", "expression": e}
                for e in ("color <= 20", "bw <= 30", f"color + bw <= {total}")
            ],
        }
    )


GOOD, WRONG = _draft(35), _draft(30)  # 5050, 4700
CODE = """```python
import pyomo.environ as pyo
m = pyo.ConcreteModel()
m.c = pyo.Var(domain=pyo.NonNegativeIntegers)
m.b = pyo.Var(domain=pyo.NonNegativeIntegers)
m.obj = pyo.Objective(expr=200*m.c + 70*m.b, sense=pyo.maximize)
m.k = pyo.ConstraintList()
m.k.add(m.c <= 20)
m.k.add(m.b <= 30)
m.k.add(m.c + m.b <= 35)
res = pyo.SolverFactory('appsi_highs').solve(m)
report(model=m, results=res)
```"""


async def _script(messages, *, tag, temperature, **_):
    """``[fast]`` answers at once; ``[late]``: the greedy formulation at once, the sampled
    ones never; ``[stuck]``: nothing ever; ``[deaf]``: see :func:`_agent`."""
    text = "\n".join(str(m["content"]) for m in messages)
    if "[stuck]" in text or ("[late]" in text and temperature > 0):
        await asyncio.sleep(HANG)
    if tag == "deaf":
        if "again" in text:
            await asyncio.sleep(HANG)
        return "ok"
    if tag == "direct":
        return CODE
    await asyncio.sleep(0.01)
    return GOOD if temperature == 0 else WRONG if "[late]" in text else GOOD


def _problem(case: str) -> Problem:
    return Problem(
        id=case, dataset="toy", text=f"{TEXT} [{case}]", answer=5050.0, answer_kind="value"
    )


def _agent(llm, agent: BuiltAgent):
    """The team, except that a ``[deaf]`` problem ignores its deadline (as an agent that
    does not know it would): one answered request, then one that never ends."""

    async def run(problem: Problem):
        if "[deaf]" in problem.text:
            await llm.achat(problem.text, tag="deaf")
            await llm.achat(problem.text + " again", tag="deaf")
        return await agent.solve(problem)

    return run


def _sums(records) -> dict[str, int]:
    return {f: sum(getattr(r, f) for r in records) for f in USAGE_FIELDS}


async def test_deadline_answers_and_costs_survive_for_every_kind_of_stop(tmp_path):
    T = 1.0
    grace = cancel_grace(T)
    llm = ScriptedLLM(_script, concurrency=32)
    built = BuiltAgent(AgentSpec(agent="team", time_limit=T), llm=llm)
    out = tmp_path / "run"
    await asyncio.wait_for(
        run_eval(
            [_problem(c) for c in ("fast", "late", "stuck", "deaf")],
            _agent(llm, built),
            out,
            concurrency=4,
            problem_timeout=T,
            max_consecutive_failures=0,
            usage=built.usage,
            usage_scope=usage_scope,
        ),
        60,
    )
    recs = {r.id: r for r in read_journal(out).records}
    assert all(r.time_limit_s == T and r.usage_source == "client" for r in recs.values())

    fast = recs["fast"]
    assert fast.stopped is None and fast.failure_class is None and fast.elapsed_s < T

    # the deadline came while two samples were in flight: the greedy answer is kept
    late = recs["late"]
    assert late.stopped == "deadline" and late.prediction == pytest.approx(5050)
    assert late.correct["strict_1e-6"] is True and late.failure_class is None
    assert T <= late.elapsed_s < T + SLACK
    assert late.calls == 1 and late.failed_calls == 2 and late.prompt_tokens > 0
    assert [s.role for s in late.steps if "request cancelled" in s.summary] == ["formulator"] * 2
    assert "stopped at the deadline" in " ".join(s.summary for s in late.steps)

    # nothing came back in time: a timeout, with its steps and cancelled requests
    stuck = recs["stuck"]
    assert stuck.stopped == "deadline" and stuck.failure_class == "timeout"
    assert stuck.prediction is None and "time limit of 1 s" in stuck.error
    assert T <= stuck.elapsed_s < T + SLACK
    assert stuck.calls == 0 and stuck.failed_calls == 3
    assert sum("request cancelled" in s.summary for s in stuck.steps) == 3

    # an agent that ignores its deadline is cancelled `grace` s after it; its calls stay
    deaf = recs["deaf"]
    assert deaf.stopped == "cancelled" and deaf.failure_class == "timeout"
    assert T + grace <= deaf.elapsed_s < T + grace + SLACK
    assert deaf.calls == 1 and deaf.failed_calls == 1 and deaf.prompt_tokens > 0
    assert [s.role for s in deaf.steps] == ["deaf"] and deaf.steps[0].calls == 1
    assert "cancelled 1 s after it" in deaf.error

    # per-problem sums equal the client's usage, as run.json has it
    session = json.loads((out / "run.json").read_text())["sessions"][0]
    assert session["usage_unjournalled"] is None
    assert session["time_limit_s"] == T and session["cancel_grace_s"] == grace
    client = llm.usage.snapshot()
    for f in USAGE_FIELDS:
        assert _sums(recs.values())[f] == getattr(client, f) == session["usage"][f], f
    assert client.failed_calls == 6


async def test_direct_and_team_under_the_same_deadline(tmp_path):
    # The same slow model, the same --timeout: both stop at it and record their costs.
    # (4 s: the direct agent's program needs a second or two in the sandbox.)
    T = 4.0
    for agent in ("team", "direct"):
        llm = ScriptedLLM(_script, concurrency=8)
        built = BuiltAgent(AgentSpec(agent=agent, time_limit=T), llm=llm)
        out = tmp_path / agent
        await run_eval(
            [_problem("stuck"), _problem("fast")],
            None,
            out,
            executor=LocalExecutor(built),
            problem_timeout=T,
            max_consecutive_failures=0,
            usage=built.usage,
            usage_scope=usage_scope,
        )
        recs = {r.id: r for r in read_journal(out).records}
        stuck, fast = recs["stuck"], recs["fast"]
        assert stuck.agent == agent and stuck.stopped == "deadline", agent
        assert stuck.failure_class == "timeout" and T <= stuck.elapsed_s < T + SLACK
        assert stuck.failed_calls >= 1 and stuck.steps
        assert fast.correct["strict_1e-6"] is True and fast.stopped is None, (agent, fast.error)
        session = json.loads((out / "run.json").read_text())["sessions"][0]
        for f in USAGE_FIELDS:
            assert _sums(recs.values())[f] == session["usage"][f], (agent, f)


async def test_grace_can_be_set_and_is_checked(tmp_path):
    async def deaf(problem):
        await asyncio.sleep(HANG)

    t0 = asyncio.get_running_loop().time()
    await run_eval([_problem("x")], deaf, tmp_path / "a", problem_timeout=0.2, grace=0.1)
    assert asyncio.get_running_loop().time() - t0 < 0.3 + SLACK
    (rec,) = read_journal(tmp_path / "a").records
    assert rec.stopped == "cancelled" and rec.time_limit_s == 0.2
    with pytest.raises(EvalError, match="grace"):
        await run_eval([_problem("x")], deaf, tmp_path / "b", problem_timeout=1, grace=-1)
    with pytest.raises(EvalError, match="timeout"):
        await run_eval([_problem("x")], deaf, tmp_path / "c", problem_timeout=-1)
    assert cancel_grace(1) == 1.0 and cancel_grace(60) == 3.0 and cancel_grace(900) == 5.0


def test_eval_cli_gives_the_agent_its_timeout(tmp_path):
    agents = tmp_path / "agents.py"
    agents.write_text(
        "import asyncio\n"
        "from optiforge.agents.solution import Solution\n"
        "async def timed(problem, time_limit=None):\n"
        "    await asyncio.sleep(time_limit * 0.5)\n"
        "    return Solution(problem_text=problem.text, agent='t', answer=problem.answer,\n"
        "                    error=f'limit {time_limit}')\n"
    )
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "optiforge", "eval", "nl4opt", "--limit", "2", "--agent-fn",
         f"{agents}:timed", "--timeout", "0.6", "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    recs = read_journal(out).records
    assert len(recs) == 2
    assert all(r.error == "limit 0.6" and r.time_limit_s == 0.6 for r in recs)
    assert all(r.stopped is None and r.failure_class is None for r in recs)
