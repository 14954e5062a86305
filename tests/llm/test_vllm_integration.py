"""Opt-in: a real vLLM server (CPU build) started by `optiforge serve --model`, used through
optiforge's client. Run with scripts/vllm_cpu_test.sh (sets OPTIFORGE_VLLM_PYTHON)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
from pydantic import BaseModel, Field

from optiforge.llm import LLM

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1800)]


class Pet(BaseModel):
    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=30)  # SmolLM2 loops on unbounded integers under vLLM


def _lines(stream, q: queue.Queue) -> None:
    for line in stream:
        q.put(line)
    q.put(None)


def test_vllm_cpu_serve_and_client(tmp_path):
    py = os.environ.get("OPTIFORGE_VLLM_PYTHON")
    if not py:
        pytest.skip("set OPTIFORGE_VLLM_PYTHON to a vllm-cpu venv (scripts/vllm_cpu_test.sh)")
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "optiforge", "serve", "--model", "smollm2-135m", "--cpu",
         "--python", py, "--ready-timeout", "900"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # SIGINT as from a terminal, even when the test run itself ignores it (`cmd &`).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    q: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, q), daemon=True).start()
    out: list[str] = []
    base_url = None
    try:
        while base_url is None:
            line = q.get(timeout=1200)
            if line is None:
                pytest.fail("optiforge serve exited before it was ready:\n" + "".join(out[-30:]))
            out.append(line)
            if line.startswith("OPTIFORGE_BASE_URL="):
                base_url = line.split()[0].split("=", 1)[1]
        timings["ready_s"] = time.monotonic() - t0

        llm = LLM("smollm2-135m", base_url=base_url, cache_dir=tmp_path, timeout=300)
        t = time.monotonic()
        r = llm.chat("Say hello", max_tokens=16)
        timings["chat_s"] = time.monotonic() - t
        assert r.text.strip() and r.completion_tokens > 0 and not r.cached

        t = time.monotonic()
        r = llm.chat("Name a colour", n=2, temperature=0.8, seed=3, max_tokens=8)
        timings["n2_s"] = time.monotonic() - t
        assert len(r.texts) == 2

        t = time.monotonic()
        r = llm.chat("Describe a pet as JSON with name and age", response_format=Pet, max_tokens=60)
        timings["structured_s"] = time.monotonic() - t
        assert isinstance(r.parsed[0], Pet)

        again = llm.chat(
            "Describe a pet as JSON with name and age", response_format=Pet, max_tokens=60
        )
        assert again.cached and again.parsed == r.parsed
        assert llm.usage.calls >= 3 and llm.usage.cache_hits == 1
        llm.close()
    finally:
        t = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        timings["stop_s"] = time.monotonic() - t
        timings["total_s"] = time.monotonic() - t0
        print("vLLM timings:", {k: round(v, 1) for k, v in timings.items()})
    rest = []
    while (line := q.get(timeout=10)) is not None:
        rest.append(line)
    assert proc.returncode == 0, "".join(out + rest)
    assert any("stopped" in line for line in rest)
    import httpx

    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{base_url}/models", timeout=2)
