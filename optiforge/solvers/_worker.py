"""Sandbox worker: a pre-warmed interpreter that runs each program in a fresh forked child.

Started by :class:`optiforge.solvers.sandbox.SandboxPool` as ``python -m
optiforge.solvers._worker``. It talks to the pool over its stdin/stdout with length-prefixed
JSON messages, and never runs untrusted code itself. Confinement (see
:mod:`optiforge.solvers.isolation` for the layers, docs/solvers.md for the table):

Once per worker, before the heavy imports: new network, mount and PID namespaces (as
root directly; otherwise inside an unprivileged user namespace where the worker is root).
The process the pool started stays outside as a stub that only waits; the worker proper
is PID 1 of its namespace, so everything it ever starts dies with it. After warming up it
builds its filesystem view: ``/tmp`` a private tmpfs for the job directories; the user's
home, the optiforge home, the caller's working directory and ``/run`` covered by empty
tmpfs mounts with only the interpreter's files bound back; then every mount read-only
except ``/tmp``.

Per program, forked ahead while the worker is idle (off the program's critical path): a
process that is PID 1 of a PID namespace of its own, with its own mount namespace
(``/tmp`` read-only but for the program's directory, a ``/proc`` showing only its
processes) and IPC namespace. It waits for its job on a pipe, then sets rlimits (CPU,
address space, file size, open files, processes), drops every capability (as root:
switches to a uid of its own), sets ``no_new_privs``, installs an audit hook that turns
forbidden Python calls into clear errors, and runs the program. When it exits the kernel
kills whatever is left in its namespace; the worker then kills anything else still in its
own namespace and removes the job's files. Without namespaces the same runs with fork,
rlimits and the audit hook only, and leftovers are found by walking the process tree (the
worker is a child subreaper).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
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

from optiforge.solvers import isolation as iso

EXIT_MEMORY = 121
EXIT_SETUP = 122
REPORT_FD = 3
UID_BASE = 200_000  # job uid = UID_BASE + worker pid (as the pool sees it): unique per worker
MAX_PROCESSES = 16  # tasks (threads included) a program may add

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


def splice_exact(src: int, dst: int, n: int, offset: int | None = None) -> int:
    """Move ``n`` bytes from ``src`` to ``dst`` inside the kernel (one end a pipe); returns
    how many moved before EOF. The worker relays programs and their output this way, so
    none of it ever sits in its memory, which the next program inherits by fork."""
    moved = 0
    while moved < n:
        k = os.splice(src, dst, n - moved, None if offset is None else offset + moved)
        if k == 0:
            break
        moved += k
    return moved


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


def _tail(fd: int, limit: int) -> tuple[int, int, int]:
    """(offset, length, total size) of the last ``limit`` bytes of the file ``fd``."""
    size = os.fstat(fd).st_size
    offset = max(0, size - limit)
    return offset, size - offset, size


def _needed_paths() -> list[str]:
    """Paths the interpreter needs to import what programs may import."""
    needed: set[str] = {sys.prefix, sys.base_prefix, os.path.dirname(sys.executable)}
    needed.update(p for p in sys.path if p and os.path.isabs(p))
    for mod in list(sys.modules.values()):
        f = getattr(mod, "__file__", None)
        if isinstance(f, str) and os.path.isabs(f):
            needed.add(os.path.dirname(f))
    return sorted(p for p in needed if os.path.exists(p))


def _enter_worker_namespaces() -> tuple[list[str], list[str]]:
    """Unshare network, mount and PID namespaces for this process (the stub). Returns
    (layers obtained, notes on what failed); the caller forks the worker proper."""
    notes: list[str] = []
    base = iso.CLONE_NEWNET | iso.CLONE_NEWNS
    # Root unshares directly; without root, or as a root without CAP_SYS_ADMIN (some
    # containers), through a user namespace.
    ways = (["root"] if iso.has_capabilities() else []) + ["userns"]
    for flags, layers in ((base | iso.CLONE_NEWPID, ["pidns"]), (base, [])):
        for way in ways:
            try:
                if way == "root":
                    iso.unshare(flags, "unshare(CLONE_NEWNET|CLONE_NEWNS)")
                    return ["netns", "mountns", *layers], notes
                iso.enter_user_namespace(flags)
                return ["userns", "netns", "mountns", *layers], notes
            except OSError as e:
                notes.append(str(e))
    return [], notes


def _build_view(disk_mb: int, hide: list[str], drop_uid: bool) -> list[str]:
    """The worker's filesystem view (in its mount namespace). Returns notes on failures."""
    notes: list[str] = []
    iso.mount("none", "/", None, iso.MS_REC | iso.MS_PRIVATE, None)
    needed = _needed_paths()
    covers = [*hide, "/tmp", "/var/tmp", "/dev/shm", "/run", "/dev/mqueue"]
    if drop_uid:  # a uid of its own cannot traverse e.g. /root: show only what it needs
        covers += iso.blocked_dirs(needed)
    for path, keep in iso.cover_plan(covers, needed):
        if not os.path.isdir(path):  # hidden by an outer cover already
            continue
        big = path == "/tmp"
        iso.cover(path, keep, size_mb=disk_mb if big else 1, mode="0711" if big else "0755")
    if not os.path.ismount("/tmp"):
        raise OSError("no private /tmp (a needed path is /tmp itself)")
    try:
        iso.make_readonly("/", recursive=True)
        iso.make_writable("/tmp")
    except OSError as e:
        notes.append(f"read-only view: {e}")
    tempfile.tempdir = "/tmp"
    return notes


def _probe_pidns(own_ns: int) -> tuple[bool, bool]:
    """Can this worker give a program a PID namespace, and mount a /proc for it there?"""
    try:
        iso.unshare(iso.CLONE_NEWPID)
    except OSError:
        return False, False
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            with contextlib.suppress(BaseException):
                iso.unshare(iso.CLONE_NEWNS)
                iso.mount(
                    "proc", "/proc", "proc", iso.MS_NOSUID | iso.MS_NODEV | iso.MS_NOEXEC, None
                )
                code = 0
            os._exit(code)
    finally:
        iso.setns(own_ns, iso.CLONE_NEWPID)
    _, status = os.waitpid(pid, 0)
    return True, os.waitstatus_to_exitcode(status) == 0


@dataclass
class _Spare:
    """A pre-forked program process waiting for its job."""

    pid: int  # the program's process (PID 1 of its own namespace when there is one)
    job_fd: int  # write end of the job pipe (the program's process reads it)
    jobdir: str
    out_fds: tuple[int, int, int]  # stdout, stderr, report: memfds the worker reads back


class Worker:
    """The worker proper: builds its view once, then forks a confined process per program.

    ``layers`` are the namespaces its stub obtained (see ``_enter_worker_namespaces``);
    the rest (read-only view, PID namespace per program, process limit) are added here as
    they succeed, and ``notes`` say why any is missing.
    """

    def __init__(
        self,
        ctrl_in: int,
        ctrl_out: int,
        *,
        layers: list[str],
        notes: list[str],
        host_pid: int,
        disk_mb: int = 256,
        hide: list[str] | None = None,
    ):
        self.spare: _Spare | None = None
        self.ctrl_in = ctrl_in
        self.ctrl_out = ctrl_out
        self.notes = list(dict.fromkeys(notes))
        self.layers = set(layers)
        self.pid1 = "pidns" in self.layers and os.getpid() == 1
        if "mountns" in self.layers:
            try:
                self.notes += _build_view(disk_mb, hide or [], "userns" not in self.layers)
                if not any(n.startswith("read-only view") for n in self.notes):
                    self.layers.add("readonly")
            except OSError as e:
                self.notes.append(f"filesystem view: {e}")
                self.layers -= {"mountns"}
        # Real root can give each program a uid of its own; in a user namespace only the
        # caller's uid is mapped, so there the mounts and dropped capabilities must do.
        self.drop_uid = "mountns" in self.layers and "userns" not in self.layers
        self.job_uid = UID_BASE + host_pid if self.drop_uid else None
        self.own_pidns: int | None = None
        self.prog_pidns = self.prog_procfs = False
        if self.pid1:
            self.own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            self.prog_pidns, self.prog_procfs = _probe_pidns(self.own_pidns)
        self.layers -= {"pidns"}
        if self.prog_pidns:
            self.layers.add("pidns")
            if self.prog_procfs and "mountns" in self.layers:
                self.layers.add("procfs")
        elif "mountns" in self.layers or "netns" in self.layers:
            self.notes.append("no PID namespace per program")
        if "mountns" in self.layers:
            self.layers.add("ipcns")
        # RLIMIT_NPROC counts per uid (per user namespace): it bounds a program only when
        # the program's uid is its own, or the user namespace is this worker's alone. The
        # kernel never applies it to uid 0 outside any user namespace (a root without
        # CAP_SYS_ADMIN, in some containers, gets here through a user namespace).
        if self.drop_uid or ("userns" in self.layers and os.environ.get("_OUTER_UID") != "0"):
            self.layers.add("nproc")
        elif "userns" in self.layers:
            self.notes.append("RLIMIT_NPROC does not bind uid 0 (root without CAP_SYS_ADMIN)")
        self.layers.add("nocaps")
        self.baseline_vm = _vm_size()
        self.tasks = 1
        self.jobs = 0

    @property
    def isolation(self) -> str:
        order = [*iso.BASE_LAYERS, "userns", "netns", "mountns", "readonly", "pidns", "procfs"]
        order += ["ipcns", "nproc", "nocaps", "uid"]
        have = set(self.layers) | set(iso.BASE_LAYERS) | ({"uid"} if self.drop_uid else set())
        return "+".join(x for x in order if x in have)

    def _prefork(self) -> _Spare:
        """Fork the init + program pair for the *next* job now, while nothing waits on us.

        Nothing program-specific happens before the job arrives: the init enters its own
        mount and IPC namespaces and forks the program process, which blocks reading the
        job from a pipe. Forking ahead takes forks, namespace set-up and the new
        processes' first scheduling off each program's critical path.
        """
        jobdir = tempfile.mkdtemp(prefix="optiforge-sbx-")
        os.chmod(jobdir, 0o711)
        # Output goes to memory files, not to the jobs' tmpfs: a program that fills its
        # disk must still be able to say why it failed. RLIMIT_FSIZE caps them too.
        out_fd, err_fd, rep_fd = (
            os.memfd_create(k, os.MFD_CLOEXEC) for k in ("stdout", "stderr", "report")
        )
        fcntl.fcntl(rep_fd, fcntl.F_SETFL, fcntl.fcntl(rep_fd, fcntl.F_GETFL) | os.O_APPEND)
        workdir = os.path.join(jobdir, "work")
        os.mkdir(workdir, 0o700)
        if self.drop_uid:
            os.chown(workdir, self.job_uid, self.job_uid)
        r, w = os.pipe()
        self.tasks = _task_count()
        if self.prog_pidns:
            iso.unshare(iso.CLONE_NEWPID)
        try:
            pid = os.fork()
        except BaseException:
            pid = -1
            raise
        finally:
            # Back to this worker's namespace for its later children (the parent only:
            # the child is PID 1 of the new one and cannot enter its parent's).
            if self.prog_pidns and self.own_pidns is not None and pid != 0:
                iso.setns(self.own_pidns, iso.CLONE_NEWPID)
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                for fd in (w, self.ctrl_in, self.ctrl_out):
                    with contextlib.suppress(OSError):
                        os.close(fd)
                _prepare(self, workdir)
                job = recv(r)
            except BaseException as e:
                with contextlib.suppress(BaseException):  # the result's stderr says why
                    os.write(err_fd, f"sandbox setup failed: {type(e).__name__}: {e}\n".encode())
                os._exit(EXIT_SETUP)
            if job is None:  # the worker discarded this spare
                os._exit(0)
            _child(self, job, workdir, out_fd, err_fd, rep_fd)
        os.close(r)
        return _Spare(pid, w, jobdir, (out_fd, err_fd, rep_fd))

    def discard_spare(self) -> None:
        """Stop the pre-forked pair and remove its directory (at exit)."""
        spare, self.spare = self.spare, None
        if spare is not None:
            for fd in (spare.job_fd, *spare.out_fds):
                with contextlib.suppress(OSError):
                    os.close(fd)
            with contextlib.suppress(ProcessLookupError):
                os.kill(spare.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(spare.pid, 0)
            self.cleanup()
            shutil.rmtree(spare.jobdir, ignore_errors=True)

    def cleanup(self) -> None:
        """Kill whatever a program left behind and reap it."""
        if self.pid1:
            # PID 1 of its own namespace: kill(-1) reaches every other process in it, which
            # are all this worker's descendants (the next spare is forked only after this).
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, signal.SIGKILL)
            while True:
                try:
                    os.waitpid(-1, 0)
                except ChildProcessError:
                    return
        _kill_leftovers(self.job_uid)

    def run_job(self, job: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[int, int, int]]]:
        """Run one program in the spare pair (forked now if there is none).

        ``job`` is the header; the program itself (``job["payload"]`` bytes) is still in the
        control pipe and goes to the program process by splice. Returns the reply header
        and the (fd, offset, length) ranges of the output to send after it.
        """
        self.jobs += 1
        try:
            spare, self.spare = self.spare or self._prefork(), None
        except BaseException:
            self._drain(int(job["payload"]))
            raise
        try:
            return self._run(job, spare)
        except BaseException:
            for fd in spare.out_fds:
                os.close(fd)
            raise
        finally:
            self.cleanup()
            shutil.rmtree(spare.jobdir, ignore_errors=True)

    def _drain(self, n: int) -> None:
        """Discard ``n`` payload bytes from the control pipe (keeps the channel in step)."""
        with open(os.devnull, "wb") as null:
            splice_exact(self.ctrl_in, null.fileno(), n)

    def _run(
        self, job: dict[str, Any], spare: _Spare
    ) -> tuple[dict[str, Any], list[tuple[int, int, int]]]:
        pid = spare.pid
        timeout = float(job["timeout"])
        n = int(job["payload"])
        t0 = time.monotonic()
        moved = 0
        try:
            os.write(spare.job_fd, struct.pack(">I", n))
            moved = splice_exact(self.ctrl_in, spare.job_fd, n)
        except OSError:
            pass  # the child died early; its status tells what happened
        finally:
            os.close(spare.job_fd)
            if moved < n:
                self._drain(n - moved)
        timed_out, parent_gone = self._wait(pid, t0 + timeout)
        if timed_out or parent_gone:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _, status, usage = os.wait4(pid, 0)
        elapsed = time.monotonic() - t0
        if parent_gone:
            self.cleanup()
            os._exit(0)
        cpu = usage.ru_utime + usage.ru_stime
        tail = int(job.get("tail_chars", 8000))
        out_fd, err_fd, rep_fd = spare.out_fds
        out = _tail(out_fd, tail)
        err = _tail(err_fd, tail)
        rep = _tail(rep_fd, 1 << 20)
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        rc = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -(sig or 0)
        header = {
            "type": "result",
            "returncode": rc,
            "signal": signal.Signals(sig).name if sig else None,
            "timed_out": timed_out,
            "elapsed_s": elapsed,
            "cpu_s": cpu,
            "stdout_bytes": out[2],
            "stderr_bytes": err[2],
            "report_bytes": rep[2],
            "blobs": [out[1], err[1], rep[1]],  # stdout, stderr, report tails follow
            "isolation": self.isolation,
        }
        return header, [
            (fd, off, length)
            for fd, (off, length, _) in zip(spare.out_fds, (out, err, rep), strict=True)
        ]

    def _wait(self, pid: int, deadline: float) -> tuple[bool, bool]:
        """Wait for the init to exit; returns (timed out, parent gone)."""
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

    def send_ready(self) -> None:
        """Tell the pool this worker is ready, and what isolation its programs get."""
        layers = self.isolation.split("+")
        send(
            self.ctrl_out,
            {
                "type": "ready",
                "pid": os.getpid(),
                "isolation": self.isolation,
                "level": iso.level(layers),
                "missing": iso.missing(layers),
                "notes": self.notes,
            },
        )

    def serve(self) -> None:
        """Answer the pool's requests until it says exit or goes away."""
        self.send_ready()
        try:
            while True:
                if self.spare is None:
                    self.spare = self._prefork()
                msg = recv(self.ctrl_in)
                if msg is None or msg.get("type") == "exit":
                    return
                if msg.get("type") == "run":
                    blobs: list[tuple[int, int, int]] = []
                    try:
                        reply, blobs = self.run_job(msg)
                    except Exception as e:  # report, keep serving
                        reply = {"type": "error", "message": f"{type(e).__name__}: {e}"}
                    try:
                        send(self.ctrl_out, reply)
                        for fd, off, length in blobs:
                            if splice_exact(fd, self.ctrl_out, length, off) != length:
                                raise OSError("output shrank while being sent")
                    finally:
                        for fd, _, _ in blobs:
                            os.close(fd)
                elif msg.get("type") == "ping":
                    send(self.ctrl_out, {"type": "pong", "jobs": self.jobs})
        finally:
            self.discard_spare()


# ---------------------------------------------------------------------------------------------
# Child side (never returns)


def _prepare(worker: Worker, workdir: str) -> None:  # pragma: no cover - runs in the child
    """Everything about the program's process that does not depend on its job.

    With a PID namespace this process is its PID 1: when it exits the kernel kills every
    process left in the namespace. (As PID 1 it ignores signals it sends itself that have
    no handler, and the CPU limit's SIGXCPU; RLIMIT_CPU's hard limit still kills it.)
    """
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if not worker.prog_pidns and os.getppid() == 1:  # the worker died before prctl
        os._exit(0)
    os.setsid()
    if "mountns" in worker.layers:
        iso.unshare(iso.CLONE_NEWNS | iso.CLONE_NEWIPC, "unshare(CLONE_NEWNS|CLONE_NEWIPC)")
        # Its own directory is the one writable place: bind it onto itself, then make the
        # jobs' tmpfs read-only in this namespace (the bind stays writable).
        iso.mount(workdir, workdir, None, iso.MS_BIND, None)
        if "readonly" in worker.layers:
            iso.make_readonly("/tmp", recursive=False)
        if worker.prog_procfs:
            iso.mount("proc", "/proc", "proc", iso.MS_NOSUID | iso.MS_NODEV | iso.MS_NOEXEC, None)


def _setrlimit(which: int, value: int) -> None:
    """Soft and hard limit both ``value`` (or the existing hard limit if lower): a program
    cannot raise it again, through Python or libc."""
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def _task_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _child(
    worker: Worker,
    job: dict[str, Any],
    workdir: str,
    out_fd: int,
    err_fd: int,
    rep_fd: int,
) -> None:  # pragma: no cover - runs in the forked child
    try:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGXFSZ, signal.SIGPIPE):
            signal.signal(s, signal.SIG_DFL)
        uid = worker.job_uid
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
        # Limits, soft = hard. CPU: SIGXCPU at the limit; the worker reads SIGKILL after
        # the limit (the kernel's hard stop) as a CPU-limit stop too.
        cpu = max(1, int(job["cpu_time"] + 0.999))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        _setrlimit(resource.RLIMIT_AS, worker.baseline_vm + int(job["memory_mb"]) * 1024 * 1024)
        _setrlimit(resource.RLIMIT_FSIZE, int(job["output_limit"]))
        _setrlimit(resource.RLIMIT_NOFILE, int(job.get("max_open_files", 64)))
        _setrlimit(resource.RLIMIT_CORE, 0)
        if "nproc" in worker.layers:
            # Counts threads too: enough for solver threads, too few for a fork bomb. In a
            # user namespace the count is per namespace: this worker's tasks count too
            # (the stub, the worker's threads and this process).
            base = 0 if uid is not None else 2 + worker.tasks
            _setrlimit(resource.RLIMIT_NPROC, base + int(job.get("max_processes", MAX_PROCESSES)))
        caps = iso.has_capabilities()
        if caps:
            iso.drop_bounding_set()
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)  # clears every capability
        elif caps:
            iso.drop_capabilities()
        # Nothing it executes (past the audit hook, via ctypes) can gain privileges:
        # setuid binaries run as the caller.
        _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
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
    """Entry point: detach the control channel from stdio, confine, warm up, serve."""
    ctrl_in = os.dup(0)
    ctrl_out = os.dup(1)
    for fd in (ctrl_in, ctrl_out):
        os.set_inheritable(fd, False)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    host_pid = os.getpid()
    os.environ["_OUTER_UID"] = str(os.getuid())  # before a user namespace maps it to 0
    layers: list[str] = []
    notes: list[str] = []
    if os.environ.get("OPTIFORGE_SANDBOX_ISOLATION", "auto") != "basic":
        layers, notes = _enter_worker_namespaces()
    if "pidns" in layers:
        # This process stays outside the new PID namespace as a stub: its first child is
        # the namespace's PID 1 and does the work. The stub only waits, and dies with it;
        # the pool kills the stub's process group, which includes the worker.
        pid = os.fork()
        if pid:
            for fd in (ctrl_in, ctrl_out):
                os.close(fd)
            _, status = os.waitpid(pid, 0)
            os._exit(max(0, os.waitstatus_to_exitcode(status)))
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    probe = "--probe" in sys.argv[1:]  # set up as a worker, report the layers, exit
    if not probe:
        try:
            _preload()
        except Exception as e:
            send(ctrl_out, {"type": "error", "message": f"worker warm-up failed: {e}"})
            return
    hide = [p for p in os.environ.get("OPTIFORGE_SANDBOX_HIDE", "").split(os.pathsep) if p]
    worker = Worker(
        ctrl_in,
        ctrl_out,
        layers=layers,
        notes=notes,
        host_pid=host_pid,
        disk_mb=int(os.environ.get("OPTIFORGE_SANDBOX_DISK_MB", "256")),
        hide=hide,
    )
    if probe:
        worker.send_ready()
    else:
        worker.serve()


if __name__ == "__main__":
    main()
