"""Run untrusted Python (generated model code) in an isolated process, fast.

:class:`SandboxPool` keeps pre-warmed worker processes (pyomo, highspy and pyscipopt already
imported and exercised). Each program runs in a fresh fork of a worker, so programs never
see each other's state and never run in the optiforge process. See
:mod:`optiforge.solvers._worker` for the confinement and docs/solvers.md for the protocol.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import queue
import re
import select
import struct
import subprocess
import sys
import threading
import time
import warnings
import weakref
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, computed_field

from optiforge.solvers.errors import SandboxError
from optiforge.solvers.protocol import parse_objective_text, parse_report_text
from optiforge.solvers.result import SolveResult, SolveStatus
from optiforge.solvers.settings import SandboxSettings

EXIT_MEMORY = 121
EXIT_SETUP = 122

DEFAULT_TIMEOUT = 30.0
DEFAULT_MEMORY_MB = 1024
DEFAULT_OUTPUT_LIMIT = 4 * 1024 * 1024
_CONTROL_GRACE_S = 15.0  # extra wait for a worker's reply beyond the program's timeout
_START_TIMEOUT_S = 120.0


class ExitReason(str, Enum):
    """Why a sandboxed program stopped."""

    OK = "ok"  # exit code 0
    ERROR = "error"  # non-zero exit: an exception, sys.exit(n), os._exit(n)
    TIMEOUT = "timeout"  # wall-clock limit
    CPU_LIMIT = "cpu_limit"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"  # stdout, stderr or a file grew past the limit
    CRASHED = "crashed"  # killed by a signal such as SIGSEGV or SIGABRT
    KILLED = "killed"  # SIGKILL or another signal not explained by a limit
    SANDBOX_ERROR = "sandbox_error"  # the sandbox failed, not the program


class SandboxResult(BaseModel):
    """What happened to one program."""

    exit_reason: ExitReason
    returncode: int | None = None  # negative: killed by that signal number
    signal: str | None = None
    elapsed_s: float = 0.0
    cpu_s: float | None = None
    stdout: str = ""  # the last ``tail_chars`` characters
    stderr: str = ""
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    #: From ``report(...)``, else from an ``OBJECTIVE: <number>`` line; None if neither.
    result: SolveResult | None = None
    #: Why a report was rejected (garbage on the report channel), if it was.
    report_error: str | None = None
    #: One line for people and critics: what happened.
    message: str = ""
    #: The confinement layers in force, e.g.
    #: ``fork+rlimits+audit-hook+userns+netns+mountns+readonly+pidns+procfs+ipcns+nproc+nocaps``
    #: (see :mod:`optiforge.solvers.isolation`).
    isolation: str = ""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def isolation_level(self) -> str:
        """``full``, ``partial`` or ``basic`` (see ``optiforge.solvers.isolation.level``)."""
        from optiforge.solvers.isolation import level

        return level(self.isolation.split("+")) if self.isolation else ""

    @property
    def ok(self) -> bool:
        """True when the program exited with code 0."""
        return self.exit_reason == ExitReason.OK


def default_pool_size() -> int:
    """Two workers per core (at most 8): a program's life is partly waiting (fork, exit,
    scheduling), so more programs in flight than cores keeps the cores busy."""
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


#: Environment variables a worker inherits; everything else (API keys, tokens) stays out,
#: because a program is a fork of the worker and could read the worker's memory.
_WORKER_ENV = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "PYTHONPATH",
    "PYTHONHOME",
    "LD_LIBRARY_PATH",
    "OMP_NUM_THREADS",
)


def _hidden_paths(settings: Any) -> list[str]:
    """Directories a program must not read: the user's home, the optiforge home (LLM cache,
    models, journals) and the caller's working directory. The worker covers each with an
    empty tmpfs, binding back only what the interpreter needs. ``settings``: see
    :class:`~optiforge.solvers.settings.SandboxSettings`."""
    out = [os.path.expanduser("~")]
    with contextlib.suppress(OSError):  # a deleted working directory has no path
        out.append(os.getcwd())
    s = settings
    out += [str(s.home), str(s.resolved_cache_dir), str(s.resolved_models_dir)]
    return [p for p in out if p and p != "/"]


class _WorkerProc:
    """One worker process and its control pipes (used by one thread at a time)."""

    def __init__(
        self,
        isolation: str = "auto",
        disk_mb: int = 256,
        hide: tuple[str, ...] = (),
        probe: bool = False,
    ) -> None:
        env = {k: v for k, v in os.environ.items() if k in _WORKER_ENV or k.startswith("LC_")}
        env["OPTIFORGE_SANDBOX_ISOLATION"] = isolation
        env["OPTIFORGE_SANDBOX_DISK_MB"] = str(int(disk_mb))
        env["OPTIFORGE_SANDBOX_HIDE"] = os.pathsep.join(hide)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_package_root(), env.get("PYTHONPATH", "")) if p
        )
        env.setdefault("OMP_NUM_THREADS", "1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "optiforge.solvers._worker", *(["--probe"] if probe else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,
            env=env,
            # Not the caller's folder: ``-m`` puts the working directory on sys.path, and the
            # worker keeps what is on sys.path visible to programs.
            cwd="/",
        )
        self.ready = False
        self.isolation = ""
        self.level = ""
        self.missing: list[str] = []
        self.notes: list[str] = []
        self.pid = self.proc.pid

    def _read_exact(self, n: int, deadline: float) -> bytes:
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("sandbox worker did not answer in time")
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise EOFError("sandbox worker exited")
            buf += chunk
        return bytes(buf)

    def _recv(self, timeout: float) -> dict[str, Any]:
        import json

        deadline = time.monotonic() + timeout
        (n,) = struct.unpack(">I", self._read_exact(4, deadline))
        msg = json.loads(self._read_exact(n, deadline))
        # A result's output follows its header as raw bytes (the worker splices them).
        blobs = msg.pop("blobs", None) if msg.get("type") == "result" else None
        if blobs is not None:
            for key, size in zip(("stdout", "stderr", "report"), blobs, strict=True):
                msg[key] = self._read_exact(int(size), deadline).decode("utf-8", "replace")
        return msg

    def _send(self, msg: dict[str, Any], payload: bytes = b"") -> None:
        import json

        data = json.dumps(msg).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(struct.pack(">I", len(data)) + data + payload)
        self.proc.stdin.flush()

    def wait_ready(self, timeout: float = _START_TIMEOUT_S) -> None:
        if self.ready:
            return
        msg = self._recv(timeout)
        if msg.get("type") != "ready":
            raise SandboxError(
                f"sandbox worker failed to start: {msg.get('message', msg)}; check that "
                "pyomo, highspy and pyscipopt import in this Python"
            )
        self.ready = True
        self.isolation = msg.get("isolation", "")
        self.level = msg.get("level", "")
        self.missing = list(msg.get("missing", []))
        self.notes = list(msg.get("notes", []))

    def request(self, job: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send a job: a small header the worker reads, then the program as a payload the
        worker passes to the program's process without reading it."""
        import json

        self.wait_ready()
        payload = json.dumps(job).encode()
        self._send(
            {
                "type": "run",
                "timeout": job["timeout"],
                "tail_chars": job["tail_chars"],
                "payload": len(payload),
            },
            payload,
        )
        return self._recv(timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, wait: float = 2.0) -> None:
        if self.alive():
            with contextlib.suppress(Exception):
                self._send({"type": "exit"})
                self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                self.kill()
        self.kill()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, 9)
        with contextlib.suppress(Exception):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(Exception):
                stream.close()  # type: ignore[union-attr]


def _close_workers(workers: list[_WorkerProc]) -> None:
    for w in list(workers):
        w.close(wait=1.0)


class SandboxPool:
    """Pre-warmed sandbox workers; each program runs in a fresh fork of one of them.

    Use as a context manager, or call :meth:`close`. ``run`` is thread-safe and blocks;
    ``arun`` is its asyncio form. At most ``size`` programs run at once; more callers wait.
    A worker that dies or hangs is replaced, and the pool keeps serving.

    ``timeout``, ``memory_mb`` and ``output_limit`` are defaults for :meth:`run`.
    ``isolation="auto"`` uses every kernel layer it can get (namespaces, as root directly,
    otherwise in an unprivileged user namespace; see :mod:`optiforge.solvers.isolation`);
    ``"basic"`` forces the fallback without namespaces (fork, rlimits, audit hook) for
    testing. ``disk_mb`` sizes each worker's private /tmp (namespace mode).

    ``require="full"`` refuses to run anything (:class:`SandboxError`) unless every layer
    of full isolation is in force; ``"none"`` runs with what there is and warns once,
    naming the missing layers. The default is ``settings.sandbox_require``.

    ``settings``: what the pool reads of the run's settings (``sandbox_require``, and the
    optiforge directories it hides from programs), any object with the attributes of
    :class:`~optiforge.solvers.settings.SandboxSettings`, such as
    :func:`optiforge.config.load_settings`'s result (the CLI and the agents pass that, so
    ``OPTIFORGE_SANDBOX_REQUIRE`` and ``sandbox_require`` in ``optiforge.toml`` apply);
    None uses ``SandboxSettings()``, the settings' defaults. The pool reads no
    configuration itself.
    """

    def __init__(
        self,
        size: int | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        memory_mb: int = DEFAULT_MEMORY_MB,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        isolation: str = "auto",
        disk_mb: int = 256,
        require: str | None = None,
        settings: Any = None,
    ) -> None:
        if isolation not in ("auto", "basic"):
            raise SandboxError(f"isolation must be 'auto' or 'basic', got {isolation!r}")
        if settings is None:
            settings = SandboxSettings()
        if require is None:
            require = settings.sandbox_require
        if require not in ("none", "full"):
            raise SandboxError(
                f"sandbox_require must be 'none' or 'full', got {require!r} "
                "(OPTIFORGE_SANDBOX_REQUIRE or sandbox_require in optiforge.toml)"
            )
        self.require = require
        if size is None:
            size = default_pool_size()
        if size < 1:
            raise SandboxError(f"pool size must be at least 1, got {size}")
        self.size = size
        self.defaults = {
            "timeout": float(timeout),
            "memory_mb": int(memory_mb),
            "output_limit": int(output_limit),
        }
        self._lock = threading.Lock()
        self._idle: queue.Queue[_WorkerProc] = queue.Queue()
        self._workers: list[_WorkerProc] = []
        self._closed = False
        self._spawn_args = {
            "isolation": isolation,
            "disk_mb": disk_mb,
            "hide": tuple(_hidden_paths(settings)) if isolation == "auto" else (),
        }
        for _ in range(size):
            w = _WorkerProc(**self._spawn_args)
            self._workers.append(w)
            self._idle.put(w)
        self._finalizer = weakref.finalize(self, _close_workers, self._workers)

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every worker (idempotent)."""
        with self._lock:
            self._closed = True
        self._finalizer()

    @property
    def closed(self) -> bool:
        return self._closed

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (for diagnostics and tests)."""
        with self._lock:
            return [w.pid for w in self._workers]

    def warm_up(self, timeout: float = _START_TIMEOUT_S) -> None:
        """Block until every worker has finished importing (optional; ``run`` waits too)."""
        taken = [self._idle.get() for _ in range(self.size)]
        try:
            for w in taken:
                w.wait_ready(timeout)
        finally:
            for w in taken:
                self._idle.put(w)

    def _replace(self, w: _WorkerProc) -> _WorkerProc:
        w.kill()
        with self._lock:
            if self._closed:  # closing: do not start a worker nobody would stop
                return w
            fresh = _WorkerProc(**self._spawn_args)
            if w in self._workers:
                self._workers.remove(w)
            self._workers.append(fresh)
        return fresh

    # -- running -----------------------------------------------------------------------------
    def run(
        self,
        code: str,
        *,
        timeout: float | None = None,
        cpu_time: float | None = None,
        memory_mb: int | None = None,
        output_limit: int | None = None,
        max_open_files: int = 64,
        files: dict[str, str] | None = None,
        tail_chars: int = 8000,
    ) -> SandboxResult:
        """Run ``code`` as ``__main__`` in a fresh sandboxed process; see :func:`run_sandboxed`."""
        if self._closed:
            raise SandboxError("the sandbox pool is closed; create a new SandboxPool")
        if not isinstance(code, str):
            raise SandboxError(f"code must be a str, got {type(code).__name__}")
        timeout = self.defaults["timeout"] if timeout is None else float(timeout)
        if not timeout > 0:
            raise SandboxError(f"timeout must be positive seconds, got {timeout!r}")
        cpu = timeout if cpu_time is None else float(cpu_time)
        mem = self.defaults["memory_mb"] if memory_mb is None else int(memory_mb)
        out = self.defaults["output_limit"] if output_limit is None else int(output_limit)
        if mem < 16 or out < 1024 or max_open_files < 16:
            raise SandboxError(
                "memory_mb must be >= 16, output_limit >= 1024 bytes and max_open_files >= 16"
            )
        for name, content in (files or {}).items():
            if (
                not isinstance(name, str)
                or not name
                or name in (".", "..", "program.py")
                or os.path.basename(name) != name
                or not isinstance(content, str)
            ):
                raise SandboxError(
                    f"files: {name!r} must be a plain file name (not program.py) mapped to "
                    "text, e.g. {'data.csv': 'a,b\\n1,2\\n'}"
                )
        job = {
            "type": "run",
            "code": code,
            "timeout": timeout,
            "cpu_time": cpu,
            "memory_mb": mem,
            "output_limit": out,
            "max_open_files": int(max_open_files),
            "files": files or {},
            "tail_chars": int(tail_chars),
        }
        w = self._idle.get()
        t0 = time.monotonic()
        try:
            if self._closed:
                raise SandboxError("the sandbox pool is closed; create a new SandboxPool")
            try:
                w.wait_ready()
                self._check_isolation(w)
                reply = w.request(job, timeout + _CONTROL_GRACE_S)
            except (OSError, EOFError, TimeoutError, ValueError) as e:
                w = self._replace(w)
                return SandboxResult(
                    exit_reason=ExitReason.SANDBOX_ERROR,
                    elapsed_s=time.monotonic() - t0,
                    message=f"sandbox worker failed ({type(e).__name__}: {e}); it was replaced",
                )
        finally:
            self._idle.put(w)
        if reply.get("type") != "result":
            return SandboxResult(
                exit_reason=ExitReason.SANDBOX_ERROR,
                elapsed_s=time.monotonic() - t0,
                message=f"sandbox worker error: {reply.get('message', reply)}",
            )
        return _build_result(reply, job)

    async def arun(self, code: str, **kwargs: Any) -> SandboxResult:
        """:meth:`run` without blocking the event loop."""
        return await asyncio.to_thread(self.run, code, **kwargs)

    def _check_isolation(self, w: _WorkerProc) -> None:
        """Refuse (require=full) or warn once when a layer of full isolation is missing."""
        if w.level == "full" or self._spawn_args["isolation"] == "basic":
            return
        text = isolation_message(w.missing, w.notes)
        if self.require == "full":
            raise SandboxError(
                f"sandbox_require=full, but {text}. Generated code was not run. Allow "
                "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 and "
                "user.max_user_namespaces > 0; in a container, a seccomp/AppArmor profile "
                "that permits unshare) or run as root, or set OPTIFORGE_SANDBOX_REQUIRE=none "
                "to accept the weaker isolation."
            )
        global _warned
        with _default_lock:
            if _warned:
                return
            _warned = True
        warnings.warn(f"optiforge sandbox: {text}", RuntimeWarning, stacklevel=3)

    def isolation_info(self, timeout: float = _START_TIMEOUT_S) -> dict[str, Any]:
        """The isolation the workers have: ``{"isolation", "level", "missing", "notes"}``."""
        w = self._idle.get()
        try:
            w.wait_ready(timeout)
            return {
                "isolation": w.isolation,
                "level": w.level,
                "missing": list(w.missing),
                "notes": list(w.notes),
            }
        finally:
            self._idle.put(w)


_warned = False


def isolation_message(missing: list[str], notes: list[str]) -> str:
    """One sentence naming the missing layers and why they are missing."""
    what = ", ".join(missing) or "none"
    why = f" ({'; '.join(notes)})" if notes else ""
    return (
        f"generated code runs without full isolation: missing {what}{why}; native code "
        "(ctypes) can then do what those layers would stop"
    )


#: Pyomo's error when a program asks to load a solution the solver did not find (raised by
#: both ``appsi_highs`` and ``highs`` for infeasible and unbounded models).
_NO_FEASIBLE = re.compile(
    r"NoFeasibleSolutionError|A feasible solution was not found, so no solution can be loaded"
)


def _build_result(reply: dict[str, Any], job: dict[str, Any]) -> SandboxResult:
    rc = reply["returncode"]
    sig = reply.get("signal")
    stderr = reply.get("stderr", "")
    limit = job["output_limit"]
    if reply.get("timed_out"):
        reason, msg = ExitReason.TIMEOUT, f"stopped after the {job['timeout']:g} s time limit"
    elif (
        sig == "SIGXFSZ"
        or max(reply["stdout_bytes"], reply["stderr_bytes"]) >= limit
        # As PID 1 of its namespace a program ignores SIGXFSZ; the write fails with EFBIG.
        or (rc != 0 and "[Errno 27] File too large" in stderr[-3000:])
    ):
        reason, msg = ExitReason.OUTPUT_LIMIT, f"output or a file exceeded {limit} bytes"
    elif sig == "SIGXCPU" or (sig == "SIGKILL" and (reply.get("cpu_s") or 0) >= job["cpu_time"]):
        reason, msg = ExitReason.CPU_LIMIT, f"used its {job['cpu_time']:g} s of CPU time"
    elif rc == EXIT_MEMORY or (rc != 0 and "MemoryError" in stderr[-2000:]):
        reason, msg = ExitReason.MEMORY_LIMIT, f"ran out of its {job['memory_mb']} MB memory limit"
    elif sig in ("SIGSEGV", "SIGBUS", "SIGABRT", "SIGILL", "SIGFPE", "SIGSYS"):
        reason, msg = ExitReason.CRASHED, f"crashed ({sig})"
    elif sig:
        reason, msg = ExitReason.KILLED, f"killed by {sig}"
    elif rc == EXIT_SETUP:
        reason, msg = ExitReason.SANDBOX_ERROR, "sandbox setup failed: " + stderr[-300:].strip()
    elif rc == 0:
        reason, msg = ExitReason.OK, "exited normally"
    else:
        last = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        reason, msg = ExitReason.ERROR, f"exit code {rc}" + (f": {last[-1][:300]}" if last else "")

    result: SolveResult | None = None
    report_error = None
    log_tail = (reply.get("stdout", "")[-2000:] + "\n" + stderr[-1500:]).strip()
    if reply.get("report", "").strip():
        data, report_error = parse_report_text(reply["report"])
        if data is not None:
            result = SolveResult(
                status=SolveStatus(data["status"]),
                objective=data["objective"],
                variables=data["variables"],
                solver="sandbox",
                solve_time_s=reply["elapsed_s"],
                log_tail=log_tail,
                message=data["message"],
            )
        else:
            result = SolveResult(
                status=SolveStatus.ERROR,
                solver="sandbox",
                solve_time_s=reply["elapsed_s"],
                log_tail=log_tail,
                message=f"the program's report was rejected: {report_error}",
            )
    elif reason == ExitReason.ERROR and _NO_FEASIBLE.search(stderr[-3000:]):
        # Pyomo raises instead of returning when asked to load a solution that does not
        # exist; what the program met is an infeasible (or unbounded) model, not a bug.
        result = SolveResult(
            status=SolveStatus.INFEASIBLE_OR_UNBOUNDED,
            solver="sandbox",
            solve_time_s=reply["elapsed_s"],
            log_tail=log_tail,
            message="the solver found no feasible solution (Pyomo raised when loading it): "
            "the model is infeasible or unbounded",
        )
    elif reason == ExitReason.OK:
        obj, report_error = parse_objective_text(reply.get("stdout", ""))
        if report_error is not None:
            result = SolveResult(
                status=SolveStatus.ERROR,
                solver="sandbox",
                solve_time_s=reply["elapsed_s"],
                log_tail=log_tail,
                message=f"the program's report was rejected: {report_error}",
            )
        elif obj is not None:
            result = SolveResult(
                status=SolveStatus.OPTIMAL,
                objective=obj,
                solver="sandbox",
                solve_time_s=reply["elapsed_s"],
                log_tail=log_tail,
                message="objective read from a printed 'OBJECTIVE: <number>' line "
                "(report() was not called; status assumed optimal)",
            )
    return SandboxResult(
        exit_reason=reason,
        returncode=rc,
        signal=sig,
        elapsed_s=reply["elapsed_s"],
        cpu_s=reply.get("cpu_s"),
        stdout=reply.get("stdout", ""),
        stderr=stderr,
        stdout_bytes=reply["stdout_bytes"],
        stderr_bytes=reply["stderr_bytes"],
        result=result,
        report_error=report_error,
        message=msg,
        isolation=reply.get("isolation", ""),
    )


def probe_isolation(timeout: float = 60.0, settings: Any = None) -> dict[str, Any]:
    """The isolation a sandbox worker gets on this machine, without warming one up.

    Starts a worker that sets up its namespaces and filesystem view exactly as a pool's
    would (``settings`` as for :class:`SandboxPool`), reports, and exits. Returns
    ``{"isolation", "level", "missing", "notes"}``.
    """
    hide = _hidden_paths(settings if settings is not None else SandboxSettings())
    w = _WorkerProc(hide=tuple(hide), probe=True)
    try:
        w.wait_ready(timeout)
        return {"isolation": w.isolation, "level": w.level, "missing": w.missing, "notes": w.notes}
    finally:
        w.kill()


def describe_isolation(info: dict[str, Any]) -> str:
    """One line for people: ``sandbox isolation: full (fork+rlimits+...)``."""
    line = f"sandbox isolation: {info['level']} ({info['isolation']})"
    if info.get("missing"):
        line += "; missing " + ", ".join(info["missing"])
        if info.get("notes"):
            line += f" ({'; '.join(info['notes'])})"
    return line


_default_pool: SandboxPool | None = None
_default_lock = threading.Lock()


def default_pool(settings: Any = None) -> SandboxPool:
    """The process-wide pool, started on first use and closed at interpreter exit.

    ``settings`` (as for :class:`SandboxPool`, or a function returning them, called only
    when the pool starts) apply when this call starts the pool; a running pool keeps the
    settings it started with. :func:`run_sandboxed` without a pool uses ``default_pool()``.
    """
    global _default_pool
    with _default_lock:
        if _default_pool is None or _default_pool.closed:
            _default_pool = SandboxPool(settings=settings() if callable(settings) else settings)
            atexit.register(_default_pool.close)
        return _default_pool


def run_sandboxed(
    code: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    cpu_time: float | None = None,
    memory_mb: int = DEFAULT_MEMORY_MB,
    output_limit: int = DEFAULT_OUTPUT_LIMIT,
    max_open_files: int = 64,
    files: dict[str, str] | None = None,
    pool: SandboxPool | None = None,
    settings: Any = None,
) -> SandboxResult:
    """Run untrusted Python ``code`` in a sandboxed process and return what happened.

    ``timeout`` is wall-clock seconds; ``cpu_time`` defaults to ``timeout``; ``memory_mb`` is
    the address space the program may add to the pre-warmed interpreter; ``output_limit``
    caps stdout, stderr and every file it writes, in bytes. ``files`` are extra text files
    (name -> content) placed in its working directory. The program's result comes from
    ``report(...)`` (a built-in in the sandbox) or an ``OBJECTIVE: <number>`` line; see
    docs/solvers.md. Uses ``pool``, else the process-wide :func:`default_pool`, which
    ``settings`` start if it is not running yet (settings, or a function returning them,
    such as :func:`optiforge.config.load_settings`: called then, in the worker thread).
    """
    return (pool or default_pool(settings)).run(
        code,
        timeout=timeout,
        cpu_time=cpu_time,
        memory_mb=memory_mb,
        output_limit=output_limit,
        max_open_files=max_open_files,
        files=files,
    )


async def arun_sandboxed(code: str, **kwargs: Any) -> SandboxResult:
    """:func:`run_sandboxed` without blocking the event loop."""
    return await asyncio.to_thread(run_sandboxed, code, **kwargs)
