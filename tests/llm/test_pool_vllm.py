"""vLLM for a pool of servers: data parallel beside tensor parallel on the command line, the
GPU count check, and the URLs `optiforge serve` prints (no vLLM needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from optiforge.llm import VllmLaunchError
from optiforge.llm.serving.vllm import (
    VllmConfig,
    VllmInstall,
    build_command,
    client_urls,
    gpus_needed,
)

GPU = VllmInstall(
    python="/venv/bin/python", version="0.11.0", distribution="vllm", has_cli_metadata=True
)


def _opt(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_data_and_tensor_parallel_in_the_command_line():
    cfg = VllmConfig(
        model="Qwen/Qwen2.5-72B-Instruct", tensor_parallel_size=4, data_parallel_size=2
    )
    cmd = build_command(cfg, cfg.model, GPU, 8000)
    assert _opt(cmd, "--tensor-parallel-size") == "4"
    assert _opt(cmd, "--data-parallel-size") == "2"
    assert gpus_needed(cfg) == 8
    plain = build_command(VllmConfig(model="m"), "m", GPU, 8000)
    assert "--data-parallel-size" not in plain and "--tensor-parallel-size" not in plain
    assert gpus_needed(VllmConfig(model="m")) == 1
    with pytest.raises(ValueError):
        VllmConfig(model="m", data_parallel_size=0)


def test_too_few_gpus_is_a_clear_error(monkeypatch):
    import optiforge.llm.serving.vllm as v

    monkeypatch.setattr(v, "find_vllm", lambda python=None: GPU)
    monkeypatch.setattr(v, "has_gpu", lambda: True)
    monkeypatch.setattr(v, "gpu_count", lambda: 4)
    cfg = VllmConfig(model="m", tensor_parallel_size=4, data_parallel_size=2)
    with pytest.raises(VllmLaunchError, match=r"needs 8 GPUs .* but 4 are visible"):
        v.launch(cfg, progress=False)


def test_gpu_count_respects_cuda_visible_devices(monkeypatch, tmp_path):
    import optiforge.llm.serving.vllm as v

    smi = tmp_path / "nvidia-smi"
    smi.write_text('#!/bin/sh\nfor i in 0 1 2 3; do echo "GPU $i: Fake (UUID: GPU-$i)"; done\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert v.gpu_count() == 4 and v.has_gpu()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    assert v.gpu_count() == 2


def test_client_urls():
    assert client_urls(VllmConfig(model="m", host="10.0.0.5"), 8000) == ["http://10.0.0.5:8000/v1"]
    urls = client_urls(VllmConfig(model="m", host="0.0.0.0"), 8001)
    assert urls[0] == "http://127.0.0.1:8001/v1"
    assert all(u.endswith(":8001/v1") for u in urls)


def test_announce_prints_every_url(capsys):
    from optiforge.cli.serve import _announce

    _announce(
        "http://127.0.0.1:8000/v1",
        "m",
        urls=["http://127.0.0.1:8000/v1", "http://gpu1.lab:8000/v1"],
    )
    out = capsys.readouterr().out
    assert "OPTIFORGE_BASE_URL=http://127.0.0.1:8000/v1" in out
    assert "from other hosts: http://gpu1.lab:8000/v1" in out
    assert "OPTIFORGE_BASE_URL=http://gpu1.lab:8000/v1,http://OTHER-HOST:PORT/v1" in out


def test_serve_help_explains_data_parallel():
    out = subprocess.run(
        [sys.executable, "-m", "optiforge", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", **_pythonpath()},
    )
    assert out.returncode == 0, out.stderr
    assert "--data-parallel-size" in out.stdout and "--tensor-parallel-size" in out.stdout


def _pythonpath() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "HOME")}
