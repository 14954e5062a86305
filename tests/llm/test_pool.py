"""Several servers behind one client: choice by requests in flight, marking a failing server
down and probing it again, failover of retries, shares, and a cache key that does not depend
on which server answered. Fake servers on 127.0.0.1 (see fake_server.py)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from optiforge.llm import LLMUnavailableError
from optiforge.llm.errors import LLMError
from optiforge.llm.pool import ServerPool, merge_server_stats, split_base_urls

pytestmark = pytest.mark.timeout(60)


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens there once the socket is closed


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


# -- parsing ---------------------------------------------------------------------------------
def test_split_base_urls():
    assert split_base_urls(None) == [] and split_base_urls("") == []
    assert split_base_urls("http://a:1/v1/") == ["http://a:1/v1"]
    assert split_base_urls(" http://a/v1 , https://b/v1/,,http://a/v1") == [
        "http://a/v1",
        "https://b/v1",
    ]
    with pytest.raises(LLMError, match="not an http"):
        split_base_urls("http://a/v1,gpu2:8000")


def test_llm_rejects_bad_base_url_list(make_llm):
    with pytest.raises(LLMError, match="not an http"):
        make_llm("http://127.0.0.1:1/v1, 127.0.0.1:2/v1")
    with pytest.raises(LLMError, match="names no server"):
        make_llm(" , ")


# -- the pool alone --------------------------------------------------------------------------
def test_fewest_in_flight_wins_and_ties_rotate():
    pool = ServerPool(["a", "b", "c"])
    a = pool.acquire()
    b = pool.acquire()
    assert {a.url, b.url} == {"a", "b"} or a.url != b.url
    c = pool.acquire()
    assert sorted(s.url for s in (a, b, c)) == ["a", "b", "c"]  # one each
    pool.release(b, failed=False)
    assert pool.acquire().url == b.url  # the only one with nothing in flight
    # Sequential requests (always a tie at zero in flight) still spread over the servers.
    pool2 = ServerPool(["a", "b"])
    seen = []
    for _ in range(4):
        s = pool2.acquire()
        seen.append(s.url)
        pool2.release(s, failed=False)
    assert seen.count("a") == 2 and seen.count("b") == 2


def test_marked_down_after_repeated_failures_then_probed_after_backoff():
    clock = Clock()
    pool = ServerPool(["a", "b"], fail_threshold=2, base_backoff=5.0, clock=clock)
    a = pool.servers[0]
    for _ in range(2):
        pool.release(pool.acquire(avoid={"b"}), failed=True)
    assert not a.up and a.times_marked_down == 1
    for _ in range(5):  # while down, everything goes to b
        s = pool.acquire()
        assert s.url == "b"
        pool.release(s, failed=False)
    clock.t += 5.0
    probe = pool.acquire()
    assert probe.url == "a" and probe.probing
    assert pool.acquire().url == "b"  # one probe at a time
    pool.release(probe, failed=True)  # failed probe: twice the back-off
    assert not a.up and a.backoff == 10.0
    clock.t += 9.0
    assert pool.acquire().url == "b"
    clock.t += 1.0
    probe = pool.acquire()
    assert probe.url == "a"
    pool.release(probe, failed=False)  # it answered: back in rotation
    assert a.up and a.consecutive_failures == 0
    stats = pool.stats()
    assert stats["a"]["times_marked_down"] == 1 and stats["a"]["up"] is True
    assert stats["a"]["failures"] == 3 and stats["a"]["ok"] == 1


def test_one_failure_does_not_mark_down_and_success_resets():
    pool = ServerPool(["a"], fail_threshold=2)
    pool.release(pool.acquire(), failed=True)
    pool.release(pool.acquire(), failed=False)
    pool.release(pool.acquire(), failed=True)
    assert pool.servers[0].up


def test_all_down_still_tries_the_one_due_soonest():
    clock = Clock()
    pool = ServerPool(["a", "b"], fail_threshold=1, base_backoff=5.0, clock=clock)
    pool.release(pool.acquire(avoid={"b"}), failed=True)
    clock.t += 1
    pool.release(pool.acquire(avoid={"a"}), failed=True)
    assert not any(s.up for s in pool.servers)
    assert pool.acquire().url == "a"  # a comes back first


def test_stats_shares_and_merge():
    pool = ServerPool(["a", "b"])
    for _ in range(3):
        s = pool.acquire(avoid={"b"})
        pool.release(s, failed=False)
    s = pool.acquire(avoid={"a"})
    pool.release(s, failed=False)
    st = pool.stats()
    assert st["a"]["share"] == 0.75 and st["b"]["share"] == 0.25
    merged = merge_server_stats([st, {"b": {"requests": 4, "ok": 4, "failures": 1, "up": False}}])
    assert merged["a"]["ok"] == 3 and merged["b"]["ok"] == 5 and merged["b"]["up"] is False
    assert merged["a"]["share"] == 0.375 and merged["b"]["share"] == 0.625


# -- the client over real HTTP ------------------------------------------------------------------
def test_concurrent_requests_spread_over_servers(fake, make_llm):
    with (
        fake.FakeServer([fake.sleep(0.2, fake.ok("from a"))]) as a,
        fake.FakeServer([fake.sleep(0.2, fake.ok("from b"))]) as b,
    ):
        llm = make_llm(f"{a.base_url},{b.base_url}", cache=False, concurrency=8)

        async def go():
            return await asyncio.gather(*(llm.achat(f"q{i}") for i in range(8)))

        results = asyncio.run(go())
        assert len(results) == 8
        assert len(a.requests) == 4 and len(b.requests) == 4
        stats = llm.server_stats()
        assert stats[a.base_url]["share"] == 0.5 and stats[b.base_url]["ok"] == 4
        assert llm.usage.calls == 8  # usage counts requests, not servers


def test_5xx_server_is_marked_down_and_requests_go_elsewhere(fake, make_llm):
    with (
        fake.FakeServer([fake.status(503, "overloaded")]) as bad,
        fake.FakeServer([fake.ok("fine")]) as good,
    ):
        llm = make_llm(f"{bad.base_url},{good.base_url}", cache=False, concurrency=1)
        for i in range(10):
            assert llm.chat(f"q{i}").text == "fine"
        # The bad server saw a few failures before it was marked down, then nothing.
        assert 2 <= len(bad.requests) <= 3
        assert len(good.requests) == 10
        stats = llm.server_stats()
        assert stats[bad.base_url]["up"] is False and stats[bad.base_url]["ok"] == 0
        assert stats[good.base_url]["share"] == 1.0
        assert llm.usage.calls == 10


def test_refused_connections_fail_over(fake, make_llm):
    dead = _closed_port_url()
    with fake.FakeServer([fake.ok("alive")]) as srv:
        llm = make_llm(f"{dead},{srv.base_url}", cache=False)
        for i in range(6):
            assert llm.chat(f"q{i}").text == "alive"
        stats = llm.server_stats()
        assert stats[dead]["ok"] == 0 and stats[dead]["up"] is False
        assert stats[srv.base_url]["ok"] == 6


def test_every_server_down_gives_the_usual_clear_error(make_llm):
    urls = f"{_closed_port_url()},{_closed_port_url()}"
    llm = make_llm(urls, cache=False, max_retries=2)
    with pytest.raises(LLMUnavailableError, match="cannot reach"):
        llm.chat("x")


def test_4xx_does_not_mark_a_server_down(fake, make_llm):
    with fake.FakeServer([fake.status(400, "bad request")]) as srv:
        llm = make_llm(srv.base_url, cache=False)
        for _ in range(3):
            with pytest.raises(LLMError):
                llm.chat("x")
        assert llm.server_stats()[srv.base_url]["up"] is True


def test_cache_key_does_not_depend_on_which_server_answered(fake, make_llm, tmp_path):
    cache_dir = tmp_path / "shared-cache"
    with (
        fake.FakeServer([fake.ok("answer from a")]) as a,
        fake.FakeServer([fake.ok("answer from b")]) as b,
    ):
        first = make_llm(a.base_url, cache_dir=cache_dir)
        assert first.chat("same question").text == "answer from a"
        # Another client, other servers in another order: the answer comes from the cache.
        second = make_llm(f"{b.base_url},{a.base_url}", cache_dir=cache_dir)
        res = second.chat("same question")
        assert res.cached and res.text == "answer from a"
        assert len(a.requests) == 1 and len(b.requests) == 0
        assert second.usage.calls == 0 and second.usage.cache_hits == 1
        assert first._cache_identity() == second._cache_identity()


def test_stream_goes_through_the_pool(fake, make_llm):
    dead = _closed_port_url()
    with fake.FakeServer([fake.stream(["he", "llo"])]) as srv:
        llm = make_llm(f"{dead},{srv.base_url}", cache=False)
        for _ in range(2):
            assert "".join(llm.stream("x")) == "hello"
        assert llm.server_stats()[srv.base_url]["ok"] == 2


def test_repr_and_route_with_several_urls(make_llm):
    llm = make_llm("http://127.0.0.1:1/v1/, http://127.0.0.1:2/v1")
    assert llm.route == "openai"
    assert llm.base_url == "http://127.0.0.1:1/v1,http://127.0.0.1:2/v1"
    assert llm.pool is not None and llm.pool.urls == [
        "http://127.0.0.1:1/v1",
        "http://127.0.0.1:2/v1",
    ]
