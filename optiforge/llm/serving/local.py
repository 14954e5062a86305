"""The embedded llama.cpp server (``xllamacpp``), run in this process on 127.0.0.1.

Nothing here runs unless called: a client never starts a server. Two explicit ways:

- ``with local_server(model, settings=settings) as server:``: the server runs for the
  block. Every :class:`~optiforge.llm.LLM` without ``base_url`` for that model, made
  before or inside the block, uses it (``server.base_url`` is its URL). Blocks for the same
  model file share one server, which stops when the last block ends.
- :func:`ensure_local_server`: start (or reuse) the server and keep it until the process
  exits or :func:`stop_local_servers`; what the CLI and ``optiforge.agents.solve``'s
  convenience path use (through :func:`optiforge.llm.serving.connect`).

There is one server per model file per process, on a free port with
``settings.local_parallel`` slots. ``optiforge serve --local`` runs one in the foreground
for other programs.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from optiforge.llm import endpoints
from optiforge.llm.endpoints import LocalEndpoint
from optiforge.llm.errors import LocalServerError
from optiforge.llm.settings import LLMSettings


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
        #: ``local_server`` blocks using this server now; ``kept``: ensure_local_server
        #: asked for it to run until the process exits.
        self.users = 0
        self.kept = False

    @property
    def endpoint(self) -> LocalEndpoint:
        """What a client needs to use this server (it must be running)."""
        if self._server is None or self.base_url is None:
            raise LocalServerError("the embedded server is not running; call start() first")
        return LocalEndpoint(self.base_url, self.alias, self.n_parallel)

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
        if self.base_url is not None:
            endpoints.withdraw(self.base_url)
        if server is not None:
            del server  # xllamacpp stops its HTTP and inference loops in the destructor

    def __repr__(self) -> str:
        return f"LocalServer({self.alias!r}, {self.base_url or 'stopped'})"


_lock = threading.Lock()
# One server per model file for the whole process: the model's memory is shared by every
# client, and several clients would otherwise load several copies.
_servers: dict[Path, LocalServer] = {}


def _acquire(model: str, settings: Any, progress: bool) -> LocalServer:
    """The running server for ``model``, started (and a store model pulled) if needed, and
    published for clients under the name ``model``. Call with ``_lock`` held."""
    from optiforge.llm.serving.store import MODELS, ModelStore

    path = ModelStore(settings=settings).resolve(model, progress=progress)
    server = _servers.get(path)
    if server is None or not server.running:
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
    endpoints.publish(model, server.endpoint)
    return server


def ensure_local_server(model: str, settings: Any = None, *, progress: bool = True) -> LocalServer:
    """Start the embedded server for ``model`` (a store name or a .gguf path; a store
    model is pulled first if needed), or return the one already running, and keep it
    until the process exits (or :func:`stop_local_servers`). Thread-safe; one server per
    model file. ``settings``: the run's settings (models_dir, local_parallel, local_ctx,
    local_threads); None uses :class:`~optiforge.llm.settings.LLMSettings`'s defaults."""
    settings = settings if settings is not None else LLMSettings()
    with _lock:
        server = _acquire(model, settings, progress)
        server.kept = True
        return server


@contextmanager
def local_server(
    model: str | None = None, *, settings: Any = None, progress: bool = True
) -> Iterator[LocalServer]:
    """Run the embedded llama.cpp server for ``model`` (default ``settings.model``) for
    the duration of the block; yields the :class:`LocalServer` (``.base_url``).

    Inside the block, ``LLM(model)`` without ``base_url`` uses it. A server that is
    already running for the same model file is shared; the server stops when the last
    block using it ends, unless :func:`ensure_local_server` was asked to keep it. A store
    model is pulled first if needed (``progress``: show the bars). ``settings`` as for
    :func:`ensure_local_server`.
    """
    settings = settings if settings is not None else LLMSettings()
    name = model or settings.model
    with _lock:
        server = _acquire(name, settings, progress)
        server.users += 1
    try:
        yield server
    finally:
        with _lock:
            server.users -= 1
            stop = server.users == 0 and not server.kept
            if stop and _servers.get(server.model_path) is server:
                del _servers[server.model_path]
        if stop:
            server.stop()


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
            s.kept = False
    for s in servers:
        s.stop()


atexit.register(stop_local_servers)
