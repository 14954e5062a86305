"""Deterministic fake agents for fault injection (selected with --agent-fn FILE:NAME).

Behaviour is chosen per problem so that a test can predict every journal line:
the last digit of the id decides: 0-5 right answer, 6 wrong value, 7 predicted infeasible,
8 agent exception, 9 no answer (code error). Environment knobs:

- FAKE_AGENT_DELAY: seconds to sleep per problem (to give a test time to kill the run);
- FAKE_AGENT_LOG: a file that gets one line per *started* problem (fsynced), so a test can
  check that no finished problem ran twice.
"""

from __future__ import annotations

import asyncio
import os

from optiforge.agents.solution import Solution, StepRecord
from optiforge.solvers.result import SolveResult, SolveStatus


def _log(problem_id: str) -> None:
    path = os.environ.get("FAKE_AGENT_LOG")
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{problem_id}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _solution(problem, answer, status, **kw) -> Solution:
    return Solution(
        problem_text=problem.text,
        agent="fake",
        answer=answer,
        result=None if status is None else SolveResult(status=status, objective=answer),
        formulation_markdown=f"max x s.t. x <= {answer}",
        code="print('fake')",
        steps=[StepRecord(role="direct", calls=1, prompt_tokens=90, completion_tokens=30)],
        calls=1,
        prompt_tokens=90,
        completion_tokens=30,
        **kw,
    )


async def scripted(problem) -> Solution:
    """Answer according to the last digit of the problem id (see module docs)."""
    _log(problem.id)
    delay = float(os.environ.get("FAKE_AGENT_DELAY", "0") or 0)
    await asyncio.sleep(delay)
    digit = int(problem.id[-1]) if problem.id[-1].isdigit() else 0
    gt = problem.answer if problem.answer is not None else 1.0
    if problem.answer_kind == "infeasible" and digit <= 5:
        return _solution(problem, None, SolveStatus.INFEASIBLE, failure_class="infeasible")
    if digit <= 5:
        return _solution(problem, gt, SolveStatus.OPTIMAL)
    if digit == 6:
        return _solution(problem, gt * 2 + 1, SolveStatus.OPTIMAL)
    if digit == 7:
        return _solution(problem, None, SolveStatus.INFEASIBLE, failure_class="infeasible")
    if digit == 8:
        raise RuntimeError(f"fake agent crash on {problem.id}")
    return _solution(
        problem, None, SolveStatus.ERROR, failure_class="code_error", error="NameError: x"
    )


async def always_right(problem) -> Solution:
    """Return the ground truth (infeasible when the ground truth says so)."""
    _log(problem.id)
    delay = float(os.environ.get("FAKE_AGENT_DELAY", "0") or 0)
    await asyncio.sleep(delay)
    if problem.answer_kind == "infeasible":
        return _solution(problem, None, SolveStatus.INFEASIBLE, failure_class="infeasible")
    return _solution(problem, problem.answer, SolveStatus.OPTIMAL)


async def server_down(problem) -> Solution:
    """Every call fails like an unreachable model server."""
    _log(problem.id)
    raise ConnectionError("Connection refused: http://127.0.0.1:9/v1")
