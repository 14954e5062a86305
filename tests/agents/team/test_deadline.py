"""The team and the direct agent under a deadline, with a scripted slow model.

The model's replies come after scripted delays (``asyncio.sleep`` inside the client, so a
cancelled request is cancelled as a real one would be). Checked: the deadline is honoured
within a second; the best answer so far comes back with ``stopped="deadline"``; no new step
starts when its measured cost exceeds the time left; cancelled requests are counted.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import pytest

from optiforge.agents.solution import StepRecord
from optiforge.agents.team import TeamBudget, TeamConfig, TeamError, asolve, asolve_graph
from optiforge.agents.team.scheduler import UCBScheduler
from optiforge.agents.team.state import Attempt, RunState
from optiforge.agents.team.team import _next_plan
from optiforge.llm.testing import ScriptedLLM
from optiforge.solvers import SolveResult, SolveStatus

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_team import GOOD, GOOD_CODE, PRINTERS, WRONG, draft

#: How late a deadline may be honoured on a loaded 2-core machine (it is met in
#: milliseconds when idle: the decision after it needs no model and no solver).
SLACK = 1.0
HANG = 3600.0  # a request that would never finish on its own

WRONG2 = draft(["color <= 20", "bw <= 30", "color + bw <= 33"])  # 200*20 + 70*13 = 4910


def slow(replies, delays):
    """A scripted model: ``replies[tag]`` is the reply (a list: one per call, last one
    repeated; a dict: by temperature 0 / >0); ``delays[tag]`` the seconds it takes (a
    callable of the temperature, or a number)."""
    calls: dict[str, int] = {}

    async def script(messages, *, tag, temperature, **_):
        i = calls[tag] = calls.get(tag, -1) + 1
        d = delays.get(tag, 0.0)
        await asyncio.sleep(d(temperature) if callable(d) else d)
        r = replies[tag]
        if isinstance(r, dict):
            return r["greedy" if temperature == 0 else "sampled"]
        return r[min(i, len(r) - 1)] if isinstance(r, list) else r

    return ScriptedLLM(script)


async def timed(coro):
    t0 = time.monotonic()
    out = await coro
    return out, time.monotonic() - t0


async def test_deadline_returns_the_checked_answer_and_cancels_the_rest():
    # The greedy formulation comes at once; the two sampled ones would take an hour.
    llm = slow(
        {"formulator": {"greedy": GOOD, "sampled": WRONG}},
        {"formulator": lambda t: 0.05 if t == 0 else HANG},
    )
    sol, took = await timed(asyncio.wait_for(asolve(PRINTERS, llm=llm, time_limit=1.5), 30))
    assert 1.5 <= took < 1.5 + SLACK
    assert sol.answer == pytest.approx(5050)  # the vote so far: the greedy one
    assert sol.stopped == "deadline" and sol.time_limit_s == 1.5
    assert sol.failure_class is None
    assert sol.result is not None and sol.result.ok and sol.formulation is not None
    cancelled = [s for s in sol.steps if s.detail.get("cancelled")]
    assert [s.role for s in cancelled] == ["formulator", "formulator"]
    assert all(not s.ok and s.elapsed_s >= 1.0 for s in cancelled)
    assert any(s.role == "scheduler" and "stopped at the deadline" in s.summary for s in sol.steps)
    # the client counted one answered and two cancelled requests; the steps the answer
    assert llm.usage.calls == 1 and llm.usage.failed_calls == 2
    assert sol.calls == 1 and sol.prompt_tokens == llm.usage.prompt_tokens > 0


async def test_deadline_without_an_answer_is_a_timeout_with_its_costs():
    llm = slow({"formulator": GOOD}, {"formulator": HANG})
    sol, took = await timed(asyncio.wait_for(asolve(PRINTERS, llm=llm, time_limit=0.5), 30))
    assert 0.5 <= took < 0.5 + SLACK
    assert sol.answer is None and sol.stopped == "deadline"
    assert sol.failure_class == "timeout"
    assert "time limit of 0.5 s" in sol.error and "deadline" in sol.error
    assert sum(1 for s in sol.steps if s.detail.get("cancelled")) == 3
    assert llm.usage.failed_calls == 3 and llm.usage.calls == 0


async def test_no_step_starts_when_its_measured_cost_exceeds_the_time_left():
    # Every formulation takes 0.6 s and the three disagree, so the vote is not confident
    # and the team would pull again; with 1.1 s allowed, 0.5 s are left after the first
    # round, less than a pull measured to take 0.6 s plus its solve: no request is sent.
    replies = {"formulator": [GOOD, WRONG, WRONG2], "coder": GOOD_CODE, "critic": "{}"}
    delays = {"formulator": 0.6, "coder": 0.6, "critic": 0.6}
    llm = slow(replies, delays)
    sol, took = await timed(asolve(PRINTERS, llm=llm, samples=3, time_limit=1.1))
    assert len(llm.requests) == 3
    assert took < 1.1  # it stopped before the deadline, not at it
    assert sol.stopped == "time_left" and sol.failure_class is None
    assert sol.answer == pytest.approx(5050)  # a tie of three: the greedy one wins
    stop = next(s for s in sol.steps if s.detail.get("stopped") == "time_left")
    assert {"sample", "code"} <= set(stop.detail["estimates_s"])
    assert all(t >= 0.6 for t in stop.detail["estimates_s"].values())
    assert stop.detail["time_left_s"] < min(stop.detail["estimates_s"].values())
    assert llm.usage.failed_calls == 0

    # With time to spare the same run goes on pulling: the stop above was the time's.
    llm2 = slow(replies, delays)
    sol2 = await asolve(PRINTERS, llm=llm2, samples=3, time_limit=60)
    assert len(llm2.requests) > 3 and sol2.stopped is None


def test_the_best_plan_that_fits_the_time_left_is_chosen():
    run = RunState(PRINTERS, {}, None, TeamBudget(), TeamConfig(), 3, deadline=time.monotonic() + 1)
    answered(run)
    sched = UCBScheduler()
    sched.add("sample", prior=0.9)  # the bandit's favourite...
    sched.add("code", prior=0.1)
    run.note_pull("sample", 2.0)  # ...measured at 2 s, more than the 1 s left
    run.note_pull("code", 0.2)
    assert _next_plan(run, sched) == ("code", 1)
    assert run.stopped is None
    run.note_pull("code", 3.0)  # now code averages 1.6 s: nothing fits
    assert _next_plan(run, sched) == (None, 0)
    assert run.stopped == "time_left"
    assert run.steps[-1].detail["estimates_s"] == {"sample": 2.0, "code": 1.6}
    # without a deadline the bandit decides alone
    free = RunState(PRINTERS, {}, None, TeamBudget(), TeamConfig(), 3)
    free.note_pull("sample", 1e6)
    assert _next_plan(free, sched) == ("sample", 2) and free.stopped is None


def answered(run: RunState) -> None:
    """Give ``run`` one solved attempt (an answer to fall back on)."""
    a = Attempt(index=0, plan="sample", source="ir", verdict="ok")
    a.result = SolveResult(status=SolveStatus.OPTIMAL, objective=1.0)
    run.attempts.append(a)


def test_without_an_answer_the_cheapest_plan_is_tried_though_it_may_not_fit():
    """optibench-0205 (long20, training half) stopped with 122 s left and nothing to answer:
    its three formulations were infeasible and every plan was measured above 122 s (from
    calls that ran three at a time). With nothing to lose, one more step is tried."""
    run = RunState(PRINTERS, {}, None, TeamBudget(), TeamConfig(), 3, deadline=time.monotonic() + 1)
    sched = UCBScheduler()
    sched.add("sample", prior=0.9)
    sched.add("code", prior=0.1)
    run.note_pull("sample", 2.0)
    run.note_pull("code", 1.6)
    assert _next_plan(run, sched) == ("code", 1)
    assert run.stopped is None
    assert run.steps[-1].detail["gamble"] == "code"
    assert "no answer yet: trying code" in run.steps[-1].summary
    # With an answer in hand the run stops instead.
    answered(run)
    assert _next_plan(run, sched) == (None, 0) and run.stopped == "time_left"


def test_an_unpulled_plan_is_estimated_from_its_roles_measured_calls():
    run = RunState(PRINTERS, {}, None, TeamBudget(), TeamConfig(), 3)
    assert run.estimate_pull("sample") is None  # nothing measured: no estimate, no stop
    run.steps += [
        StepRecord(role="formulator", calls=1, elapsed_s=2.0),
        StepRecord(role="formulator", calls=1, elapsed_s=4.0),
        StepRecord(role="formulator", calls=0, elapsed_s=9.0, detail={"cancelled": True}),
        StepRecord(role="critic", calls=1, elapsed_s=0.0, detail={"cached": True}),
        StepRecord(role="solver", elapsed_s=0.5),
    ]
    assert run.estimate_pull("sample") == pytest.approx(3.0 + 0.5)
    # critic and coder not measured: the mean call of every role stands in for them
    assert run.estimate_pull("repair") == pytest.approx(3.0 + 3.0 + 0.5)
    assert run.estimate_pull("code") == pytest.approx(3.0 + 0.5)
    no_critic = RunState(PRINTERS, {}, None, TeamBudget(), TeamConfig(llm_critic=False), 3)
    no_critic.steps = run.steps
    assert no_critic.estimate_pull("repair") == pytest.approx(3.0 + 0.5)


async def test_direct_agent_keeps_the_same_deadline():
    llm = slow({"direct": GOOD_CODE}, {"direct": HANG})
    sol, took = await timed(asolve(PRINTERS, llm=llm, agent="direct", time_limit=0.5))
    assert 0.5 <= took < 0.5 + SLACK
    assert sol.answer is None and sol.failure_class == "timeout"
    assert sol.stopped == "deadline" and sol.time_limit_s == 0.5
    assert [s.role for s in sol.steps] == ["direct"] and sol.steps[0].detail["cancelled"]
    assert llm.usage.failed_calls == 1

    fast = slow({"direct": GOOD_CODE}, {})
    sol = await asolve(PRINTERS, llm=fast, agent="direct", time_limit=60)
    assert sol.answer == pytest.approx(5050) and sol.stopped is None


async def test_recorded_run_stops_at_the_deadline_too():
    llm = slow(
        {"formulator": {"greedy": GOOD, "sampled": WRONG}},
        {"formulator": lambda t: 0.05 if t == 0 else HANG},
    )
    out, took = await timed(asolve_graph(PRINTERS, llm=llm, time_limit=1.0))
    assert took < 1.0 + SLACK
    assert out.value.answer == pytest.approx(5050) and out.value.stopped == "deadline"


async def test_time_limit_and_budget_seconds_are_one_limit():
    llm = slow({"formulator": GOOD}, {"formulator": HANG})
    # the smaller of the two wins
    sol, took = await timed(
        asolve(PRINTERS, llm=llm, budget=TeamBudget(seconds=0.4), time_limit=50)
    )
    assert took < 0.4 + SLACK and sol.time_limit_s == 0.4 and sol.stopped == "deadline"
    for bad in (0, -1, "10", True):
        with pytest.raises(TeamError, match="time_limit"):
            await asolve(PRINTERS, llm=llm, time_limit=bad)


async def test_no_deadline_no_change():
    llm = ScriptedLLM(
        lambda m, tag, **kw: GOOD if tag == "formulator" else json.dumps({"verdict": "ok"})
    )
    sol = await asolve(PRINTERS, llm=llm)
    assert sol.stopped is None and sol.time_limit_s is None and sol.answer == pytest.approx(5050)
