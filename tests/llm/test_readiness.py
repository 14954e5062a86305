"""Waiting for a model server that is still loading (HTTP 503 on /models)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from optiforge.cli.common import check_server
from optiforge.llm.errors import LLMUnavailableError

pytestmark = pytest.mark.timeout(60)


class LoadingServer:
    """Answers /v1/models with ``status`` until ``ready_after`` seconds have passed."""

    def __init__(self, ready_after: float, status: int = 503) -> None:
        self.ready_at = time.monotonic() + ready_after
        outer = self
        self.hits = 0

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.hits += 1
                ready = time.monotonic() >= outer.ready_at
                code = 200 if ready else status
                body = json.dumps(
                    {"data": [{"id": "m"}]} if ready else {"error": {"message": "Loading model"}}
                ).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_waits_for_a_loading_server_and_says_so():
    srv = LoadingServer(ready_after=1.0)
    said: list[str] = []
    try:
        t0 = time.monotonic()
        check_server(srv.url, ready_timeout=20, interval=0.1, echo=said.append)
        assert time.monotonic() - t0 >= 0.9 and srv.hits > 2
        assert len(said) == 2  # one "waiting" line, one "ready" line; no spam
        assert "waiting" in said[0] and "503" in said[0] and "ready" in said[1]
    finally:
        srv.close()


def test_gives_up_after_the_ready_timeout():
    srv = LoadingServer(ready_after=3600)
    try:
        t0 = time.monotonic()
        with pytest.raises(LLMUnavailableError, match=r"HTTP 503.*still loading.*OPTIFORGE_READY"):
            check_server(srv.url, ready_timeout=0.5, interval=0.1, echo=lambda m: None)
        assert time.monotonic() - t0 < 5
    finally:
        srv.close()


def test_other_server_errors_and_no_server_fail_at_once():
    srv = LoadingServer(ready_after=3600, status=500)
    try:
        t0 = time.monotonic()
        with pytest.raises(LLMUnavailableError, match="HTTP 500"):
            check_server(srv.url, ready_timeout=30, interval=0.1, echo=lambda m: None)
        assert time.monotonic() - t0 < 3
    finally:
        srv.close()
    with pytest.raises(LLMUnavailableError, match="cannot reach"):
        check_server("http://127.0.0.1:9/v1", ready_timeout=30)


def test_ready_timeout_from_the_environment(monkeypatch):
    from optiforge.cli.common import _ready_timeout
    from optiforge.errors import ConfigError

    monkeypatch.setenv("OPTIFORGE_READY_TIMEOUT", "7")
    assert _ready_timeout() == 7.0
    monkeypatch.setenv("OPTIFORGE_READY_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="seconds"):
        _ready_timeout()


def test_failed_attempts_are_counted(fake, make_llm):
    """A timed-out attempt that is retried is a request too: it shows as a failed call."""
    with fake.FakeServer([fake.sleep(3), fake.ok("second try")]) as srv:
        llm = make_llm(srv.base_url, timeout=0.5, cache=False)
        assert llm.chat("x").text == "second try"
        assert (llm.usage.calls, llm.usage.failed_calls) == (1, 1)
