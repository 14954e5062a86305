"""The runner with fake agents: concurrency, journal content, resume, failures, reports."""

import asyncio
import json

import pytest

from optiforge.agents.solution import Solution
from optiforge.datasets import load_dataset
from optiforge.evals import EvalError, RunMeta, read_journal, run_eval
from optiforge.evals.scoring import DEFAULT_RULE
from optiforge.solvers.result import SolveResult


def _problems(n=20):
    # nl4opt-0001..0020; among them nl4opt-0014 and -0017 have an infeasible ground truth
    return load_dataset("nl4opt", limit=n)


async def test_journal_lines_scoring_and_failure_classes(tmp_path, fake):
    problems = _problems()
    out = await run_eval(problems, fake.scripted, tmp_path, concurrency=3)
    recs = {r.id: r for r in read_journal(tmp_path).records}
    assert len(recs) == 20 and out.finished == 20
    for p in problems:
        r = recs[p.id]
        assert r.gt_kind == p.answer_kind and r.answer_field == "answer"
        digit = int(p.id[-1])
        if digit <= 5:
            assert r.correct[DEFAULT_RULE] is True, r
            assert r.failure_class is None
        elif digit == 6:
            assert r.correct[DEFAULT_RULE] is False and r.failure_class == "formulation"
            assert r.executed
        elif digit == 7:
            if p.answer_kind == "infeasible":
                assert r.correct[DEFAULT_RULE] is True
            else:
                assert r.failure_class == "infeasible" and r.prediction_kind == "infeasible"
        elif digit == 8:
            assert r.failure_class == "agent_crash" and "fake agent crash" in r.error
        else:
            assert r.failure_class == "code_error" and not r.executed
    assert recs["nl4opt-0001"].code == "print('fake')"
    assert recs["nl4opt-0001"].tokens == 120 and recs["nl4opt-0001"].calls == 1
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["finished"] == 20 and s["complete"]
    assert s["accuracy"][DEFAULT_RULE]["correct"] == sum(
        1 for r in recs.values() if r.correct[DEFAULT_RULE]
    )
    assert s["failure_classes"]["agent_crash"] == 2
    assert s["tokens"]["total"] == 18 * 120  # crashes report no tokens
    assert 0 < s["execution_rate"] < 1
    assert set(s["by_category"]) == {"linear/no-table"}


async def test_bounded_concurrency(tmp_path):
    live = {"now": 0, "max": 0}

    async def agent(p):
        live["now"] += 1
        live["max"] = max(live["max"], live["now"])
        await asyncio.sleep(0.01)
        live["now"] -= 1
        return Solution(problem_text=p.text, agent="t", answer=p.answer)

    await run_eval(_problems(12), agent, tmp_path, concurrency=3, write_report=False)
    assert live["max"] == 3


async def test_resume_skips_finished_problems(tmp_path, fake):
    calls = []

    async def agent(p):
        calls.append(p.id)
        return await fake.always_right(p)

    ps = _problems(10)
    await run_eval(ps[:4], agent, tmp_path, meta=RunMeta(dataset="nl4opt", agent="x"))
    with pytest.raises(EvalError, match="--resume"):
        await run_eval(ps, agent, tmp_path, meta=RunMeta(dataset="nl4opt", agent="x"))
    out = await run_eval(
        ps, agent, tmp_path, meta=RunMeta(dataset="nl4opt", agent="x"), resume=True
    )
    assert out.skipped_done == 4 and out.finished == 6
    assert sorted(calls) == sorted(p.id for p in ps)  # each ran exactly once
    again = await run_eval(
        ps, agent, tmp_path, meta=RunMeta(dataset="nl4opt", agent="x"), resume=True
    )
    assert again.finished == 0 and len(calls) == 10
    meta = json.loads((tmp_path / "run.json").read_text())
    assert [s["status"] for s in meta["sessions"]] == ["completed"] * 3
    assert (
        json.loads((tmp_path / "summary.json").read_text())["accuracy"][DEFAULT_RULE]["accuracy"]
        == 1.0
    )


async def test_resume_refuses_a_different_run(tmp_path, fake):
    ps = _problems(2)
    await run_eval(ps, fake.always_right, tmp_path, meta=RunMeta(dataset="nl4opt", agent="team"))
    with pytest.raises(EvalError, match=r"different run.*agent"):
        await run_eval(
            ps,
            fake.always_right,
            tmp_path,
            meta=RunMeta(dataset="nl4opt", agent="direct"),
            resume=True,
        )


async def test_unreachable_server_stops_the_run_with_a_clear_error(tmp_path, fake):
    with pytest.raises(EvalError, match=r"in a row failed with llm_error.*model server.*--resume"):
        await run_eval(_problems(20), fake.server_down, tmp_path, concurrency=2)
    recs = read_journal(tmp_path).records
    assert 5 <= len(recs) < 20 and all(r.failure_class == "llm_error" for r in recs)
    assert json.loads((tmp_path / "run.json").read_text())["sessions"][0]["status"] == "aborted"


async def test_retry_failed_reruns_infrastructure_failures_only(tmp_path, fake):
    ps = _problems(10)
    await run_eval(ps, fake.scripted, tmp_path, concurrency=2)  # nl4opt-0008 crashes
    seen = []

    async def fixed(p):
        seen.append(p.id)
        return await fake.always_right(p)

    await run_eval(ps, fixed, tmp_path, resume=True, retry_failed=True)
    assert seen == ["nl4opt-0008"]
    latest = read_journal(tmp_path).latest()
    assert latest["nl4opt-0008"].correct[DEFAULT_RULE] is True
    assert latest["nl4opt-0006"].failure_class == "formulation"  # not retried


async def test_problem_timeout(tmp_path):
    async def slow(p):
        await asyncio.sleep(5)

    await run_eval(_problems(2), slow, tmp_path, problem_timeout=0.05, max_consecutive_failures=0)
    recs = read_journal(tmp_path).records
    assert [r.failure_class for r in recs] == ["timeout", "timeout"]
    # an agent that does not stop by its deadline is cancelled a grace period after it
    assert all(r.stopped == "cancelled" and r.time_limit_s == 0.05 for r in recs)
    assert all(r.elapsed_s >= 0.05 + 1.0 for r in recs)


async def test_cancellation_keeps_finished_lines_and_marks_interrupted(tmp_path):
    async def agent(p):
        await asyncio.sleep(0.02 if p.id < "nl4opt-0004" else 10)
        return Solution(problem_text=p.text, agent="t", answer=p.answer)

    task = asyncio.create_task(run_eval(_problems(8), agent, tmp_path, concurrency=1))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    recs = read_journal(tmp_path).records
    assert [r.id for r in recs] == ["nl4opt-0001", "nl4opt-0002", "nl4opt-0003"]
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["sessions"][0]["status"] == "interrupted"
    assert json.loads((tmp_path / "summary.json").read_text())["complete"] is False


async def test_unscored_problems_are_reported_not_scored(tmp_path):
    ps = load_dataset("nl4opt", ids=["nl4opt-0001", "nl4opt-0047"])
    missing = [p for p in load_dataset("nl4opt") if p.answer_kind == "missing"][:1]

    async def agent(p):
        return Solution(
            problem_text=p.text,
            agent="t",
            answer=5.0,
            result=SolveResult(status="optimal", objective=5.0),
        )

    await run_eval(ps + missing, agent, tmp_path)
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["unscored"] == 1 and s["scored"] == 2
    assert s["ground_truth_kinds"]["missing"] == 1


async def test_duplicate_ids_and_bad_concurrency(tmp_path, fake):
    ps = _problems(2)
    with pytest.raises(EvalError, match="twice"):
        await run_eval([ps[0], ps[0]], fake.always_right, tmp_path)
    with pytest.raises(EvalError, match="concurrency"):
        await run_eval(ps, fake.always_right, tmp_path, concurrency=0)


async def test_progress_sink_sees_every_result(tmp_path, fake):
    events = []

    class Probe:
        def start(self, total, done, correct, scored):
            events.append(("start", total, done))

        def update(self, record):
            events.append(("update", record.id))

        def stop(self):
            events.append(("stop",))

    await run_eval(_problems(3), fake.always_right, tmp_path, progress=Probe())
    assert events[0] == ("start", 3, 0) and events[-1] == ("stop",)
    assert len([e for e in events if e[0] == "update"]) == 3


async def test_exception_classes(tmp_path):
    from optiforge.llm.errors import BudgetExceeded, LLMUnavailableError

    errors = {
        "nl4opt-0001": LLMUnavailableError("server gone"),
        "nl4opt-0002": BudgetExceeded("max_calls reached"),
        "nl4opt-0003": ValueError("bug in the agent"),
    }

    async def agent(p):
        raise errors[p.id]

    await run_eval(_problems(3), agent, tmp_path, max_consecutive_failures=0)
    got = {r.id: r.failure_class for r in read_journal(tmp_path).records}
    assert got == {
        "nl4opt-0001": "llm_error",
        "nl4opt-0002": "budget",
        "nl4opt-0003": "agent_crash",
    }


async def test_resume_refuses_other_levers_or_prompts(tmp_path, fake):
    ps = _problems(2)
    on = {"verify": True, "hints": False}
    prompts = {"file": "a.json", "sha256": "1" * 64, "parameters": ["formulator_system"]}
    meta = RunMeta(dataset="nl4opt", agent="team", levers=on, prompts=prompts)
    await run_eval(ps, fake.always_right, tmp_path, meta=meta)
    with pytest.raises(EvalError, match=r"different run.*levers"):
        await run_eval(
            ps,
            fake.always_right,
            tmp_path,
            meta=RunMeta(dataset="nl4opt", agent="team", levers=None, prompts=prompts),
            resume=True,
        )
    # A lever added to optiforge since the run was written is off in it: the same run.
    await run_eval(
        ps,
        fake.always_right,
        tmp_path,
        meta=RunMeta(
            dataset="nl4opt", agent="team", levers={**on, "templates": False}, prompts=prompts
        ),
        resume=True,
    )
    # Another experience library is another run; the same one moved elsewhere is not.
    lib = {"file": "lib.jsonl", "sha256": "3" * 64, "entries": 5}
    with pytest.raises(EvalError, match=r"different run.*experience"):
        await run_eval(
            ps,
            fake.always_right,
            tmp_path,
            meta=RunMeta(
                dataset="nl4opt", agent="team", levers=on, prompts=prompts, experience=lib
            ),
            resume=True,
        )
    other = {**prompts, "sha256": "2" * 64}
    with pytest.raises(EvalError, match=r"different run.*prompts"):
        await run_eval(
            ps,
            fake.always_right,
            tmp_path,
            meta=RunMeta(dataset="nl4opt", agent="team", levers=on, prompts=other),
            resume=True,
        )


async def test_a_run_json_from_before_levers_were_recorded_still_resumes(tmp_path, fake):
    ps = _problems(2)
    await run_eval(
        ps[:1], fake.always_right, tmp_path, meta=RunMeta(dataset="nl4opt", agent="team")
    )
    run_json = tmp_path / "run.json"
    data = json.loads(run_json.read_text())
    del data["levers"], data["prompts"]  # as an older optiforge wrote it
    run_json.write_text(json.dumps(data))
    prompts = {"file": "a.json", "sha256": "1" * 64, "parameters": ["formulator_system"]}
    await run_eval(
        ps,
        fake.always_right,
        tmp_path,
        meta=RunMeta(dataset="nl4opt", agent="team", prompts=prompts),
        resume=True,
    )
    assert len(read_journal(tmp_path).latest()) == 2
    # such a run had no levers: asking for some now is another run; all off is the same
    off = dict.fromkeys(("verify", "hints"), False)
    await run_eval(
        ps,
        fake.always_right,
        tmp_path,
        meta=RunMeta(dataset="nl4opt", agent="team", prompts=prompts, levers=off),
        resume=True,
    )
    with pytest.raises(EvalError, match=r"different run.*levers"):
        await run_eval(
            ps,
            fake.always_right,
            tmp_path,
            meta=RunMeta(dataset="nl4opt", agent="team", levers={**off, "hints": True}),
            resume=True,
        )


def test_journal_steps_keep_the_plan_they_served():
    from optiforge.agents.solution import Solution, StepRecord
    from optiforge.evals.runner import record_from_solution

    sol = Solution(
        problem_text="p",
        agent="team",
        steps=[
            StepRecord(role="planner", plan_id="template", summary="template: transportation"),
            StepRecord(role="formulator", summary="wrote a model"),
        ],
    )
    (p,) = _problems(1)
    rec = record_from_solution(p, sol, elapsed_s=1.0, started_at=0.0, session=1)
    assert [(s.role, s.plan_id) for s in rec.steps] == [
        ("planner", "template"),
        ("formulator", None),
    ]
