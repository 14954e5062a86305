"""The embedded llama.cpp server (``xllamacpp``), run in this process on 127.0.0.1.

:func:`ensure_local_server` starts one server per model file per process, on a free port
with ``Settings.local_parallel`` slots, and every :class:`~optiforge.llm.LLM` that uses that
model shares it. Servers stop when the process exits (or on :func:`stop_local_servers`).
``optiforge serve --local`` runs one in the foreground for other programs.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from pathlib import Path
from typing import Any

from optiforge.llm.errors import LocalServerError


def default_threads() -> int:
    """Every usable core, as llama.cpp itself uses on machines without hyper-threading.

    Measured on an idle 2-core machine (Qwen2.5-Coder-1.5B, ``optiforge solve`` on
    examples/problems/printers.txt, 3 calls): 2 threads took 80 s, 1 thread 140 s. On a
    machine that other jobs keep busy the picture flips, because llama.cpp's threads meet at a
    barrier for every operation and one thread that loses its core stalls the rest (SmolLM2
    at load average 12: 1.5 tok/s with 2 threads, 17 tok/s with 1). Set
    ``OPTIFORGE_LOCAL_THREADS`` (or ``local_threads``) lower on a shared machine.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores)


class LocalServer:
    """One ``xllamacpp.Server`` serving one GGUF file under the name ``alias``."""

    def __init__(
        self,
        model_path: Path,
        alias: str,
        *,
        n_parallel: int = 4,
        ctx_per_slot: int = 4096,
        threads: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.model_path = Path(model_path)
        self.alias = alias
        self.n_parallel = max(1, int(n_parallel))
        self.ctx_per_slot = max(256, int(ctx_per_slot))
        self.threads = int(threads) if threads else default_threads()
        self.host = host
        self.port = int(port)
        self.base_url: str | None = None
        self._server: Any = None

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._server is not None

    def start(self, timeout: float = 180.0) -> str:
        """Load the model, start serving and wait until ``/health`` says ok. Returns the
        OpenAI base URL (``http://127.0.0.1:PORT/v1``)."""
        if self._server is not None:
            return self.base_url or ""
        try:
            import xllamacpp
        except ImportError:
            raise LocalServerError(
                "the embedded server needs xllamacpp: pip install 'optiforge[local]' (or pass "
                "base_url for a running OpenAI-compatible server)"
            ) from None
        p = xllamacpp.CommonParams()
        p.model.path = str(self.model_path)
        p.model_alias = {self.alias}
        p.n_parallel = self.n_parallel
        p.n_ctx = self.ctx_per_slot * self.n_parallel  # llama.cpp splits n_ctx over slots
        p.cpuparams.n_threads = self.threads
        p.cpuparams_batch.n_threads = self.threads
        p.hostnames = [self.host]
        p.port = self.port
        if not os.environ.get("OPTIFORGE_LOCAL_VERBOSE"):
            p.verbosity = -1  # llama.cpp logs every request otherwise
        try:
            server = xllamacpp.Server(p)
        except Exception as exc:
            raise LocalServerError(
                f"the embedded server could not load {self.model_path.name}: {exc}. Check "
                "free memory, or set OPTIFORGE_LOCAL_CTX / OPTIFORGE_LOCAL_PARALLEL lower."
            ) from None
        address = str(server.listening_address).rstrip("/")
        if not address.startswith("http"):
            address = f"http://{address}"
        self._server = server
        self.base_url = f"{address}/v1"
        try:
            self._wait_healthy(address, timeout)
        except BaseException:
            self.stop()
            raise
        return self.base_url

    def _wait_healthy(self, address: str, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        last = "no answer"
        with httpx.Client(timeout=5.0) as http:
            while time.monotonic() < deadline:
                try:
                    r = http.get(f"{address}/health")
                    if r.status_code == 200:
                        return
                    last = f"HTTP {r.status_code}: {r.text[:200]}"
                except httpx.HTTPError as exc:
                    last = str(exc)
                time.sleep(0.1)
        raise LocalServerError(
            f"the embedded server at {address} was not ready after {timeout:g} s ({last})"
        )

    def check_completion(self, timeout: float = 120.0) -> float:
        """Send one real chat request (one token) and return its latency in seconds; a
        server whose ``/health`` says ok can still fail here (a broken template, too small
        a context). Raises :class:`LocalServerError` with the reason."""
        import httpx

        if self.base_url is None:
            raise LocalServerError("the embedded server is not running; call start() first")
        t0 = time.monotonic()
        try:
            r = httpx.post(
                f"{self.base_url}/chat/completions",
                json={
                    "model": self.alias,
                    "messages": [{"role": "user", "content": "ping"}],
                    "max_tokens": 1,
                    "temperature": 0,
                },
                timeout=timeout,
            )
        except httpx.HTTPError as exc:
            raise LocalServerError(
                f"the embedded server at {self.base_url} did not answer a first request "
                f"({type(exc).__name__}: {exc})"
            ) from None
        if r.status_code != 200 or not r.json().get("choices"):
            raise LocalServerError(
                f"the embedded server at {self.base_url} failed a first request: HTTP "
                f"{r.status_code} {r.text[:200]}"
            )
        return time.monotonic() - t0

    def stop(self) -> None:
        """Stop serving and free the model (waits for the server's threads to exit)."""
        server, self._server = self._server, None
        if server is not None:
            del server  # xllamacpp stops its HTTP and inference loops in the destructor

    def __repr__(self) -> str:
        return f"LocalServer({self.alias!r}, {self.base_url or 'stopped'})"


_lock = threading.Lock()
# One server per model file for the whole process: the model's memory is shared by every
# client, and several clients would otherwise load several copies.
_servers: dict[Path, LocalServer] = {}


def ensure_local_server(model: str, settings: Any = None, *, progress: bool = True) -> LocalServer:
    """The running embedded server for ``model`` (a store name or a .gguf path), starting
    it (and pulling a store model) if needed. Thread-safe; one server per model file."""
    from optiforge.llm.store import MODELS, ModelStore

    if settings is None:
        from optiforge.config import load_settings

        settings = load_settings()
    with _lock:
        path = ModelStore(settings=settings).resolve(model, progress=progress)
        server = _servers.get(path)
        if server is not None and server.running:
            return server
        alias = model if model in MODELS else Path(model).stem
        server = LocalServer(
            path,
            alias,
            n_parallel=settings.local_parallel,
            ctx_per_slot=settings.local_ctx,
            threads=settings.local_threads,
        )
        server.start()
        _servers[path] = server
        return server


def server_for_url(base_url: str | None) -> LocalServer | None:
    """The running embedded server with this base URL, if this process started it."""
    if not base_url:
        return None
    with _lock:
        for server in _servers.values():
            if server.running and server.base_url == base_url:
                return server
    return None


def stop_local_servers() -> None:
    """Stop every embedded server this process started."""
    with _lock:
        servers = list(_servers.values())
        _servers.clear()
    for s in servers:
        s.stop()


atexit.register(stop_local_servers)
