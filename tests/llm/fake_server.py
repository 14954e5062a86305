"""A scriptable OpenAI-compatible HTTP server on 127.0.0.1 for fault injection tests.

Each incoming request takes the next behaviour from the queue (the last one repeats):

    server = FakeServer([sleep(2), ok("hello")])   # first request times out, then success
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Behaviour = Callable[[BaseHTTPRequestHandler, dict[str, Any]], None]


def _completion(texts: list[str], model: str = "fake", finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": finish}
            for i, t in enumerate(texts)
        ],
        "usage": {
            "prompt_tokens": 7,
            "completion_tokens": 3 * len(texts),
            "total_tokens": 7 + 3 * len(texts),
        },
    }


def _send(
    h: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    ctype: str = "application/json",
) -> None:
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)


def ok(text: str | list[str] = "hello") -> Behaviour:
    """A normal completion; with n > 1 and one text, the text is repeated n times."""

    def run(h, req):
        texts = [text] * int(req.get("n", 1)) if isinstance(text, str) else list(text)
        _send(h, 200, json.dumps(_completion(texts, req.get("model", "fake"))).encode())

    return run


def status(code: int, message: str = "error", headers: dict[str, str] | None = None) -> Behaviour:
    """An HTTP error with an OpenAI-style error body."""

    def run(h, req):
        body = {"error": {"message": message, "type": "fake", "code": code}}
        _send(h, code, json.dumps(body).encode(), headers)

    return run


def sleep(seconds: float, then: Behaviour | None = None) -> Behaviour:
    """Wait (the client should time out), then answer with ``then`` or a completion."""

    def run(h, req):
        time.sleep(seconds)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            (then or ok("late"))(h, req)

    return run


def malformed() -> Behaviour:
    """HTTP 200 whose body is not JSON."""

    def run(h, req):
        _send(h, 200, b'{"choices": [ this is not json')

    return run


def no_choices() -> Behaviour:
    def run(h, req):
        _send(h, 200, json.dumps({**_completion([]), "choices": []}).encode())

    return run


def stream(pieces: list[str], finish: bool = True) -> Behaviour:
    """Server-sent events; with ``finish=False`` the connection drops before the end."""

    def run(h, req):
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Connection", "close")
        h.end_headers()
        for p in pieces:
            chunk = {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "fake",
                "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}],
            }
            h.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            h.wfile.flush()
        if finish:
            last = {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "fake",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
            h.wfile.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())
        h.wfile.flush()
        h.close_connection = True

    return run


class FakeServer:
    """Serves ``/v1/chat/completions`` (and ``/v1/models``) from a behaviour queue.
    ``requests`` records each request body, ``peers`` the client address (host, port) of
    each, so distinct peers count TCP connections; use as a context manager."""

    def __init__(self, behaviours: list[Behaviour], models: list[str] | None = None) -> None:
        self.behaviours = list(behaviours)
        self.models = models or ["fake"]
        self.requests: list[dict[str, Any]] = []
        self.peers: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    data = {
                        "object": "list",
                        "data": [{"id": m, "object": "model"} for m in outer.models],
                    }
                    _send(self, 200, json.dumps(data).encode())
                elif self.path.rstrip("/").endswith("/health"):
                    _send(self, 200, b'{"status": "ok"}')
                else:
                    _send(self, 404, b'{"error": {"message": "not found"}}')

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with outer._lock:
                    outer.requests.append(body)
                    outer.peers.append(self.client_address)
                    b = (
                        outer.behaviours.pop(0)
                        if len(outer.behaviours) > 1
                        else outer.behaviours[0]
                    )
                b(self, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
