"""Sandbox worker: a pre-warmed interpreter that runs each program in a fresh forked child.

Started by :class:`optiforge.solvers.sandbox.SandboxPool` as ``python -m
optiforge.solvers._worker``. It talks to the pool over its stdin/stdout with length-prefixed
JSON messages, and never runs untrusted code itself: every program runs in a child forked
for it, which is confined before the program starts:

- its own session and process group; killed if the worker dies (PR_SET_PDEATHSIG);
- as root, inherited from the worker, which enters them once at start: a network
  namespace with no interface up, and a mount namespace where /tmp is a private tmpfs
  holding the job directories, the other world-writable places are root-owned tmpfs
  mounts, and directories an unprivileged uid cannot traverse show only the
  interpreter's files; per program a new IPC namespace and an unprivileged uid of its own
  (``UID_BASE + worker pid``) that owns only its working directory;
- rlimits: CPU time, address space, open files, file size (caps stdout/stderr too: they
  are files), no core dumps, few processes;
- an audit hook that refuses sockets, child processes, signals to other processes and
  writes outside the working directory with a clear Python error (the first, friendly
  layer; the kernel limits above are the real boundary).

Afterwards the worker kills whatever the program left behind (the worker is a child
subreaper, so every descendant stays in its process tree) and removes the job's files.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import resource
import select
import shutil
import signal
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

EXIT_MEMORY = 121
EXIT_SETUP = 122
REPORT_FD = 3
UID_BASE = 200_000  # job uid = UID_BASE + worker pid: unique among live workers

_CLONE_NEWNS = 0x00020000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWNET = 0x40000000
_MS_REC = 1 << 14
_MS_PRIVATE = 1 << 18
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_BIND = 4096
_MS_MOVE = 8192
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NO_NEW_PRIVS = 38

_libc = ctypes.CDLL(None, use_errno=True)


# ---------------------------------------------------------------------------------------------
# Control channel


def _read_exact(fd: int, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv(fd: int) -> dict[str, Any] | None:
    """Read one length-prefixed JSON message (None on EOF)."""
    head = _read_exact(fd, 4)
    if head is None:
        return None
    (n,) = struct.unpack(">I", head)
    body = _read_exact(fd, n)
    return None if body is None else json.loads(body)


def send(fd: int, msg: dict[str, Any]) -> None:
    """Write one length-prefixed JSON message."""
    data = json.dumps(msg).encode()
    data = struct.pack(">I", len(data)) + data
    while data:
        k = os.write(fd, data)
        data = data[k:]


# ---------------------------------------------------------------------------------------------
# Worker side


def _preload() -> None:
    """Import and exercise the modelling stack once, so each forked child starts warm."""
    import math  # noqa: F401

    import highspy
    import numpy  # noqa: F401
    import pyomo.environ as pyo
    import pyscipopt

    from optiforge.solvers import protocol  # noqa: F401

    # HiGHS keeps one global thread pool per process. Creating it here with a single
    # thread (no worker threads) means forked children inherit a pool with no threads to
    # deadlock on, and skip creating one per program. Must run before any other solve.
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.addVar(0.0, 10.0)
    h.changeColIntegrality(0, highspy.HighsVarType.kInteger)
    h.changeColCost(0, -1.0)
    h.run()

    m = pyo.ConcreteModel()
    m.I = pyo.Set(initialize=[1, 2])
    m.x = pyo.Var(m.I, within=pyo.NonNegativeIntegers, bounds=(0, 10))
    m.y = pyo.Var(within=pyo.NonNegativeReals)
    m.c = pyo.Constraint(expr=sum(m.x[i] for i in m.I) + 2 * m.y <= 10.5)
    m.d = pyo.Constraint(m.I, rule=lambda m, i: m.x[i] <= 4 + i)
    m.cl = pyo.ConstraintList()
    m.cl.add(m.x[1] >= 0)
    m.o = pyo.Objective(expr=m.x[1] + 2 * m.x[2] + m.y, sense=pyo.maximize)
    for name in ("appsi_highs", "scip_direct"):
        with contextlib.suppress(Exception):
            opt = pyo.SolverFactory(name)
            res = opt.solve(m, load_solutions=False)
            if res.solver.termination_condition == pyo.TerminationCondition.optimal:
                m.solutions.load_from(res)
                pyo.value(m.o)
    s = pyscipopt.Model()
    s.hideOutput()
    x = s.addVar("x", ub=3)
    s.addCons(x * x <= 4)
    s.setObjective(x, "maximize")
    s.optimize()
    # Keep the warm heap out of the collector's way: fewer copy-on-write page faults.
    gc.collect()
    gc.freeze()


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0  # pragma: no cover


def _probe_namespaces() -> bool:
    """Can a child make private network and mount namespaces (root, unconfined)?"""
    if os.geteuid() != 0:
        return False
    pid = os.fork()
    if pid == 0:
        try:
            ok = _libc.unshare(_CLONE_NEWNET | _CLONE_NEWNS) == 0
            ok = ok and _libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) == 0
            ok = ok and _libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, b"size=1m") == 0
            os._exit(0 if ok else 1)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _exposure_plan() -> list[tuple[str, list[str]]]:
    """Directories an unprivileged uid cannot traverse that hide what Python needs.

    Returns ``[(blocked_dir, [needed children])]``, e.g. ``[("/root", ["/root/.pyenv"])]``.
    In the child's mount namespace each blocked dir is covered by an empty tmpfs and only
    the needed children are bound back, so the program can import the interpreter's modules
    but sees nothing else there.
    """
    import stat

    needed: set[str] = {sys.prefix, sys.base_prefix, os.path.dirname(sys.executable)}
    needed.update(p for p in sys.path if p and os.path.exists(p))
    for mod in list(sys.modules.values()):
        f = getattr(mod, "__file__", None)
        if isinstance(f, str) and os.path.isabs(f):
            needed.add(os.path.dirname(f))
    plan: dict[str, set[str]] = {}
    for path in needed:
        path = os.path.realpath(path)
        parts = path.strip("/").split("/")
        cur = ""
        for k, part in enumerate(parts[:-1]):
            cur = f"{cur}/{part}"
            try:
                mode = os.stat(cur).st_mode
            except OSError:
                break
            if not mode & stat.S_IXOTH:
                plan.setdefault(cur, set()).add(f"{cur}/{parts[k + 1]}")
                break
    # Only the outermost blocked dirs; nested ones are inside a bound-back child already.
    tops = sorted(plan, key=len)
    keep = [t for t in tops if not any(t != o and t.startswith(o + "/") for o in tops)]
    return [(d, sorted(plan[d])) for d in keep]


def _expose(plan: list[tuple[str, list[str]]], stage: str) -> None:
    """Cover each blocked dir with a tmpfs and bind its needed children back (child only)."""
    os.mkdir(stage, 0o700)
    n = 0
    for blocked, children in plan:
        staged = []
        for child in children:
            tmp = os.path.join(stage, str(n))
            n += 1
            os.mkdir(tmp)
            if _libc.mount(child.encode(), tmp.encode(), None, _MS_BIND | _MS_REC, None) != 0:
                raise OSError(ctypes.get_errno(), f"bind {child} failed")
            staged.append((tmp, child))
        if (
            _libc.mount(
                b"tmpfs", blocked.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, b"size=1m,mode=0755"
            )
            != 0
        ):
            raise OSError(ctypes.get_errno(), f"tmpfs over {blocked} failed")
        for tmp, child in staged:
            os.makedirs(child, exist_ok=True)
            if _libc.mount(tmp.encode(), child.encode(), None, _MS_MOVE, None) != 0:
                raise OSError(ctypes.get_errno(), f"move mount to {child} failed")
            os.rmdir(tmp)
    os.rmdir(stage)


def _proc_table() -> list[tuple[int, int, int]]:
    """(pid, ppid, uid) of every process."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                ppid = uid = -1
                for line in f:
                    if line.startswith("PPid:"):
                        ppid = int(line.split()[1])
                    elif line.startswith("Uid:"):
                        uid = int(line.split()[1])
                        break
            out.append((int(name), ppid, uid))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _children(pid: int) -> list[int] | None:
    """Direct children of ``pid`` from /proc (None if the kernel does not list them)."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(c) for c in f.read().split())
        except FileNotFoundError:
            if pid == os.getpid():
                return None
        except (OSError, ValueError):
            continue
    return out


def _descendants() -> list[int] | None:
    """Every live descendant of this worker (a subreaper, so orphans stay in the tree)."""
    todo = _children(os.getpid())
    if todo is None:
        return None
    seen: list[int] = []
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(_children(pid) or [])
    return seen


def _kill_leftovers(job_uid: int | None) -> int:
    """Kill every descendant and every process of the job uid; reap them.

    Orphans of the job are re-parented to this worker (a child subreaper), so walking the
    process tree from here finds everything the program started. A full /proc scan by
    uid/ppid is the fallback when the kernel does not list children.
    """
    me = os.getpid()
    killed = 0
    for _ in range(200):
        _reap()
        strays = _descendants()
        if strays is None:
            strays = [
                pid
                for pid, ppid, uid in _proc_table()
                if pid != me and (ppid == me or (job_uid is not None and uid == job_uid))
            ]
        if not strays:
            return killed
        for pid in strays:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        time.sleep(0.001)
    return killed


def _tail(path: str, limit: int) -> tuple[str, int]:
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            f.seek(max(0, size - limit))
            data = f.read(limit)
    except OSError:
        return "", 0
    return data.decode("utf-8", "replace"), size


@dataclass
class _Spare:
    """A pre-forked child waiting for its program."""

    pid: int
    job_fd: int
    jobdir: str
    paths: dict[str, str]


class Worker:
    def __init__(self, ctrl_in: int, ctrl_out: int, disk_mb: int = 256):
        self.pid = os.getpid()
        self.spare: _Spare | None = None
        self.ctrl_in = ctrl_in
        self.ctrl_out = ctrl_out
        basic = os.environ.get("OPTIFORGE_SANDBOX_ISOLATION", "auto") == "basic"
        self.namespaces = not basic and _probe_namespaces()
        self.exposure: list[tuple[str, list[str]]] = []
        if self.namespaces:
            try:
                self._enter_namespaces(disk_mb)
            except OSError:
                self.namespaces = False
        # A separate uid needs the mount namespace (to expose the interpreter's files).
        self.drop_uid = self.namespaces and os.geteuid() == 0
        self.job_uid = UID_BASE + os.getpid() if self.drop_uid else None
        self.baseline_vm = _vm_size()
        self.jobs = 0

    def _enter_namespaces(self, disk_mb: int) -> None:
        """Move this worker into its own network and mount namespaces, once.

        Every child inherits them: no network at all, and a filesystem view where /tmp is
        a private tmpfs (jobs' directories live there), the other world-writable places are
        tiny root-owned tmpfs mounts, and directories an unprivileged uid cannot traverse
        show only the interpreter's files. Doing this once per worker, not per program,
        keeps mount work and namespace teardown off every program's path.
        """
        plan = _exposure_plan() if os.geteuid() == 0 else []
        if _libc.unshare(_CLONE_NEWNET | _CLONE_NEWNS) != 0:
            raise OSError(ctypes.get_errno(), "unshare failed")
        if _libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
            raise OSError(ctypes.get_errno(), "mount --make-rprivate / failed")
        if not _mount_tmpfs("/tmp", disk_mb, mode="0711"):
            raise OSError(ctypes.get_errno(), "tmpfs mount on /tmp failed")
        for p in ("/var/tmp", "/dev/shm", "/run/lock", "/dev/mqueue"):
            _mount_tmpfs(p, 1, mode="0755")
        if plan:
            _expose(plan, "/tmp/.expose")
        self.exposure = plan
        tempfile.tempdir = "/tmp"

    @property
    def isolation(self) -> str:
        parts = ["fork", "rlimits", "audit-hook"]
        if self.namespaces:
            parts += ["netns", "mountns"]
        if self.drop_uid:
            parts.append("uid")
        return "+".join(parts)

    def _prefork(self) -> _Spare:
        """Fork the child for the *next* program now, while nothing is waiting on us.

        The child prepares nothing program-specific: it blocks reading the job from a
        pipe, then confines itself and runs it. Forking ahead takes the fork (and the new
        process's first scheduling) off each program's critical path.
        """
        jobdir = tempfile.mkdtemp(prefix="optiforge-sbx-")
        os.chmod(jobdir, 0o711)
        paths = {k: os.path.join(jobdir, k) for k in ("stdout", "stderr", "report")}
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        out_fd = os.open(paths["stdout"], flags, 0o600)
        err_fd = os.open(paths["stderr"], flags, 0o600)
        rep_fd = os.open(paths["report"], flags | os.O_APPEND, 0o600)
        workdir = os.path.join(jobdir, "work")
        os.mkdir(workdir, 0o700)
        if self.drop_uid:
            os.chown(workdir, self.job_uid, self.job_uid)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                if os.getppid() != self.pid:  # the worker died before prctl took effect
                    os._exit(0)
                for fd in (w, self.ctrl_in, self.ctrl_out):
                    with contextlib.suppress(OSError):
                        os.close(fd)
                job = recv(r)
            except BaseException:
                os._exit(EXIT_SETUP)
            if job is None:  # the worker discarded this spare
                os._exit(0)
            _child(self, job, workdir, out_fd, err_fd, rep_fd)
        os.close(r)
        for fd in (out_fd, err_fd, rep_fd):
            os.close(fd)
        return _Spare(pid, w, jobdir, paths)

    def discard_spare(self) -> None:
        """Stop the pre-forked child and remove its directory (at exit)."""
        spare, self.spare = self.spare, None
        if spare is not None:
            with contextlib.suppress(OSError):
                os.close(spare.job_fd)
            with contextlib.suppress(ProcessLookupError):
                os.kill(spare.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(spare.pid, 0)
            shutil.rmtree(spare.jobdir, ignore_errors=True)

    def run_job(self, job: dict[str, Any]) -> dict[str, Any]:
        """Run one program in the spare child (forked now if there is none)."""
        self.jobs += 1
        spare, self.spare = self.spare or self._prefork(), None
        try:
            return self._run(job, spare)
        finally:
            _kill_leftovers(self.job_uid)
            shutil.rmtree(spare.jobdir, ignore_errors=True)

    def _run(self, job: dict[str, Any], spare: _Spare) -> dict[str, Any]:
        pid = spare.pid
        out_path, err_path, rep_path = (spare.paths[k] for k in ("stdout", "stderr", "report"))
        timeout = float(job["timeout"])
        t0 = time.monotonic()
        try:
            send(spare.job_fd, job)
        except OSError:
            pass  # the child died early; its status tells what happened
        finally:
            os.close(spare.job_fd)
        timed_out, parent_gone = self._wait(pid, t0 + timeout)
        if timed_out or parent_gone:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _, status, usage = os.wait4(pid, 0)
        elapsed = time.monotonic() - t0
        if parent_gone:
            _kill_leftovers(self.job_uid)
            os._exit(0)
        cpu = usage.ru_utime + usage.ru_stime
        tail = int(job.get("tail_chars", 8000))
        stdout, out_size = _tail(out_path, tail)
        stderr, err_size = _tail(err_path, tail)
        report, rep_size = _tail(rep_path, 1 << 20)
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        rc = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -(sig or 0)
        return {
            "type": "result",
            "returncode": rc,
            "signal": signal.Signals(sig).name if sig else None,
            "timed_out": timed_out,
            "elapsed_s": elapsed,
            "cpu_s": cpu,
            "stdout": stdout,
            "stderr": stderr,
            "stdout_bytes": out_size,
            "stderr_bytes": err_size,
            "report": report,
            "report_bytes": rep_size,
            "isolation": self.isolation,
        }

    def _wait(self, pid: int, deadline: float) -> tuple[bool, bool]:
        """Wait for the child to exit; returns (timed out, parent gone)."""
        poller = select.poll()
        poller.register(self.ctrl_in, select.POLLHUP | select.POLLERR)
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):  # Linux < 5.3: poll the child's state instead
            pidfd = None
        else:
            poller.register(pidfd, select.POLLIN)
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return True, False
                wait_ms = (
                    max(1, int(left * 1000)) if pidfd is not None else min(5, int(left * 1000) + 1)
                )
                events = poller.poll(wait_ms)
                if any(fd == self.ctrl_in for fd, _ in events):
                    return False, True
                if pidfd is not None:
                    if any(fd == pidfd for fd, _ in events):
                        return False, False
                elif os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    return False, False
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def serve(self) -> None:
        send(
            self.ctrl_out,
            {"type": "ready", "pid": os.getpid(), "isolation": self.isolation},
        )
        try:
            while True:
                if self.spare is None:
                    self.spare = self._prefork()
                msg = recv(self.ctrl_in)
                if msg is None or msg.get("type") == "exit":
                    return
                if msg.get("type") == "run":
                    try:
                        reply = self.run_job(msg)
                    except Exception as e:  # report, keep serving
                        reply = {"type": "error", "message": f"{type(e).__name__}: {e}"}
                    send(self.ctrl_out, reply)
                elif msg.get("type") == "ping":
                    send(self.ctrl_out, {"type": "pong", "jobs": self.jobs})
        finally:
            self.discard_spare()


# ---------------------------------------------------------------------------------------------
# Child side (never returns)


def _setrlimit(which: int, soft: int) -> None:
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(which, (soft, soft if hard == resource.RLIM_INFINITY else hard))


def _mount_tmpfs(path: str, size_mb: int, mode: str) -> bool:
    if not os.path.isdir(path):
        return False
    # nr_inodes bounds kernel memory a program could pin with millions of empty files.
    opts = f"size={size_mb}m,nr_inodes={max(1024, size_mb * 400)},mode={mode}".encode()
    flags = _MS_NOSUID | _MS_NODEV
    return _libc.mount(b"tmpfs", path.encode(), b"tmpfs", flags, opts) == 0


def _child(
    worker: Worker,
    job: dict[str, Any],
    workdir: str,
    out_fd: int,
    err_fd: int,
    rep_fd: int,
) -> None:  # pragma: no cover - runs in the forked child
    try:
        os.setsid()
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGXFSZ, signal.SIGPIPE):
            signal.signal(s, signal.SIG_DFL)
        uid = worker.job_uid
        if worker.namespaces and _libc.unshare(_CLONE_NEWIPC) != 0:
            # SysV IPC objects outlive processes: keep each program's private.
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWIPC) failed")
        os.chdir(workdir)
        program = os.path.join(workdir, "program.py")
        with open(program, "w", encoding="utf-8") as f:
            f.write(job["code"])
        for name, content in (job.get("files") or {}).items():
            target = os.path.join(workdir, os.path.basename(name))
            with open(target, "w", encoding="utf-8") as f:
                f.write(content)
        if uid is not None:
            for entry in os.listdir(workdir):
                os.chown(os.path.join(workdir, entry), uid, uid)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.dup2(rep_fd, REPORT_FD)
        os.closerange(REPORT_FD + 1, 65536)
        # Limits. CPU: SIGXCPU at the soft limit, SIGKILL one second later.
        cpu = max(1, int(job["cpu_time"] + 0.999))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        _setrlimit(resource.RLIMIT_AS, worker.baseline_vm + int(job["memory_mb"]) * 1024 * 1024)
        _setrlimit(resource.RLIMIT_FSIZE, int(job["output_limit"]))
        _setrlimit(resource.RLIMIT_NOFILE, int(job.get("max_open_files", 64)))
        _setrlimit(resource.RLIMIT_CORE, 0)
        # Nothing it executes (past the audit hook, via ctypes) can gain privileges:
        # setuid binaries run as the caller.
        _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        if uid is not None:
            # Counts threads too: enough for solver threads, too few for a fork bomb.
            _setrlimit(resource.RLIMIT_NPROC, int(job.get("max_processes", 16)))
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": workdir,
            "TMPDIR": workdir,
            "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": "1",
        }
        os.environ.clear()
        os.environ.update(env)
        tempfile.tempdir = workdir
        _run_program(program, workdir)
    except BaseException as e:
        with contextlib.suppress(BaseException):
            os.write(2, f"sandbox setup failed: {type(e).__name__}: {e}\n".encode())
        os._exit(EXIT_SETUP)


def _install_guard(workdir: str) -> None:  # pragma: no cover - runs in the child
    """Audit hook: clear Python errors for network, processes, signals and outside writes."""
    root = os.path.realpath(workdir)
    me = os.getpid()
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    realpath, join, fspath, getcwd = os.path.realpath, os.path.join, os.fspath, os.getcwd

    def inside(p: Any) -> bool:
        if isinstance(p, int):
            return True
        try:
            s = fspath(p)
            if isinstance(s, bytes):
                s = s.decode("utf-8", "surrogateescape")
            full = realpath(join(getcwd(), s))
        except Exception:
            return False
        return full == root or full.startswith(root + os.sep)

    def outside_msg(p: Any) -> PermissionError:
        return PermissionError(
            f"sandbox: writing or deleting {p!r} is not allowed; only files inside the working "
            "directory (use relative paths) can be changed"
        )

    net = {
        "socket.connect",
        "socket.bind",
        "socket.sendto",
        "socket.sendmsg",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyaddr",
    }
    procs = {
        "os.fork",
        "os.forkpty",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "subprocess.Popen",
        "pty.spawn",
        "os.startfile",
    }
    one_path = {
        "os.remove",
        "os.rmdir",
        "os.mkdir",
        "os.chmod",
        "os.chown",
        "os.truncate",
        "os.utime",
        "shutil.rmtree",
        "os.mkfifo",
        "os.mknod",
    }
    two_paths = {"os.rename", "os.link", "os.symlink", "shutil.move", "shutil.copyfile"}

    watched = frozenset(
        {"open", "os.kill", "os.killpg", "signal.pthread_kill", "resource.setrlimit"}
        | net
        | procs
        | one_path
        | two_paths
    )

    def hook(event: str, args: tuple) -> None:
        if event not in watched:
            return
        if event == "open":
            path, mode, flags = ((*args, None, None, None))[:3]
            wants_write = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & write_flags
            )
            if wants_write and not inside(path):
                raise outside_msg(path)
        elif event in one_path:
            if args and not inside(args[0]):
                raise outside_msg(args[0])
        elif event in two_paths:
            for p in args[:2]:
                if not inside(p):
                    raise outside_msg(p)
        elif event in net:
            raise PermissionError("sandbox: network access is blocked")
        elif event in procs:
            raise PermissionError("sandbox: starting processes is not allowed")
        elif event in ("os.kill", "os.killpg", "signal.pthread_kill"):
            target = args[0] if args else None
            if event == "os.kill" and target in (me, 0):
                return
            if event == "os.killpg" and target in (me, 0):
                return
            if event == "signal.pthread_kill":
                return
            raise PermissionError("sandbox: signalling other processes is not allowed")
        elif event == "resource.setrlimit":
            raise PermissionError("sandbox: changing resource limits is not allowed")

    sys.addaudithook(hook)


def _format_program_error(exc: BaseException) -> str:  # pragma: no cover - child only
    """The traceback without the sandbox's own frames (noise for a model repairing code)."""
    import traceback

    ours = {
        os.path.realpath(__file__).removesuffix("c"),
        os.path.realpath(os.path.join(os.path.dirname(__file__), "protocol.py")),
    }

    def strip(te: traceback.TracebackException) -> None:
        te.stack = traceback.StackSummary.from_list(
            [f for f in te.stack if os.path.realpath(f.filename) not in ours]
        )
        for nxt in (te.__cause__, te.__context__):
            if nxt is not None:
                strip(nxt)

    te = traceback.TracebackException.from_exception(exc)
    strip(te)
    return "".join(te.format())


def _run_program(program: str, workdir: str) -> None:  # pragma: no cover - child only
    import builtins
    import faulthandler
    import io
    import types

    from optiforge.solvers.protocol import build_report, solve_pyomo

    sys.stdout = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="replace", line_buffering=True
    )
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="replace", line_buffering=True
    )
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    faulthandler.enable(file=sys.stderr)

    def report(
        objective: Any = None,
        status: Any = None,
        variables: Any = None,
        *,
        model: Any = None,
        results: Any = None,
        message: str | None = None,
    ) -> None:
        """Report the result to optiforge (see docs/solvers.md, sandbox result protocol)."""
        payload = build_report(
            objective, status, variables, model=model, results=results, message=message
        )
        line = (json.dumps(payload) + "\n").encode()
        os.write(REPORT_FD, line)

    builtins.report = report  # type: ignore[attr-defined]
    builtins.solve_pyomo = solve_pyomo  # type: ignore[attr-defined]
    mod = types.ModuleType("__main__")
    mod.__file__ = program
    mod.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = mod
    sys.argv = [program]
    sys.path[0:0] = [workdir]
    with open(program, encoding="utf-8") as f:
        source = f.read()
    _install_guard(workdir)
    rc = 0
    try:
        code = compile(source, program, "exec")
        exec(code, mod.__dict__)
    except SystemExit as e:
        if e.code is None:
            rc = 0
        elif isinstance(e.code, int):
            rc = e.code & 0xFF
        else:
            print(e.code, file=sys.stderr)
            rc = 1
    except MemoryError:
        rc = EXIT_MEMORY
        with contextlib.suppress(BaseException):
            sys.stderr.write("MemoryError: the program ran out of its memory limit\n")
    except BaseException as e:
        rc = 1
        with contextlib.suppress(BaseException):
            sys.stderr.write(_format_program_error(e))
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    os._exit(rc)


def main() -> None:
    """Entry point: detach the control channel from stdio, warm up, serve."""
    ctrl_in = os.dup(0)
    ctrl_out = os.dup(1)
    for fd in (ctrl_in, ctrl_out):
        os.set_inheritable(fd, False)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        _preload()
    except Exception as e:
        send(ctrl_out, {"type": "error", "message": f"worker warm-up failed: {e}"})
        return
    Worker(ctrl_in, ctrl_out, int(os.environ.get("OPTIFORGE_SANDBOX_DISK_MB", "256"))).serve()


if __name__ == "__main__":
    main()
