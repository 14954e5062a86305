"""Fault injection: a fake server on 127.0.0.1 misbehaves; every case ends in success after
a retry or in a clear optiforge error, never a hang."""

from __future__ import annotations

import time

import pytest
from pydantic import BaseModel, Field

from optiforge.errors import OptiforgeError
from optiforge.llm import (
    ContextLengthError,
    LLMRequestError,
    LLMResponseError,
    LLMUnavailableError,
    ModelNotFoundError,
    StructuredOutputError,
)

pytestmark = pytest.mark.timeout(60)


class Point(BaseModel):
    x: int = Field(ge=0, le=10)
    y: int = Field(ge=0, le=10)


def test_plain_success_and_request_shape(fake, make_llm):
    with fake.FakeServer([fake.ok("hi there")]) as srv:
        llm = make_llm(srv.base_url, cache=False)
        r = llm.chat("hello", n=2, temperature=0.5, max_tokens=9, seed=3, stop="END")
        assert r.texts == ["hi there", "hi there"]
        assert r.finish_reasons == ["stop", "stop"]
        assert (r.prompt_tokens, r.completion_tokens, r.cached) == (7, 6, False)
        body = srv.requests[0]
        assert body["messages"] == [{"role": "user", "content": "hello"}]
        assert (body["n"], body["temperature"], body["max_tokens"], body["seed"]) == (2, 0.5, 9, 3)
        assert body["stop"] == ["END"] and body["model"] == "fake"


def test_timeout_then_success(fake, make_llm):
    with fake.FakeServer([fake.sleep(3), fake.ok("second try")]) as srv:
        llm = make_llm(srv.base_url, timeout=0.5)
        t0 = time.monotonic()
        assert llm.chat("x").text == "second try"
        assert time.monotonic() - t0 < 3
        assert len(srv.requests) == 2


def test_timeouts_exhaust_retries_with_clear_error(fake, make_llm):
    with fake.FakeServer([fake.sleep(2)]) as srv:
        llm = make_llm(srv.base_url, timeout=0.3, max_retries=2)
        t0 = time.monotonic()
        with pytest.raises(LLMUnavailableError, match=r"did not answer after 0\.3 s"):
            llm.chat("x")
        assert time.monotonic() - t0 < 2.5
        assert len(srv.requests) == 3


def test_500_then_success(fake, make_llm):
    with fake.FakeServer(
        [fake.status(500, "boom"), fake.status(503, "busy"), fake.ok("fine")]
    ) as srv:
        llm = make_llm(srv.base_url)
        r = llm.chat("x")
        assert r.text == "fine"
        assert len(srv.requests) == 3
        assert llm.usage.calls == 1  # one logical request, retried inside


def test_5xx_forever_gives_up(fake, make_llm):
    with fake.FakeServer([fake.status(502, "bad gateway")]) as srv:
        llm = make_llm(srv.base_url, max_retries=2)
        with pytest.raises(LLMUnavailableError, match=r"HTTP 502.*gave up after 3 attempts"):
            llm.chat("x")
        assert len(srv.requests) == 3


def test_429_honours_retry_after(fake, make_llm):
    with fake.FakeServer(
        [fake.status(429, "slow down", {"Retry-After": "0.6"}), fake.ok("ok")]
    ) as srv:
        llm = make_llm(srv.base_url)
        t0 = time.monotonic()
        assert llm.chat("x").text == "ok"
        assert time.monotonic() - t0 >= 0.55  # waited as told, not the 0.01 s backoff


def test_malformed_json_is_retried_then_clear_error(fake, make_llm):
    with fake.FakeServer([fake.malformed(), fake.ok("good")]) as srv:
        assert make_llm(srv.base_url).chat("x").text == "good"
    with fake.FakeServer([fake.malformed()]) as srv:
        llm = make_llm(srv.base_url, max_retries=1, cache=False)
        with pytest.raises(LLMResponseError, match="gave up after 2 attempts"):
            llm.chat("x")
        assert len(srv.requests) == 2


def test_no_choices_is_a_response_error(fake, make_llm):
    with fake.FakeServer([fake.no_choices()]) as srv:
        with pytest.raises(LLMResponseError, match="without choices"):
            make_llm(srv.base_url, max_retries=0).chat("x")


def test_4xx_fail_at_once(fake, make_llm):
    cases = [
        (fake.status(404, "The model `nope` does not exist."), ModelNotFoundError),
        (
            fake.status(
                400, "request (5031 tokens) exceeds the available context size (2048 tokens)"
            ),
            ContextLengthError,
        ),
        (fake.status(401, "bad key"), LLMRequestError),
        (fake.status(400, "temperature must be a number"), LLMRequestError),
    ]
    for behaviour, err in cases:
        with fake.FakeServer([behaviour]) as srv:
            with pytest.raises(err) as info:
                make_llm(srv.base_url).chat("x")
            assert isinstance(info.value, OptiforgeError)
            assert len(srv.requests) == 1  # not retried


def test_connection_refused_is_clear(make_llm):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    llm = make_llm(f"http://127.0.0.1:{port}/v1", max_retries=1)
    with pytest.raises(LLMUnavailableError, match="cannot reach"):
        llm.chat("x")


def test_wrong_schema_is_reasked_once_then_validates(fake, make_llm):
    with fake.FakeServer([fake.ok('{"x": 1}'), fake.ok('{"x": 1, "y": 2}')]) as srv:
        r = make_llm(srv.base_url).chat("point", response_format=Point)
        assert r.parsed == [Point(x=1, y=2)]
        assert srv.requests[0]["response_format"]["type"] == "json_schema"
        reask = srv.requests[1]["messages"]
        assert reask[-2] == {"role": "assistant", "content": '{"x": 1}'}
        assert "y" in reask[-1]["content"] and "Field required" in reask[-1]["content"]


def test_wrong_schema_twice_raises_never_half_parsed(fake, make_llm):
    with fake.FakeServer([fake.ok('{"x": 99, "y": 1}')]) as srv:
        with pytest.raises(StructuredOutputError) as info:
            make_llm(srv.base_url).chat("point", response_format=Point)
        assert len(srv.requests) == 2
        assert info.value.texts == ['{"x": 99, "y": 1}']
        assert "less than or equal to 10" in info.value.errors[0]


def test_server_without_json_schema_support_falls_back(fake, make_llm):
    with fake.FakeServer(
        [
            fake.status(400, "response_format json_schema is not supported"),
            fake.ok('```json\n{"x": 3, "y": 4}\n```'),
        ]
    ) as srv:
        r = make_llm(srv.base_url).chat("point", response_format=Point)
        assert r.parsed == [Point(x=3, y=4)]
        second = srv.requests[1]
        assert "response_format" not in second
        assert '"properties"' in second["messages"][-1]["content"]  # schema asked in words


def test_stream_ok_and_truncated(fake, make_llm, tmp_path):
    with fake.FakeServer([fake.stream(["Hel", "lo", "!"])]) as srv:
        llm = make_llm(srv.base_url)
        assert "".join(llm.stream("x")) == "Hello!"
        assert srv.requests[0]["stream"] is True
        # the finished stream was cached: chat with the same arguments is a hit
        r = llm.chat("x")
        assert r.cached and r.text == "Hello!"
    with fake.FakeServer([fake.stream(["Hel", "lo"], finish=False)]) as srv:
        llm = make_llm(srv.base_url, cache_dir=tmp_path / "fresh")
        got = []
        with pytest.raises(LLMResponseError, match="ended before the reply was finished"):
            for piece in llm.stream("y"):
                got.append(piece)
        assert "".join(got) == "Hello"
        assert len(llm.cache) == 0  # nothing half-done was cached


def test_n_larger_than_server_returns_is_topped_up(fake, make_llm):
    with fake.FakeServer([fake.ok(["a"]), fake.ok(["b", "c"])]) as srv:
        r = make_llm(srv.base_url).chat("x", n=3)
        assert r.texts == ["a", "b", "c"]
        assert [q.get("n", 1) for q in srv.requests] == [3, 2]
