"""The deadline on a real model (SmolLM2-135M and Qwen2.5-Coder-1.5B on the embedded
llama.cpp server).

A 4 s limit is far shorter than a first round of three formulations takes on a 2-core CPU
(the formulator's prompt alone is about 900 tokens), so the deadline cancels real HTTP
requests in flight. The run must end within a few seconds of it, through the eval runner
as ``optiforge eval --timeout`` runs it, with its costs journalled.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from optiforge.agents.spec import AgentSpec, BuiltAgent
from optiforge.datasets.problem import Problem
from optiforge.evals import read_journal, run_eval
from optiforge.evals.executor import LocalExecutor
from optiforge.evals.runner import USAGE_FIELDS
from optiforge.llm.usage import usage_scope

ROOT = Path(__file__).resolve().parents[3]
#: "Within a few seconds": the decision after the deadline needs no model; the rest is
#: the event loop's latency on a machine other jobs keep busy.
FEW = 5.0


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("model", ["tiny_llm", "coder_llm"])
async def test_a_short_deadline_stops_the_team_on_a_real_model(model, request, tmp_path):
    llm = request.getfixturevalue(model)
    T = 4.0
    # A text no earlier test asked about, so no reply comes from the response cache.
    text = (ROOT / "examples/problems/printers.txt").read_text() + f"\n(ref {uuid.uuid4()})"
    problem = Problem(id="printers", text=text, answer=5050.0, answer_kind="value")
    built = BuiltAgent(AgentSpec(agent="team", time_limit=T), llm=llm)
    before = llm.usage.snapshot()
    t0 = time.monotonic()
    await run_eval(
        [problem],
        None,
        tmp_path,
        executor=LocalExecutor(built),
        problem_timeout=T,
        usage=built.usage,
        usage_scope=usage_scope,
    )
    took = time.monotonic() - t0
    after = llm.usage.snapshot()
    (rec,) = read_journal(tmp_path).records
    assert T <= rec.elapsed_s < T + FEW, rec.elapsed_s
    assert took < T + FEW + 10  # the runner's own work (reports) included
    assert rec.stopped == "deadline", (rec.stopped, rec.error)
    assert rec.time_limit_s == T and rec.usage_source == "client"
    # the requests the deadline cut off are counted, and shown as steps with their time
    assert rec.failed_calls >= 1
    cancelled = [s for s in rec.steps if "request cancelled" in s.summary]
    assert len(cancelled) == rec.failed_calls
    assert all(s.elapsed_s > 0 for s in cancelled)
    if rec.prediction is None:
        assert rec.failure_class == "timeout" and "time limit of 4 s" in rec.error
    # the journal line holds exactly what the client counted during the problem
    for f in USAGE_FIELDS:
        assert getattr(rec, f) == getattr(after, f) - getattr(before, f), f
    session = json.loads((tmp_path / "run.json").read_text())["sessions"][0]
    assert session["time_limit_s"] == T and session["usage"]["failed_calls"] >= rec.failed_calls
