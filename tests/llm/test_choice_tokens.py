"""Every choice of an ``n > 1`` request is counted (llama.cpp reports the first only)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

pytestmark = pytest.mark.timeout(120)


class LlamaLike:
    """Answers like llama.cpp: ``timings`` in the reply, usage of the first choice only,
    and a ``/tokenize`` endpoint (one token per word here)."""

    def __init__(self, texts, reasons, tokenize: bool = True) -> None:
        outer = self
        self.tokenize_calls = 0

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _json(self, code, obj):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/tokenize":
                    if not tokenize:
                        return self._json(404, {"error": "no"})
                    outer.tokenize_calls += 1
                    return self._json(200, {"tokens": list(range(len(req["content"].split())))})
                n = int(req.get("n", 1))
                choices = [
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": texts[i]},
                        "finish_reason": reasons[i],
                    }
                    for i in range(n)
                ]
                first = len(texts[0].split()) + (1 if reasons[0] == "stop" else 0)
                self._json(
                    200,
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "m",
                        "choices": choices,
                        "usage": {"prompt_tokens": 5, "completion_tokens": first},
                        "timings": {"predicted_n": first},
                    },
                )

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_llamacpp_choices_are_each_counted(make_llm):
    srv = LlamaLike(["a b c", "one two", "w " * 8], ["stop", "stop", "length"])
    try:
        llm = make_llm(srv.base_url, cache=False)
        r = llm.chat("x", n=3, max_tokens=8, temperature=0.5)
        # first: reported 3 + 1; second: 2 words + 1 end token; third: cut at max_tokens
        assert r.completion_tokens == 4 + 3 + 8
        assert llm.usage.completion_tokens == 15 and llm.usage.choices == 3
        assert llm.usage.calls == 1 and srv.tokenize_calls == 1
    finally:
        srv.close()


def test_without_tokenize_the_other_choices_are_estimated_not_free(make_llm):
    srv = LlamaLike(["a b c", "x" * 40], ["stop", "stop"], tokenize=False)
    try:
        llm = make_llm(srv.base_url, cache=False)
        r = llm.chat("x", n=2, max_tokens=50, temperature=0.5)
        assert r.completion_tokens == 4 + (40 // 4 + 1)
    finally:
        srv.close()


def test_other_servers_usage_is_taken_as_reported(fake, make_llm):
    with fake.FakeServer([fake.ok("hi there")]) as srv:  # no timings: not llama.cpp
        llm = make_llm(srv.base_url, cache=False)
        assert llm.chat("x", n=2, temperature=0.5).completion_tokens == 6


@pytest.mark.slow
def test_the_rule_holds_on_the_real_server(tiny_llm):
    """What the rule assumes, checked on llama.cpp itself: for one choice, the reported
    completion tokens are the re-tokenized text plus one when the model stopped."""
    root = tiny_llm.ensure_server().removesuffix("/v1")
    seen = set()
    for i, prompt in enumerate(["Say hi.", "Name a fruit.", "Count to three."]):
        r = httpx.post(
            f"{root}/v1/chat/completions",
            json={
                "model": tiny_llm._wire_model,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 12 if i else 3,
                "temperature": 0,
            },
            timeout=120,
        ).json()
        choice = r["choices"][0]
        toks = httpx.post(f"{root}/tokenize", json={"content": choice["message"]["content"]})
        expected = len(toks.json()["tokens"]) + (1 if choice["finish_reason"] == "stop" else 0)
        assert abs(r["usage"]["completion_tokens"] - expected) <= 1
        seen.add(choice["finish_reason"])
    assert "length" in seen
