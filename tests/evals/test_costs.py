"""Costs add up: every request and every choice is counted once, per problem and in total.

The runner opens a usage scope per problem; the client records every answered, failed,
cancelled and cached request in it. The sums of the journal's per-problem counters must
equal the client's own usage (what ``run.json`` stores), including a structured-output
re-ask that failed, replies from the cache, ``n > 1`` requests and a problem cut off by its
timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from types import SimpleNamespace

import pytest
from pydantic import BaseModel

from optiforge.datasets.problem import Problem
from optiforge.evals import read_journal, run_eval
from optiforge.evals.runner import USAGE_FIELDS
from optiforge.llm.errors import StructuredOutputError
from optiforge.llm.testing import ScriptedLLM
from optiforge.llm.usage import text_sha256, usage_scope


class Answer(BaseModel):
    value: float


def _problems(n: int) -> list[Problem]:
    return [
        Problem(id=f"p{i}", dataset="toy", text=f"problem {i}", answer=float(i)) for i in range(n)
    ]


def _script(messages, *, tag, index, **_):
    """Good JSON, except for problem 1 whose formulator replies never validate; the hang
    problem's coder never answers (cancelled by the timeout)."""
    text = messages[-1]["content"] if isinstance(messages[-1]["content"], str) else ""
    first = messages[0]["content"]
    if tag == "coder" and "problem 3" in first:
        return asyncio.sleep(3600, result="never")
    if tag == "formulator":
        return "not json at all" if "problem 1" in first else '{"value": 1.5}'
    return f"reply {index} to {text[:20]}"


def _agent(llm):
    async def agent(problem: Problem):
        with contextlib.suppress(StructuredOutputError):  # goes on, as the team's roles do
            await llm.achat(problem.text, response_format=Answer, tag="formulator")
        await llm.achat(f"{problem.text}: code", n=3, temperature=0.7, tag="coder")
        await llm.achat("the same question for every problem", tag="critic")  # cached after 1
        return SimpleNamespace(answer=problem.answer, calls=1, prompt_tokens=0)

    return agent


def _totals(records) -> dict[str, int]:
    return {f: sum(getattr(r, f) for r in records) for f in USAGE_FIELDS}


async def test_journal_sums_equal_the_clients_usage(tmp_path):
    llm = ScriptedLLM(_script, cache=tmp_path / "cache")
    out = tmp_path / "run"
    await run_eval(
        _problems(5),
        _agent(llm),
        out,
        concurrency=3,
        problem_timeout=1.0,
        max_consecutive_failures=0,
        usage=lambda: llm.usage.snapshot().model_dump(),
        usage_scope=usage_scope,
    )
    recs = {r.id: r for r in read_journal(out).records}
    assert len(recs) == 5
    client = llm.usage.snapshot()
    run = json.loads((out / "run.json").read_text())
    session = run["sessions"][0]
    assert session["usage_unjournalled"] is None
    for f in USAGE_FIELDS:
        assert _totals(recs.values())[f] == getattr(client, f) == session["usage"][f], f

    # the failed re-ask is charged with its real tokens (2 formulator requests, 0 parsed)
    bad = recs["p1"].usage_by_tag["formulator"]
    assert bad["calls"] == 2 and bad["prompt_tokens"] > 0 and bad["completion_tokens"] > 0
    assert recs["p1"].usage_source == "client"
    # the agent's own "1 call, 0 tokens" is replaced by the client's count
    assert recs["p0"].calls == 3 and recs["p0"].prompt_tokens > 0
    # n=3 is one request with three replies, each counted
    assert client.by_tag["coder"].choices == 3 * client.by_tag["coder"].calls
    # one problem asked the shared question live; the other four got it from the cache,
    # with the tokens it cost shown apart
    assert client.by_tag["critic"].calls == 1 and client.cache_hits == 3
    cached = [r for r in recs.values() if r.cached_calls]
    assert len(cached) == 3 and all(r.cached_tokens > 0 for r in cached)

    # the timed-out problem keeps its calls so far, the request cut off, and its steps
    hung = recs["p3"]
    assert hung.failure_class == "timeout"
    assert hung.calls == 1 and hung.failed_calls == 1 and hung.prompt_tokens > 0
    assert {s.role for s in hung.steps} == {"formulator", "coder"}

    # every reply can be traced: its cache key finds a text whose sha256 is journalled
    for r in recs.values():
        for rep in r.replies:
            hit = llm.cache.get_many([rep["key"]]).get(rep["key"])
            assert hit is not None and text_sha256(hit["text"]) == rep["sha256"]
    assert sum(len(r.replies) for r in recs.values()) == client.choices + client.cache_hits
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cached"] == {
        "calls": client.cached_calls,
        "replies": client.cache_hits,
        "tokens": client.cached_tokens,
    }
    assert summary["failed_calls"] == client.failed_calls == 1
    assert "From the cache (not in the counts above): 3 requests" in (out / "report.md").read_text()
    llm.close()


async def test_interrupted_problems_are_reported_apart(tmp_path):
    llm = ScriptedLLM(_script)
    started = asyncio.Event()

    async def agent(problem):
        await llm.achat(problem.text, tag="a")
        if problem.id == "p1":
            started.set()
            await asyncio.sleep(3600)
        return SimpleNamespace(answer=problem.answer)

    task = asyncio.create_task(
        run_eval(
            _problems(2),
            agent,
            tmp_path,
            concurrency=2,
            usage=lambda: llm.usage.snapshot().model_dump(),
            usage_scope=usage_scope,
        )
    )
    await started.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    session = json.loads((tmp_path / "run.json").read_text())["sessions"][0]
    recs = read_journal(tmp_path).records
    assert [r.id for r in recs] == ["p0"] and session["status"] == "interrupted"
    lost = session["usage_unjournalled"]
    assert lost["problems"] == ["p1"]
    for f in USAGE_FIELDS:
        assert _totals(recs)[f] + lost[f] == session["usage"][f], f


def test_failed_structured_output_carries_its_cost():
    llm = ScriptedLLM(["nope", "still nope"])
    with pytest.raises(StructuredOutputError) as err:
        llm.chat("x", response_format=Answer)
    assert err.value.calls == 2 and err.value.completion_tokens == 3  # "nope" + "still nope"
    assert llm.usage.calls == 2


def test_sync_calls_and_failures_reach_the_scope():
    def script(messages, **_):
        if "fail" in messages[-1]["content"]:
            from optiforge.llm.errors import LLMUnavailableError

            raise LLMUnavailableError("down")
        return "ok"

    llm = ScriptedLLM(script)
    with usage_scope() as scope:
        llm.chat("hello")  # runs on the background loop: the scope must follow it
        with pytest.raises(Exception, match="down"):
            llm.chat("fail please")
        assert "".join(llm.stream("stream me")) == "ok"
    used = scope.snapshot()
    assert used.calls == 2 and used.failed_calls == 1
    assert llm.usage.failed_calls == 1 and len(scope.replies) == 2


async def test_without_a_usage_scope_the_agents_own_counts_stay(tmp_path):
    llm = ScriptedLLM("fine")

    async def agent(problem):
        await llm.achat(problem.text)
        return SimpleNamespace(answer=problem.answer, calls=7, prompt_tokens=70)

    await run_eval(_problems(1), agent, tmp_path)
    (rec,) = read_journal(tmp_path).records
    assert (rec.calls, rec.prompt_tokens, rec.usage_source, rec.replies) == (7, 70, "agent", [])
