"""Sync-over-async callers share one persistent loop, so LLM connections are reused.

``asyncio.run`` per call makes a new event loop each time, and the client keeps one HTTP
pool per loop: every call then opened a new connection and left the old pool unclosed.
Each test counts the TCP connections the fake server saw (distinct client ports).
"""

from __future__ import annotations

from optiforge.agents.optim import OPRO
from optiforge.llm import LLM, run_sync
from optiforge.llm.testing import ScriptedLLM
from optiforge.trace.nodes import node


def _client(url: str) -> LLM:
    return LLM("fake", base_url=url, api_key="x", cache=False, max_retries=0)


def test_run_sync_reuses_one_connection_across_calls(fake):
    with fake.FakeServer([fake.ok("hi")]) as server:
        llm = _client(server.base_url)
        try:
            for _ in range(4):
                assert run_sync(llm.achat("hello")).text == "hi"
        finally:
            llm.close()
    assert len(server.requests) == 4
    assert len(set(server.peers)) == 1, server.peers


def test_opro_async_objective_reuses_connections_across_steps(fake):
    """OPRO scores candidates with an async objective through the shared loop."""
    with fake.FakeServer([fake.ok("7")]) as server:
        judge = _client(server.base_url)

        async def objective(values):
            reply = await judge.achat(f"score {values['w']}")
            return float(reply.text) - values["w"]

        w = node(0.0, name="w", trainable=True, description="a number")
        proposer = ScriptedLLM([f'{{"suggestion": {{"w": {i}.0}}}}' for i in range(1, 4)])
        opt = OPRO([w], proposer, objective=objective, n=1, workers=1)
        try:
            for _ in range(3):
                assert opt.step().ok
        finally:
            judge.close()
    # the start value is scored too: four objective calls over three steps
    assert len(server.requests) == 4
    assert len(set(server.peers)) == 1, server.peers


def test_run_sync_sees_the_callers_context_and_returns_errors():
    import contextvars

    import pytest

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def read() -> str:
        return var.get()

    async def fail() -> None:
        raise ValueError("boom")

    token = var.set("caller")
    try:
        assert run_sync(read()) == "caller"
    finally:
        var.reset(token)
    assert run_sync(read()) == "unset"
    with pytest.raises(ValueError, match="boom"):
        run_sync(fail())
