"""Many problems in flight against one embedded server with few slots (real SmolLM2, slow).

The client sends at most as many requests as the server has slots; the rest wait in the
client, so their HTTP timeout does not run while they queue. Figures (latency, timeouts
when the server queues instead, peak RSS) come from ``benchmarks/eval_load.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from types import SimpleNamespace

import pytest

from optiforge.datasets.problem import Problem
from optiforge.evals import read_journal, run_eval
from optiforge.evals.runner import USAGE_FIELDS
from optiforge.llm.usage import usage_scope

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_sixteen_problems_queue_in_the_client(tmp_path):
    from optiforge.config import load_settings
    from optiforge.llm.serving import connect
    from optiforge.llm.serving.local import server_for_url

    settings = dataclasses.replace(
        load_settings(), model="smollm2-135m", base_url=None, cache=False
    )
    llm = connect(settings, concurrency=16)
    llm.ensure_server()  # connect's client starts the embedded server here
    slots = server_for_url(llm.base_url).n_parallel
    assert llm.max_in_flight == min(16, slots)

    in_flight = {"now": 0, "max": 0}
    send = llm._acomplete

    async def counted(req):
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        try:
            return await send(req)
        finally:
            in_flight["now"] -= 1

    llm._acomplete = counted
    started = {"max": 0, "now": 0}

    async def agent(problem):
        started["now"] += 1
        started["max"] = max(started["max"], started["now"])
        try:
            await llm.achat(problem.text, max_tokens=4, temperature=0.0)
        finally:
            started["now"] -= 1
        return SimpleNamespace(answer=None)

    problems = [
        Problem(id=f"p{i:02d}", dataset="toy", text=f"Count to {i}.", answer=1.0) for i in range(16)
    ]
    asyncio.run(
        run_eval(
            problems,
            agent,
            tmp_path,
            concurrency=16,
            write_report=False,
            usage=lambda: llm.usage.snapshot().model_dump(),
            usage_scope=usage_scope,
        )
    )
    llm.close()
    recs = read_journal(tmp_path).records
    assert len(recs) == 16 and not any(r.failure_class == "llm_error" for r in recs)
    assert started["max"] == 16  # every problem was in flight at once...
    assert in_flight["max"] == min(16, slots)  # ...while requests queued in the client
    usage = llm.usage.snapshot()
    assert usage.calls == 16 and usage.failed_calls == 0
    for f in USAGE_FIELDS:
        assert sum(getattr(r, f) for r in recs) == getattr(usage, f), f


def test_a_real_problem_cut_by_its_timeout_keeps_its_cost(tmp_path):
    """The runner cancels a problem mid-request: the request it had sent, and the calls it
    made before, are in its journal line, and the journal still adds up to the client."""
    from optiforge.config import load_settings
    from optiforge.llm.serving import connect

    settings = dataclasses.replace(
        load_settings(), model="smollm2-135m", base_url=None, cache=False
    )
    llm = connect(settings, concurrency=2)

    async def agent(problem):
        await llm.achat(problem.text, max_tokens=2, tag="quick")
        while problem.id == "long":  # asks until the runner's timeout cuts a request off
            await llm.achat("Count from 1 to 1000, one number per line.", max_tokens=64)
        return SimpleNamespace(answer=None)

    problems = [Problem(id=i, dataset="toy", text=f"Say {i}.", answer=1.0) for i in ("long", "ok")]
    asyncio.run(
        run_eval(
            problems,
            agent,
            tmp_path,
            concurrency=2,
            problem_timeout=6.0,
            write_report=False,
            max_consecutive_failures=0,
            usage=lambda: llm.usage.snapshot().model_dump(),
            usage_scope=usage_scope,
        )
    )
    llm.close()
    recs = {r.id: r for r in read_journal(tmp_path).records}
    cut = recs["long"]
    assert cut.failure_class == "timeout" and cut.failed_calls >= 1  # the request cut off
    assert cut.steps and cut.usage_source == "client"
    usage = llm.usage.snapshot()
    for f in USAGE_FIELDS:
        assert sum(getattr(r, f) for r in recs.values()) == getattr(usage, f), f
