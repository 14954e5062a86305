"""Hostile programs, tried as an attacker would: native code (ctypes) doing what the audit
hook stops in Python, descendants that outlive the program, resource exhaustion, limits
raised from inside, reads and writes outside its folder, the parent's secrets, network of
every family, tampering with optiforge's own state, and traces of the previous program.

Every case ends in bounded time, leaves no process behind, shows no secret in its output
and changes no file outside its folder. Cases that only a kernel layer can stop run when
the pool has that layer and are skipped (naming it) otherwise.

CI runs this file as root; ``test_hostile_corpus_unprivileged`` runs it and
``test_sandbox.py`` again as uid 65534 (through ``as_nobody.py``), where the same layers come
from an unprivileged user namespace.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from optiforge.config import load_settings
from optiforge.solvers import ExitReason, SandboxError, SandboxPool, SolveStatus

_spec = importlib.util.spec_from_file_location(
    "solvers_procs", Path(__file__).with_name("procs.py")
)
_procs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_procs)
assert_clean = _procs.assert_clean

REPO = Path(__file__).resolve().parents[2]
SECRET = "sk-hostile-" + uuid.uuid4().hex  # an API key the parent holds
SECRET_VAR = "OPTIFORGE_TEST_SECRET"
NOBODY_RUN = os.environ.get("OPTIFORGE_TEST_NOBODY_RUN") == "1"


@pytest.fixture(scope="module")
def hpool():
    """A pool started while the parent holds a secret in its environment, with the
    settings the agents start theirs with (the configured directories are hidden)."""
    old = os.environ.get(SECRET_VAR)
    os.environ[SECRET_VAR] = SECRET
    try:
        with SandboxPool(size=1, timeout=30.0, settings=load_settings()) as p:
            p.warm_up()
            if NOBODY_RUN:
                print("ISOLATION-LEVEL", json.dumps(p.isolation_info()))
            yield p
    finally:
        if old is None:
            os.environ.pop(SECRET_VAR, None)
        else:
            os.environ[SECRET_VAR] = old


def _snapshot() -> dict[str, tuple[float, int]]:
    """mtime and size of what a hostile program must not change: the repository's top
    level and the model store. (Not the LLM cache: other runs on a shared machine write
    it; the write test checks it by name.)"""
    out = {}
    settings = load_settings()
    for root, depth in ((REPO, 1), (settings.resolved_models_dir, 1)):
        todo = [(Path(root), 0)]
        while todo:
            d, level = todo.pop()
            try:
                entries = list(os.scandir(d))
            except OSError:
                continue
            for e in entries:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                out[e.path] = (st.st_mtime, st.st_size)
                if e.is_dir(follow_symlinks=False) and level + 1 < depth:
                    todo.append((Path(e.path), level + 1))
    return out


@pytest.fixture(autouse=True)
def nothing_changed_outside():
    """After every case: no file created, changed or removed in the places above."""
    before = _snapshot()
    yield
    after = _snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    changed = [c for c in changed if "__pycache__" not in c and ".pytest_cache" not in c]
    assert not changed, f"changed outside the program's folder: {changed[:20]}"


def needs(pool: SandboxPool, *layers: str) -> None:
    """Skip unless the pool has these kernel layers (only they can stop native code)."""
    have = pool.isolation_info()["isolation"].split("+")
    missing = [x for x in layers if x not in have]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}; this machine gives {'+'.join(have)}")


def run(pool: SandboxPool, code: str, **kw):
    """Run ``code``; check the common promises: bounded time, no secret in the output."""
    t0 = time.monotonic()
    r = pool.run(textwrap.dedent(code), **kw)
    assert time.monotonic() - t0 < kw.get("timeout", 30) + 15, r
    assert SECRET not in r.stdout + r.stderr + (r.result.message or "" if r.result else "")
    return r


def ok_after(pool: SandboxPool) -> None:
    """Nothing left behind, and the pool still serves."""
    assert_clean(pool)
    r = pool.run("report(objective=1.5)")
    assert r.ok and r.result.objective == 1.5, r


LIBC = "import ctypes, json, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"

#: A program's scan of its own anonymous memory (heap, stack, arenas): what it inherited
#: from the worker by fork. Read with ctypes, as /proc/self/mem is closed to a process
#: whose uid changed.
SCAN = textwrap.dedent(
    """
    import ctypes

    def scan():
        with open("/proc/self/maps") as maps:
            lines = maps.read().splitlines()
        for line in lines:
            f = line.split()
            if not f[1].startswith("r") or f[4] != "0" or (len(f) > 5 and f[5] != "[heap]"
                                                           and f[5] != "[stack]"):
                continue
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            yield lo, ctypes.string_at(lo, hi - lo)
    """
)


# -- native code past the audit hook: writes, deletes, reads -----------------------------------


def test_native_writes_and_deletes_outside_are_refused(hpool, tmp_path):
    needs(hpool, "mountns", "readonly")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    settings = load_settings()
    targets = [
        str(tmp_path / "created.txt"),  # the caller's temp folder
        f"/tmp/optiforge-hostile-{uuid.uuid4().hex}",  # the shared temp dir: the measured attack
        str(REPO / f"hostile-{uuid.uuid4().hex}"),  # the repository (journals, runs)
        str(settings.resolved_cache_dir / "hostile"),  # the LLM cache
        str(settings.resolved_models_dir / "hostile"),  # the model store
        os.path.expanduser("~/hostile"),
        "/etc/optiforge-hostile",
        "/var/tmp/optiforge-hostile",
        "/dev/shm/optiforge-hostile",
    ]
    code = LIBC + textwrap.dedent(
        f"""
        out = []
        for t in {targets!r}:
            fd = libc.open(t.encode(), os.O_WRONLY | os.O_CREAT, 0o644)
            out.append([t, fd, ctypes.get_errno()])
        out.append(["unlink", libc.unlink({str(victim).encode()!r}), ctypes.get_errno()])
        out.append(["rename", libc.rename({str(victim).encode()!r}, b"/tmp/x"), 0])
        out.append(["chmod", libc.chmod({str(victim).encode()!r}, 0o777), 0])
        out.append(["mkdir", libc.mkdir(b"/tmp/optiforge-hostile-dir", 0o755), 0])
        out.append(["own dir", libc.open(b"mine.txt", os.O_WRONLY | os.O_CREAT, 0o644), 0])
        print(json.dumps(out))
        """
    )
    try:
        r = run(hpool, code)
        assert r.ok, r.stderr
        rows = json.loads(r.stdout)
        assert rows[-1][1] >= 0, "the program could not write its own folder"
        assert all(row[1] == -1 for row in rows[:-1]), rows
    finally:
        leaked = [t for t in targets if os.path.exists(t)]
        for t in leaked:
            os.remove(t)
    assert not leaked, f"files created outside the program's folder: {leaked}"
    assert victim.read_text() == "keep me" and oct(victim.stat().st_mode)[-3:] != "777"
    ok_after(hpool)


def test_native_reads_see_nothing_of_the_parent(hpool, tmp_path):
    needs(hpool, "mountns", "procfs")
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(SECRET)
    settings = load_settings()
    code = textwrap.dedent(
        f"""
        import json, os
        def ls(p):
            try:
                return sorted(os.listdir(p))
            except OSError as e:
                return type(e).__name__
        def cat(p):
            try:
                return open(p, errors="replace").read()[:4000]
            except OSError as e:
                return type(e).__name__
        print(json.dumps({{
            "secret_file": cat({str(secret_file)!r}),
            "tmp_path": ls({str(tmp_path)!r}),
            "tmp": ls("/tmp"),
            "home": ls(os.path.expanduser({os.path.expanduser("~")!r})),
            "optiforge_home": ls({str(settings.home)!r}),
            "cache": ls({str(settings.resolved_cache_dir)!r}),
            "models": ls({str(settings.resolved_models_dir)!r}),
            "run": ls("/run"),
            "proc": [p for p in ls("/proc") if p.isdigit()],
            "proc1_environ": cat("/proc/1/environ"),
            "proc1_cmdline": cat("/proc/1/cmdline"),
        }}))
        """
    )
    r = run(hpool, code)
    assert r.ok, r.stderr
    seen = json.loads(r.stdout)
    assert seen["secret_file"] == "FileNotFoundError"
    assert seen["tmp_path"] == "FileNotFoundError"
    # /tmp is the worker's private tmpfs: the program may not list it (a uid of its own)
    # or sees only the jobs' folders.
    assert seen["tmp"] == "PermissionError" or all(
        x.startswith("optiforge-sbx-") for x in seen["tmp"]
    ), seen["tmp"]
    for key in ("optiforge_home", "cache", "models"):
        assert seen[key] in ("FileNotFoundError", []), (key, seen[key])
    assert "models" not in seen["home"] and ".cache" not in seen["home"], seen["home"]
    assert seen["run"] == []
    assert len(seen["proc"]) <= 3, seen["proc"]  # its own PID namespace: init, itself
    assert SECRET_VAR not in seen["proc1_environ"]


def test_parent_environment_never_reaches_the_program(hpool):
    # The worker starts with an allow-listed environment, so the key is nowhere in the
    # program's memory: not in os.environ, not in the environ block it inherited by fork.
    code = textwrap.dedent(
        """
        import os, re
        needle = b"OPTIFORGE_TEST_" + b"SECRET="
        hits = []
        for start, chunk in scan():
            for m in re.finditer(re.escape(needle), chunk):
                hits.append(chunk[m.end() : m.end() + 60])
        print(len(hits), hits, sorted(os.environ))
        try:
            print(open("/proc/self/environ").read())
        except OSError as e:
            print(type(e).__name__)
        """
    )
    r = run(hpool, SCAN + code, memory_mb=2048, timeout=60)
    assert r.ok, r.stderr
    assert SECRET not in r.stdout and SECRET_VAR not in r.stdout.split("]")[-1]
    ok_after(hpool)


# -- descendants -------------------------------------------------------------------------------


def _comm_processes(name: str) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == name:
                    out.append(int(pid))
            except OSError:
                pass
    return out


def test_double_fork_and_setsid_die_with_the_program(hpool):
    name = "sbx" + uuid.uuid4().hex[:8]
    code = LIBC + textwrap.dedent(
        f"""
        import time
        if libc.fork() == 0:
            libc.setsid()
            if libc.fork() == 0:
                libc.prctl(15, {name.encode()!r}, 0, 0, 0)  # PR_SET_NAME
                libc.setsid()
                time.sleep(120)
            os._exit(0)
        time.sleep(0.3)
        print("parent done")
        """
    )
    r = run(hpool, code, timeout=20)
    assert r.ok and "parent done" in r.stdout, r
    deadline = time.monotonic() + 5
    while _comm_processes(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _comm_processes(name) == []
    ok_after(hpool)


def test_native_kill_everything_reaches_only_its_own(hpool):
    needs(hpool, "pidns")
    # kill(-1) signals every process the caller may signal; in its own PID namespace that
    # is only its own.
    code = LIBC + "print(libc.kill(-1, 9), flush=True)\nimport time; time.sleep(0.2)\n"
    workers = hpool.worker_pids()
    r = run(hpool, code, timeout=10)
    assert hpool.worker_pids() == workers and r.stdout.strip() in ("0", "-1"), r
    ok_after(hpool)


# -- resource exhaustion and limits ------------------------------------------------------------


def test_native_fork_bomb_is_bounded(hpool):
    needs(hpool, "nproc")
    code = LIBC + textwrap.dedent(
        """
        import time
        n = 0
        for _ in range(500):
            pid = libc.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            if pid > 0:
                n += 1
        print(n, flush=True)
        """
    )
    r = run(hpool, code, timeout=20)
    assert r.ok, r
    assert int(r.stdout.split()[0]) <= 16, r.stdout
    ok_after(hpool)


def test_memory_cpu_and_disk_exhaustion(hpool):
    needs(hpool, "mountns")
    # Native allocation past RLIMIT_AS.
    code = "libc.malloc.restype = ctypes.c_void_p\nlibc.malloc.argtypes = [ctypes.c_size_t]\n"
    r = run(hpool, LIBC + code + "print(libc.malloc(64 << 30))")
    assert r.ok and r.stdout.strip() == "None", r
    r = run(hpool, "x = bytearray(64 * 1024**3)", memory_mb=256)
    assert r.exit_reason == ExitReason.MEMORY_LIMIT, r
    # CPU in native code.
    r = run(hpool, LIBC + "while True:\n    libc.getpid()", cpu_time=1, timeout=20)
    assert r.exit_reason == ExitReason.CPU_LIMIT, r
    # Disk: many files in its own folder stop at the worker's private tmpfs size.
    code = textwrap.dedent(
        """
        import os
        n = 0
        try:
            for i in range(4000):
                with open(f"f{i}", "wb") as f:
                    f.write(b"x" * (1 << 20))
                n += 1
        except OSError as e:
            print("stopped", n, e.errno)
        """
    )
    r = run(hpool, code, timeout=60, output_limit=2 << 20)
    assert r.ok and r.stdout.startswith("stopped"), r
    assert int(r.stdout.split()[1]) < 300
    ok_after(hpool)


def test_limits_cannot_be_raised_from_inside(hpool):
    code = LIBC + textwrap.dedent(
        """
        import resource
        out = []
        for name in ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_NPROC"):
            which = getattr(resource, name)
            soft, hard = resource.getrlimit(which)
            raw = (ctypes.c_ulong * 2)(2**62, 2**62)
            out.append((name, libc.setrlimit(which, raw), resource.getrlimit(which)[1] == hard))
        try:
            resource.setrlimit(resource.RLIMIT_CPU, (10**6, 10**6))
        except PermissionError as e:
            out.append(str(e))
        print(out)
        """
    )
    r = run(hpool, code)
    assert r.ok, r.stderr
    info = hpool.isolation_info()
    assert "changing resource limits is not allowed" in r.stdout
    if info["level"] == "full":
        assert r.stdout.count(", -1, True)") == 5, r.stdout
    ok_after(hpool)


# -- network of every family -------------------------------------------------------------------


def test_native_network_of_every_family(hpool, tmp_path):
    needs(hpool, "netns")
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(8)
    tcp.setblocking(False)
    tcp6 = None
    if socket.has_ipv6:
        try:
            tcp6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            tcp6.bind(("::1", 0))
            tcp6.listen(8)
            tcp6.setblocking(False)
        except OSError:
            tcp6 = None
    path = str(tmp_path / "parent.sock")
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(path)
    unix.listen(8)
    unix.setblocking(False)
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract_name = b"\0optiforge-hostile-" + uuid.uuid4().hex.encode()
    abstract.bind(abstract_name)
    abstract.listen(8)
    abstract.setblocking(False)
    port6 = tcp6.getsockname()[1] if tcp6 else 0
    code = LIBC + textwrap.dedent(
        f"""
        import socket, struct
        def try_connect(family, addr):
            fd = libc.socket(family, socket.SOCK_STREAM, 0)
            if fd < 0:
                return ("socket", ctypes.get_errno())
            rc = libc.connect(fd, addr, len(addr))
            return ("connect", rc, ctypes.get_errno())
        out = {{}}
        out["inet"] = try_connect(2, struct.pack("=H", 2) + struct.pack("!H", {tcp.getsockname()[1]})
                                  + socket.inet_aton("127.0.0.1") + bytes(8))
        out["inet_remote"] = try_connect(2, struct.pack("=H", 2) + struct.pack("!H", 80)
                                         + socket.inet_aton("1.1.1.1") + bytes(8))
        out["inet6"] = try_connect(10, struct.pack("=H", 10) + struct.pack("!HI", {port6}, 0)
                                   + socket.inet_pton(10, "::1") + struct.pack("I", 0))
        p = {path.encode()!r}
        out["unix_path"] = try_connect(1, struct.pack("=H", 1) + p + b"\\0")
        a = {abstract_name!r}
        out["unix_abstract"] = try_connect(1, struct.pack("=H", 1) + a)
        out["packet"] = ("socket", libc.socket(17, 3, 0x0300), ctypes.get_errno())
        nl = libc.socket(16, 3, 0)
        out["netlink_fd"] = nl
        libc.if_nameindex.restype = ctypes.c_void_p
        names = []
        ptr = libc.if_nameindex()
        class Entry(ctypes.Structure):
            _fields_ = [("index", ctypes.c_uint), ("name", ctypes.c_char_p)]
        if ptr:
            arr = ctypes.cast(ptr, ctypes.POINTER(Entry))
            i = 0
            while arr[i].index:
                names.append(arr[i].name.decode())
                i += 1
        out["interfaces"] = names
        print(json.dumps(out))
        """
    )
    try:
        r = run(hpool, code, timeout=20)
        assert r.ok, r.stderr
        out = json.loads(r.stdout)
        for key in ("inet", "inet_remote", "inet6", "unix_path", "unix_abstract"):
            assert out[key][-2] == -1 or out[key][0] == "socket", (key, out[key])
        assert out["packet"][1] == -1, out["packet"]
        assert out["interfaces"] in ([], ["lo"]), out["interfaces"]
        for server in (tcp, tcp6, unix, abstract):
            if server is not None:
                with pytest.raises(BlockingIOError):
                    server.accept()
    finally:
        for server in (tcp, tcp6, unix, abstract):
            if server is not None:
                server.close()
    ok_after(hpool)


def test_python_network_calls_are_refused(hpool):
    code = textwrap.dedent(
        """
        import socket
        out = []
        for f in (
            lambda: socket.create_connection(("127.0.0.1", 9), timeout=2),
            lambda: socket.getaddrinfo("pypi.org", 443),
            lambda: socket.socket(socket.AF_UNIX).connect("/run/dbus/system_bus_socket"),
            lambda: socket.socket(socket.AF_INET6).connect(("::1", 9)),
        ):
            try:
                f()
                out.append("connected")
            except PermissionError as e:
                out.append("refused")
            except OSError as e:
                out.append(type(e).__name__)
        print(out)
        """
    )
    r = run(hpool, code)
    assert r.ok and "connected" not in r.stdout and r.stdout.count("refused") == 4, r
    ok_after(hpool)


# -- what one program leaves for the next -------------------------------------------------------


def test_next_program_sees_nothing_of_the_previous(hpool):
    marker = uuid.uuid4().hex
    first = f"""
    import os
    open("left.txt", "w").write("PREV" + "-" + {marker!r})
    print("PREV" + "-" + {marker!r})
    report(objective=3, message="PREV" + "-" + {marker!r})
    """
    second = textwrap.dedent(
        """
        import os, re
        needle = b"PR" + b"EV-"
        hits = []
        for start, chunk in scan():
            for m in re.finditer(re.escape(needle), chunk):
                hits.append(chunk[m.end() : m.end() + 32].hex())
        try:
            tmp = os.listdir("/tmp")
        except OSError as e:
            tmp = type(e).__name__
        print(os.listdir("."), tmp, hits)
        """
    )
    assert run(hpool, first).ok
    r = run(hpool, SCAN + second, memory_mb=2048, timeout=60)
    assert r.ok, r.stderr
    assert "left.txt" not in r.stdout
    assert marker.encode().hex()[:32] not in r.stdout, "the previous program's data is in memory"
    ok_after(hpool)


# -- the same corpus, unprivileged ---------------------------------------------------------------


@pytest.mark.skipif(NOBODY_RUN, reason="this is the unprivileged run")
def test_hostile_corpus_unprivileged():
    """Re-run this file and test_sandbox.py as uid 65534: the same promises must hold
    without root, with the same layers (from an unprivileged user namespace)."""
    if os.geteuid() != 0:
        pytest.skip("already unprivileged: the run above was the unprivileged run")
    import shutil
    import tempfile

    home = tempfile.mkdtemp(prefix="optiforge-nobody-")  # pytest's tmp is root-only
    os.chown(home, 65534, 65534)
    try:
        _run_as_nobody(home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _run_as_nobody(home: str) -> None:
    cmd = [
        sys.executable,
        str(Path(__file__).with_name("as_nobody.py")),
        home,
        "--",
        sys.executable,
        "-m",
        "pytest",
        str(Path(__file__)),
        str(Path(__file__).with_name("test_sandbox.py")),
        "-q",
        "-s",
        "-rs",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(REPO),
        "-k",
        "not unprivileged",
    ]
    env = dict(os.environ, OPTIFORGE_TEST_NOBODY_RUN="1")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    text = out.stdout + out.stderr
    if out.returncode == 77 and "AS_NOBODY_UNAVAILABLE" in text:
        pytest.skip(text.split("AS_NOBODY_UNAVAILABLE: ", 1)[1].splitlines()[0])
    assert out.returncode == 0, text[-6000:]
    level = json.loads(text.split("ISOLATION-LEVEL", 1)[1].splitlines()[0])
    if level["level"] != "full":
        pytest.skip(
            "unprivileged user namespaces are not available on this kernel/container "
            f"({level}); the Python-level cases passed unprivileged, the native ones skipped"
        )
    skipped = [
        line
        for line in text.splitlines()
        if line.startswith("SKIPPED")
        and "this is the unprivileged run" not in line
        and "could not import" not in line  # an optional package (scipy), not isolation
    ]
    assert " passed" in text and not skipped, text[-3000:]


DEGRADED_SCRIPT = """
import json, os, warnings
from optiforge.config import load_settings
from optiforge.solvers import SandboxError, SandboxPool
warnings.simplefilter("always")
out = {}
with warnings.catch_warnings(record=True) as caught:
    with SandboxPool(size=1, require="none") as p:
        a, b = p.run("report(objective=2)"), p.run("pass")
        out["ok"] = a.ok and a.result.objective == 2 and b.ok
        out["level"], out["isolation"] = a.isolation_level, a.isolation
out["warnings"] = [str(w.message) for w in caught if "optiforge sandbox" in str(w.message)]
os.environ["OPTIFORGE_SANDBOX_REQUIRE"] = "full"  # read by load_settings, as the CLI does
with SandboxPool(size=1, settings=load_settings()) as p:
    try:
        p.run("open('pwned', 'w')")
        out["refused"] = None
    except SandboxError as e:
        out["refused"] = str(e)
print("RESULT", json.dumps(out))
"""


@pytest.mark.skipif(NOBODY_RUN, reason="this is the unprivileged run")
def test_without_user_namespaces_warns_once_and_full_is_refused():
    """A kernel or container that forbids user namespaces: the sandbox still runs programs
    (fork, rlimits, audit hook), warns once naming the missing layers, and with
    sandbox_require=full refuses to run generated code at all."""
    if os.geteuid() != 0:
        pytest.skip("needs root to build an unprivileged user without user namespaces")
    import shutil
    import tempfile

    home = tempfile.mkdtemp(prefix="optiforge-nobody-")
    os.chown(home, 65534, 65534)
    try:
        script = Path(home) / "degraded.py"
        script.write_text(DEGRADED_SCRIPT)
        helper = str(Path(__file__).with_name("as_nobody.py"))
        cmd = [sys.executable, helper, "--no-userns", home, "--", sys.executable, str(script)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if proc.returncode == 77 and "AS_NOBODY_UNAVAILABLE" in proc.stdout:
        pytest.skip(proc.stdout.split("AS_NOBODY_UNAVAILABLE: ", 1)[1].splitlines()[0])
    assert proc.returncode == 0 and "RESULT" in proc.stdout, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert out["ok"] and out["level"] == "basic", out
    assert len(out["warnings"]) == 1, out["warnings"]
    for layer in ("netns", "mountns", "readonly", "pidns", "nproc"):
        assert layer in out["warnings"][0]
    assert out["refused"] and "sandbox_require=full" in out["refused"]
    assert "missing netns" in out["refused"] and "OPTIFORGE_SANDBOX_REQUIRE" in out["refused"]


def test_require_setting_is_checked():
    with pytest.raises(SandboxError, match="sandbox_require must be 'none' or 'full'"):
        SandboxPool(size=1, require="maybe")
    assert load_settings(sandbox_require="full").sandbox_require == "full"


def test_report_channel_rejects_non_finite_numbers(hpool):
    r = run(hpool, "print('OBJECTIVE: 1e309')")
    assert r.ok and r.result.status == SolveStatus.ERROR and "not a finite number" in r.report_error
    r = run(hpool, "print('objective = -inf')")
    assert r.result.status == SolveStatus.ERROR and r.report_error
    r = run(hpool, "print('Objective: nan')")
    assert r.result.status == SolveStatus.ERROR and r.report_error
    r = run(hpool, 'import os\nos.write(3, b\'{"status": "optimal", "objective": 1e309}\\n\')')
    assert r.result.status == SolveStatus.ERROR and "not a finite number" in r.report_error
    r = run(hpool, "import os\nos.write(3, b'{\"objective\": Infinity}\\n')")
    assert r.result.status == SolveStatus.ERROR and r.report_error
    r = run(
        hpool,
        'import os\nos.write(3, b\'{"objective": 1, "variables": {"x": NaN}}\\n\')',
    )
    assert r.result.status == SolveStatus.ERROR and "not finite" in r.report_error
    r = run(hpool, "report(objective=float('inf'))")
    assert r.exit_reason == ExitReason.ERROR and "not a finite number" in r.stderr
    assert r.result is None
    r = run(hpool, "report(objective=1, variables={'x': float('-inf')})")
    assert r.exit_reason == ExitReason.ERROR and "not finite" in r.stderr


def test_cover_plan_keeps_what_the_interpreter_needs():
    import tempfile

    from optiforge.solvers.isolation import cover_plan

    with tempfile.TemporaryDirectory() as d:
        os.makedirs(f"{d}/lib/site/pkg")
        os.makedirs(f"{d}/home/.cache/optiforge")
        plan = cover_plan(
            [d, f"{d}/lib/site/pkg", f"{d}/home", "/"], [f"{d}/lib/site", f"{d}/home/.pyenv"]
        )
    # The outer folder is covered with the needed child bound back; a folder inside a
    # needed one is left alone (covering it could hide modules); the root is never covered;
    # the home is covered although a needed path under it does not exist.
    assert plan == [(d, [f"{d}/lib"]), (f"{d}/home", [])], plan


def test_version_shows_the_isolation():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-m", "optiforge", "version"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=str(REPO),
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[1].startswith("sandbox isolation: "), out.stdout
    assert lines[1].split()[2] in ("full", "partial", "basic")
    from optiforge.solvers.sandbox import describe_isolation, probe_isolation

    assert lines[1] == describe_isolation(probe_isolation(settings=load_settings()))


@pytest.mark.skipif(NOBODY_RUN, reason="this is the unprivileged run")
def test_read_only_fallback_without_mount_setattr():
    """Kernels before 5.12 lack mount_setattr: the view is then made read-only one mount at a
    time. Forced here (fault injection) in a throw-away mount namespace."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a throw-away mount namespace")
    import tempfile

    from optiforge.solvers import isolation as iso

    d = tempfile.mkdtemp(prefix="optiforge-ro-")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 3
        try:
            iso.unshare(iso.CLONE_NEWNS)
            iso.mount("none", "/", None, iso.MS_REC | iso.MS_PRIVATE, None)
            iso.mount_tmpfs(d, 1, "0755")
            os.mkdir(f"{d}/sub")
            iso.mount_tmpfs(f"{d}/sub", 1, "0755")

            def no_syscall(*a, **k):
                raise OSError(38, "ENOSYS")

            iso._mount_setattr = no_syscall
            iso.make_readonly(d, recursive=True)
            code = 2
            for target in (f"{d}/x", f"{d}/sub/x"):
                try:
                    open(target, "w").close()
                    code = 1  # written: not read-only
                except OSError as e:
                    if e.errno != 30:  # EROFS
                        code = 1
            if code == 2:
                iso.make_writable(f"{d}/sub")
                open(f"{d}/sub/x", "w").close()
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    os.rmdir(d)
    assert os.waitstatus_to_exitcode(status) == 0
