"""Serving apart from the client: no server is started behind the caller's back.

A client without base_url binds to the embedded server running in this process for its
model, or fails with a clear error; starting one is explicit (``local_server``,
``ensure_local_server``, or ``connect``'s client on first use).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from optiforge.llm import LLM, NoServerError, endpoints
from optiforge.llm.endpoints import LocalEndpoint

pytestmark = pytest.mark.timeout(120)


def test_a_client_without_server_fails_clearly_and_starts_nothing():
    # In a fresh process: the client's first call must not load the serving code at all.
    code = textwrap.dedent(
        """
        import sys
        from optiforge.llm import LLM, NoServerError
        llm = LLM("smollm2-135m", cache=False)
        try:
            llm.chat("hi", max_tokens=1)
        except NoServerError as exc:
            print(exc)
        loaded = [m for m in ("optiforge.llm.serving", "optiforge.config", "xllamacpp")
                  if m in sys.modules]
        print("LOADED", loaded)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    message, loaded = out.stdout.rsplit("LOADED", 1)
    assert loaded.strip() == "[]"
    assert "no embedded llama.cpp server is running" in message
    assert "optiforge serve --local --model smollm2-135m" in message
    assert "optiforge.llm.serving.local_server('smollm2-135m'" in message
    assert "optiforge.llm.serving.connect(settings)" in message


def test_ensure_server_raises_the_same_error():
    llm = LLM("not-started-model", cache=False)
    with pytest.raises(NoServerError, match="optiforge serve --local --model not-started-model"):
        llm.ensure_server()
    assert llm.base_url is None and llm.route == "local"
    llm.close()


def test_a_client_binds_to_the_published_server(fake, tmp_path):
    with fake.FakeServer([fake.ok("from the embedded one")]) as srv:
        ep = LocalEndpoint(srv.base_url, served_name="alias-x", slots=2)
        endpoints.publish("model-x", ep)
        try:
            llm = LLM("model-x", cache=False, concurrency=8)
            assert llm.chat("hi", max_tokens=3).text == "from the embedded one"
            assert llm.base_url == srv.base_url and llm.max_in_flight == 2
            assert srv.requests[0]["model"] == "alias-x"  # the server's own name for it
            llm.close()
        finally:
            endpoints.withdraw(srv.base_url)
    assert endpoints.find("model-x") is None
    with pytest.raises(NoServerError):
        LLM("model-x", cache=False).ensure_server()


def test_gguf_paths_find_their_server_however_written(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    f = tmp_path / "m.gguf"
    endpoints.publish(str(f), LocalEndpoint("http://127.0.0.1:9/v1", "m", 1))
    try:
        assert endpoints.find("~/m.gguf") == endpoints.find(str(f)) is not None
    finally:
        endpoints.withdraw("http://127.0.0.1:9/v1")


def test_start_local_runs_once_on_first_use_only(fake):
    calls = []
    with fake.FakeServer([fake.ok("ok")]) as srv:

        def start(model):
            calls.append(model)
            return LocalEndpoint(srv.base_url, "served", 1)

        llm = LLM("model-y", cache=False, start_local=start)
        assert calls == []  # constructing starts nothing
        llm.chat("a", max_tokens=1)
        llm.chat("b", max_tokens=1)
        assert calls == ["model-y"] and llm.max_in_flight == 1
        llm.close()
    # base_url given or a hosted name: the starter is never used.
    assert LLM("m", base_url="http://h/v1", cache=False, start_local=start).route == "openai"
    assert calls == ["model-y"]


def test_connect_builds_from_settings_and_starts_only_for_the_embedded_route(monkeypatch):
    from optiforge.llm.serving import connect
    from optiforge.llm.settings import LLMSettings

    s = LLMSettings(model="some/remote", base_url="http://h:1/v1", timeout=7.0, cache=False)
    llm = connect(s, concurrency=3)
    assert (llm.route, llm.base_url, llm.timeout, llm.concurrency) == (
        "openai",
        "http://h:1/v1",
        7.0,
        3,
    )
    assert llm.settings is s
    started = []
    import optiforge.llm.serving.local as local

    monkeypatch.setattr(
        local,
        "ensure_local_server",
        lambda model, settings: (
            started.append((model, settings))
            or type("S", (), {"endpoint": LocalEndpoint("http://127.0.0.1:9/v1", model, 1)})()
        ),
    )
    s2 = LLMSettings(model="tiny", cache=False)
    llm2 = connect(s2)
    assert started == []
    assert llm2.ensure_server() == "http://127.0.0.1:9/v1"
    assert started == [("tiny", s2)]


class _FakeLocal:
    """Stands in for xllamacpp: start/stop record what happened (no model is loaded)."""

    def __init__(self, monkeypatch, tmp_path):
        import optiforge.llm.serving.local as local
        from optiforge.llm.serving.store import ModelStore

        self.events: list[str] = []
        self.port = 40000
        path = tmp_path / "model.gguf"
        path.write_bytes(b"GGUF")
        monkeypatch.setattr(ModelStore, "resolve", lambda store, model, **kw: path)
        fake = self

        def start(server, timeout=180.0):
            fake.port += 1
            server._server = object()
            server.base_url = f"http://127.0.0.1:{fake.port}/v1"
            fake.events.append(f"start {fake.port}")
            return server.base_url

        real_stop = local.LocalServer.stop

        def stop(server):
            if server.running:
                fake.events.append(f"stop {server.base_url.split(':')[-1][:5]}")
            real_stop(server)

        monkeypatch.setattr(local.LocalServer, "start", start)
        monkeypatch.setattr(local.LocalServer, "stop", stop)
        monkeypatch.setattr(local, "_servers", {})


def test_local_server_blocks_share_one_server_and_the_last_one_stops_it(monkeypatch, tmp_path):
    from optiforge.llm.serving.local import ensure_local_server, local_server, stop_local_servers

    f = _FakeLocal(monkeypatch, tmp_path)
    with local_server("fake-model") as outer:
        assert endpoints.find("fake-model").base_url == outer.base_url
        with local_server("fake-model") as inner:
            assert inner is outer
        assert outer.running and f.events == ["start 40001"]  # the outer block still uses it
    assert not outer.running and f.events == ["start 40001", "stop 40001"]
    assert endpoints.find("fake-model") is None
    # ensure_local_server keeps the server past the block until stop_local_servers.
    with local_server("fake-model") as s:
        ensure_local_server("fake-model")
    assert s.running and endpoints.find("fake-model") is not None
    stop_local_servers()
    assert not s.running and endpoints.find("fake-model") is None
    assert f.events[-2:] == ["start 40002", "stop 40002"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_local_server_starts_and_stops_a_real_embedded_server(tmp_path):
    """SmolLM2 in a fresh process (so no session server is shared): the block starts the
    server, a plain LLM() uses it, and after the block the port is closed and a new client
    fails clearly."""
    code = textwrap.dedent(
        """
        import dataclasses, json
        import httpx
        from optiforge.config import load_settings
        from optiforge.llm import LLM, NoServerError
        from optiforge.llm.serving import local_server

        settings = dataclasses.replace(
            load_settings(), model="smollm2-135m", base_url=None, local_parallel=1,
            local_ctx=512, local_threads=1, cache=False,
        )
        out = {}
        with local_server(settings=settings, progress=False) as server:
            url = server.base_url
            out["health"] = httpx.get(url.removesuffix("/v1") + "/health").status_code
            with LLM(settings=settings) as llm:
                out["text"] = llm.chat("Say hi.", max_tokens=4).text
                out["bound"] = llm.base_url == url
        try:
            httpx.get(url.removesuffix("/v1") + "/health", timeout=2)
            out["after"] = "still answering"
        except httpx.HTTPError:
            out["after"] = "closed"
        try:
            LLM(settings=settings).ensure_server()
        except NoServerError:
            out["new_client"] = "NoServerError"
        print(json.dumps(out))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=540, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["health"] == 200 and out["text"] and out["bound"], out
    assert out["after"] == "closed" and out["new_client"] == "NoServerError", out


def test_store_names_are_never_litellm_names():
    from optiforge.llm.client import is_litellm_model
    from optiforge.llm.serving.store import MODELS

    assert MODELS and all("/" not in name for name in MODELS)
    assert not any(is_litellm_model(name) for name in MODELS)


def test_old_import_paths_are_the_serving_modules():
    import optiforge.llm.local
    import optiforge.llm.serving.local
    import optiforge.llm.serving.store
    import optiforge.llm.serving.vllm
    import optiforge.llm.store
    import optiforge.llm.vllm

    assert optiforge.llm.local is optiforge.llm.serving.local
    assert optiforge.llm.store is optiforge.llm.serving.store
    assert optiforge.llm.vllm is optiforge.llm.serving.vllm
    assert (Path(optiforge.llm.serving.vllm.__file__).with_name("gguf_to_hf.py")).is_file()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_solve_without_a_client_starts_the_embedded_server_itself(tmp_path):
    """``optiforge.agents.solve(text)``: settings from the environment, the embedded
    server started by the convenience path on the first call, kept until exit."""
    code = textwrap.dedent(
        """
        import json
        from optiforge.agents import solve
        from optiforge.llm import endpoints
        sol = solve("Maximize x subject to x <= 3, x >= 0.", agent="direct")
        found = endpoints.find("smollm2-135m")
        print(json.dumps({"calls": sol.calls, "running": found is not None}))
        """
    )
    env = {
        **os.environ,
        "OPTIFORGE_MODEL": "smollm2-135m",
        "OPTIFORGE_CACHE": "0",
        "OPTIFORGE_LOCAL_PARALLEL": "1",
        "OPTIFORGE_LOCAL_CTX": "2048",
    }
    env.pop("OPTIFORGE_BASE_URL", None)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=540,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["calls"] >= 1 and out["running"], out
