"""Agents for the executor and server-pool tests, selected by path (``--agent-fn``), so Ray
workers load them too.

``short_llm``: a real, short protocol round trip with the configured client (``llm``: the
model and server URLs of the run, built once per process): one temperature-0 request of 6
tokens, then one sandbox run of a program that prints the reply's length as the objective.
Its prediction is a function of the model's reply, so it is the same on every executor.
Environment knobs: EXEC_TEST_DELAY adds seconds per problem; EXEC_TEST_LOG gets one fsynced
line per started problem ("id pid"); EXEC_TEST_EXIT_ID names a problem whose worker process
exits hard (a crashed worker).
"""

from __future__ import annotations

import asyncio
import os

from optiforge.agents.solution import Solution, StepRecord


def _log(problem_id: str) -> None:
    path = os.environ.get("EXEC_TEST_LOG")
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{problem_id} {os.getpid()}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


async def short_llm(problem, llm) -> Solution:
    """One short real model call, then one sandbox run (see the module docs)."""
    from optiforge.solvers import sandbox_outcome
    from optiforge.solvers.sandbox import arun_sandboxed

    _log(problem.id)
    if problem.id == os.environ.get("EXEC_TEST_EXIT_ID"):
        os._exit(3)
    await asyncio.sleep(float(os.environ.get("EXEC_TEST_DELAY", "0") or 0))
    res = await llm.achat(
        f"Answer with one number. {problem.text[:300]}", max_tokens=6, temperature=0.0
    )
    code = f"print('OBJECTIVE:', len({res.text!r}))"
    sb = await arun_sandboxed(code, timeout=60)
    result, err = sandbox_outcome(sb)
    calls = 0 if res.cached else 1
    return Solution(
        problem_text=problem.text,
        agent="exec-test",
        answer=result.objective if result is not None and result.ok else None,
        result=result,
        code=code,
        error=err,
        steps=[
            StepRecord(
                role="direct",
                calls=calls,
                prompt_tokens=res.prompt_tokens,
                completion_tokens=res.completion_tokens,
            )
        ],
        calls=calls,
        prompt_tokens=res.prompt_tokens,
        completion_tokens=res.completion_tokens,
    )
