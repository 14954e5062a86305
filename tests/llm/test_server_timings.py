"""What the server says of its work (prompt-cache hits, prompt and generation time) is
counted per tag, so a journal shows each role's prompt-processing cost (issue #17)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(120)


class Reporting:
    """An OpenAI-compatible server whose replies carry ``extra`` (llama.cpp's ``timings``,
    ``usage.prompt_tokens_details``, or junk) next to the usual fields."""

    def __init__(self, extra: dict[str, Any], details: Any = None) -> None:
        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                usage: dict[str, Any] = {"prompt_tokens": 100, "completion_tokens": 4}
                if details is not None:
                    usage["prompt_tokens_details"] = details
                body = json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "m",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": "ok"},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": usage,
                        **extra,
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def __enter__(self) -> Reporting:
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


LLAMA_TIMINGS = {"cache_n": 60, "prompt_n": 40, "prompt_ms": 812.5, "predicted_ms": 95.25}


def test_llamacpp_timings_are_counted_per_tag(make_llm):
    with Reporting({"timings": LLAMA_TIMINGS}) as srv:
        llm = make_llm(srv.base_url, cache=False)
        llm.chat("x", tag="critic")
        llm.chat("y", tag="critic")
        llm.chat("z", tag="formulator")
        critic = llm.usage.for_tag("critic")
        assert critic.server_cached_tokens == 120
        assert critic.prompt_ms == pytest.approx(1625.0)
        assert critic.completion_ms == pytest.approx(190.5)
        snap = llm.usage.snapshot()
        assert snap.server_cached_tokens == 180 and snap.prompt_ms == pytest.approx(2437.5)
        # the cached prompt tokens are part of the prompt tokens, not extra
        assert snap.prompt_tokens == 300


def test_openai_cached_tokens_field_wins_over_cache_n(make_llm):
    with Reporting({"timings": LLAMA_TIMINGS}, details={"cached_tokens": 64}) as srv:
        llm = make_llm(srv.base_url, cache=False)
        llm.chat("x")
        assert llm.usage.snapshot().server_cached_tokens == 64


def test_vllm_style_cached_tokens_without_timings(make_llm):
    with Reporting({}, details={"cached_tokens": 32}) as srv:
        llm = make_llm(srv.base_url, cache=False)
        llm.chat("x")
        snap = llm.usage.snapshot()
        assert snap.server_cached_tokens == 32
        assert snap.prompt_ms == 0.0 and snap.completion_ms == 0.0


@pytest.mark.parametrize(
    "junk",
    [
        {"timings": {"cache_n": "many", "prompt_ms": "NaN", "predicted_ms": -5}},
        {"timings": "not an object"},
        {"timings": {"prompt_ms": float("inf")}},
    ],
)
def test_junk_timings_count_zero_and_do_not_break_the_call(make_llm, junk):
    with Reporting(json.loads(json.dumps(junk).replace("Infinity", "1e999"))) as srv:
        llm = make_llm(srv.base_url, cache=False)
        assert llm.chat("x").text == "ok"
        snap = llm.usage.snapshot()
        assert snap.calls == 1 and snap.server_cached_tokens == 0
        assert snap.prompt_ms == 0.0 and snap.completion_ms == 0.0


def test_a_cache_hit_adds_no_server_work(make_llm):
    with Reporting({"timings": LLAMA_TIMINGS}) as srv:
        llm = make_llm(srv.base_url, cache=True)
        llm.chat("same", temperature=0)
        llm.chat("same", temperature=0)
        snap = llm.usage.snapshot()
        assert snap.calls == 1 and snap.cache_hits == 1
        assert snap.prompt_ms == pytest.approx(812.5)


@pytest.mark.slow
def test_the_real_server_reports_its_prompt_cache(tiny_llm):
    """llama.cpp reuses a shared prefix: a second request with the same long system prompt
    reports prompt tokens taken from its cache, and every answered call reports time."""
    from optiforge.llm.usage import usage_scope

    system = "You are a careful assistant. " * 40
    with usage_scope() as scope:
        for q in ("Name a colour.", "Name a fruit."):
            tiny_llm.chat(
                [{"role": "system", "content": system}, {"role": "user", "content": q}],
                max_tokens=4,
                temperature=0,
                tag="probe",
            )
    probe = scope.snapshot().by_tag["probe"]
    assert probe.calls == 2
    assert probe.prompt_ms > 0 and probe.completion_ms > 0
    assert probe.server_cached_tokens >= 100  # the second request reused the system prompt
