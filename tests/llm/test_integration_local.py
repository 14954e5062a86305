"""Real models on the embedded llama.cpp server. SmolLM2 checks the protocol (its words
are nonsense, so no assertion looks at them); Qwen2.5-Coder-1.5B must get a tiny LP right."""

from __future__ import annotations

import asyncio
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from optiforge.llm import LLM, ContextLengthError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


class Pet(BaseModel):
    name: str = Field(max_length=20)
    kind: Literal["cat", "dog", "fish"]
    age: int = Field(ge=0, le=30)  # tiny models loop on unbounded integers


def test_chat_usage_and_cache(tiny_llm):
    before = tiny_llm.usage.snapshot()
    msgs = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "integration: say hello"},
    ]
    r = tiny_llm.chat(msgs, max_tokens=12, tag="itest")
    assert r.text.strip() and not r.cached
    assert r.finish_reasons[0] in ("stop", "length")
    assert r.prompt_tokens > 5 and 0 < r.completion_tokens <= 12
    assert r.model == "smollm2-135m"
    again = tiny_llm.chat(msgs, max_tokens=12, tag="itest")
    assert again.cached and again.texts == r.texts and again.latency_s < 0.05
    after = tiny_llm.usage.snapshot()
    assert after.calls == before.calls + 1
    assert after.cache_hits == before.cache_hits + 1
    assert after.by_tag["itest"].prompt_tokens == r.prompt_tokens


def test_streaming(tiny_llm):
    pieces = list(tiny_llm.stream("integration: tell a short story", max_tokens=24))
    assert len(pieces) > 3 and "".join(pieces).strip()
    # the streamed reply is now cached for chat with the same arguments
    assert tiny_llm.chat("integration: tell a short story", max_tokens=24).text == "".join(pieces)


def test_n_samples(tiny_llm):
    r = tiny_llm.chat("integration: name a colour", n=3, temperature=1.0, seed=7, max_tokens=8)
    assert len(r.texts) == 3 and len(r.finish_reasons) == 3 and all(t.strip() for t in r.texts)
    r2 = tiny_llm.chat("integration: name a colour", n=4, temperature=1.0, seed=7, max_tokens=8)
    assert r2.texts[:3] == r.texts and r2.cached_samples == 3


def test_structured_output_validates(tiny_llm):
    r = tiny_llm.chat(
        "integration: describe a pet as JSON with name, kind and age",
        n=2,
        temperature=0.7,
        max_tokens=60,
        response_format=Pet,
    )
    assert len(r.parsed) == 2 and all(isinstance(p, Pet) for p in r.parsed)


async def test_concurrent_requests(tiny_llm):
    calls = tiny_llm.usage.calls
    results = await asyncio.gather(
        *(tiny_llm.achat(f"integration: count to {i}", max_tokens=6) for i in range(8))
    )
    assert all(r.text for r in results)
    assert tiny_llm.usage.calls == calls + 8


def test_context_too_long_is_clear(tiny_llm):
    with pytest.raises(ContextLengthError, match="too long"):
        tiny_llm.chat("word " * 6000, max_tokens=4)


def test_clients_share_one_server(tiny_llm, tmp_path):
    other = LLM("smollm2-135m", settings=tiny_llm.settings, cache_dir=tmp_path)
    assert other.ensure_server() == tiny_llm.base_url
    assert other.chat("integration: hi", max_tokens=4).text
    other.close()


class LPSolution(BaseModel):
    x: float
    y: float


def test_coder_solves_a_tiny_lp(coder_llm):
    """max 2x + y  s.t.  x + y <= 10,  x <= 6,  x, y >= 0  ->  x = 6, y = 4, objective 16."""
    r = coder_llm.chat(
        [
            {"role": "system", "content": "You are an expert in linear programming."},
            {
                "role": "user",
                "content": "Maximize 2x + y subject to x + y <= 10, x <= 6, x >= 0, y >= 0. "
                "Give the optimal x and y.",
            },
        ],
        response_format=LPSolution,
        max_tokens=60,
    )
    sol = r.parsed[0]
    assert sol.x + sol.y <= 10 + 1e-6 and 0 <= sol.x <= 6 + 1e-6 and sol.y >= -1e-6
    assert 2 * sol.x + sol.y == pytest.approx(16.0, abs=1e-6)
