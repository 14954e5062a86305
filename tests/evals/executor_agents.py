"""Agents for the executor tests (selected by path, so Ray workers can load them too).

``short_llm``: a real, short protocol round trip: one temperature-0 request (6 tokens) to the
model server named by EXEC_TEST_BASE_URL / EXEC_TEST_MODEL, with the response cache in
EXEC_TEST_CACHE, then one sandbox run of a program that prints the reply's length as the
objective. Its prediction is therefore a function of the model's reply: the same on every
executor. EXEC_TEST_DELAY adds seconds per problem; EXEC_TEST_LOG gets one
fsynced line per started problem.
"""

from __future__ import annotations

import asyncio
import os
import threading

from optiforge.agents.solution import Solution, StepRecord

_lock = threading.Lock()
_llm = None


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


def _client():
    global _llm
    with _lock:
        if _llm is None:
            from optiforge.llm import LLM

            _llm = LLM(
                model=os.environ["EXEC_TEST_MODEL"],
                base_url=os.environ["EXEC_TEST_BASE_URL"],
                cache=True,
                cache_dir=os.environ["EXEC_TEST_CACHE"],
                concurrency=4,
            )
        return _llm


async def _finish(problem, reply: str, calls: int, ptok: int, ctok: int) -> Solution:
    from optiforge.agents.team.team import sandbox_outcome
    from optiforge.solvers.sandbox import arun_sandboxed

    code = f"print('OBJECTIVE:', len({reply!r}))"
    sb = await arun_sandboxed(code, timeout=60)
    result, err = sandbox_outcome(sb)
    return Solution(
        problem_text=problem.text,
        agent="exec-test",
        answer=result.objective if result is not None and result.ok else None,
        result=result,
        code=code,
        error=err,
        steps=[StepRecord(role="direct", calls=calls, prompt_tokens=ptok, completion_tokens=ctok)],
        calls=calls,
        prompt_tokens=ptok,
        completion_tokens=ctok,
    )


async def short_llm(problem) -> Solution:
    """One short real model call, then one sandbox run (see the module docs)."""
    _log(problem.id)
    await asyncio.sleep(float(os.environ.get("EXEC_TEST_DELAY", "0") or 0))
    res = await _client().achat(
        f"Answer with one number. {problem.text[:300]}", max_tokens=6, temperature=0.0
    )
    return await _finish(
        problem, res.text, 0 if res.cached else 1, res.prompt_tokens, res.completion_tokens
    )
