"""Sandbox: the result protocol, limits, and hostile programs (each contained, pool keeps serving)."""

from __future__ import annotations

import importlib.util
import os
import textwrap
import time
from pathlib import Path

import pytest

from optiforge.solvers import ExitReason, SandboxError, SandboxPool, SolveStatus, run_sandboxed
from optiforge.solvers._worker import UID_BASE
from optiforge.solvers.protocol import parse_objective_line

_spec = importlib.util.spec_from_file_location(
    "solvers_procs", Path(__file__).with_name("procs.py")
)
_procs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_procs)
_processes, assert_clean = _procs.processes, _procs.assert_clean

PYOMO_PROGRAM = textwrap.dedent(
    """
    import pyomo.environ as pyo
    m = pyo.ConcreteModel()
    m.x = pyo.Var(within=pyo.NonNegativeIntegers)
    m.y = pyo.Var(within=pyo.NonNegativeReals)
    m.c = pyo.Constraint(expr=m.x + 2 * m.y <= 10.5)
    m.obj = pyo.Objective(expr=m.x + m.y, sense=pyo.maximize)
    results = pyo.SolverFactory("appsi_highs").solve(m)
    print("OBJECTIVE:", pyo.value(m.obj))
    report(model=m, results=results)
    """
)


def assert_serving(pool: SandboxPool) -> None:
    r = pool.run(PYOMO_PROGRAM)
    assert r.exit_reason == ExitReason.OK, r
    assert r.result is not None and r.result.objective == pytest.approx(10.25)


# -- protocol --------------------------------------------------------------------------------


def test_report_with_model_and_results(pool):
    r = pool.run(PYOMO_PROGRAM)
    assert r.ok and r.exit_reason == ExitReason.OK and r.returncode == 0
    assert r.result.status == SolveStatus.OPTIMAL
    assert r.result.objective == pytest.approx(10.25)
    assert r.result.variables == pytest.approx({"x": 10.0, "y": 0.25})
    assert "OBJECTIVE: 10.25" in r.stdout and r.result.solver == "sandbox"


def test_report_explicit_and_last_call_wins(pool):
    r = pool.run(
        "report(objective=1, status='feasible')\n"
        "report(objective=2.5, status='optimal', variables={'a': 1, 'b': 2.0}, message='hi')\n"
    )
    assert r.result.objective == 2.5 and r.result.variables == {"a": 1.0, "b": 2.0}
    assert r.result.message == "hi"
    r = pool.run("report(status='infeasible')")
    assert r.result.status == SolveStatus.INFEASIBLE and r.result.objective is None


def test_report_with_pyomo_termination_condition(pool):
    code = textwrap.dedent(
        """
        import pyomo.environ as pyo
        m = pyo.ConcreteModel()
        m.x = pyo.Var(bounds=(0, 1))
        m.c = pyo.Constraint(expr=m.x >= 2)
        m.o = pyo.Objective(expr=m.x)
        res = pyo.SolverFactory("appsi_highs").solve(m, load_solutions=False)
        report(results=res)
        """
    )
    r = pool.run(code)
    assert r.ok and r.result.status == SolveStatus.INFEASIBLE


def test_fallback_objective_line(pool):
    r = pool.run("print('solving...')\nprint('Objective value: -12.5e1')\nprint('done')")
    assert r.result.status == SolveStatus.OPTIMAL and r.result.objective == -125.0
    assert "report() was not called" in r.result.message
    r = pool.run("print('nothing to see')")
    assert r.ok and r.result is None
    # No fallback when the program failed.
    r = pool.run("print('OBJECTIVE: 3')\nraise ValueError('boom')")
    assert r.exit_reason == ExitReason.ERROR and r.result is None
    assert "ValueError: boom" in r.stderr and "boom" in r.message


def test_parse_objective_line_forms():
    assert parse_objective_line("OBJECTIVE: 3") == 3.0
    assert parse_objective_line("Optimal objective value = 1.5e3\n") == 1500.0
    assert parse_objective_line("obj=-4") == -4.0
    assert parse_objective_line("objective: 1\nobjective: 2") == 2.0
    assert parse_objective_line("the objective is good") is None
    assert parse_objective_line("Objective: nan") is None


def test_errors_and_exit_codes(pool):
    r = pool.run("def f(:\n  pass")
    assert r.exit_reason == ExitReason.ERROR and "SyntaxError" in r.stderr
    r = pool.run("import sys; sys.exit(3)")
    assert r.exit_reason == ExitReason.ERROR and r.returncode == 3
    r = pool.run("import sys; sys.exit()")
    assert r.exit_reason == ExitReason.OK
    r = pool.run("x = undefined_name")
    assert "NameError" in r.message


def test_programs_do_not_share_state(pool):
    r1 = pool.run("import pyomo; pyomo.leak = 1; open('f.txt', 'w').write('x'); print('ok')")
    r2 = pool.run("import os, pyomo; print(hasattr(pyomo, 'leak'), os.path.exists('f.txt'))")
    assert r1.ok and r2.stdout.strip() == "False False"


def test_files_and_working_directory(pool):
    r = pool.run(
        "import os; print(open('data.csv').read()); open('out.txt','w').write('ok');"
        "print(os.listdir('.'))",
        files={"data.csv": "a,b\n1,2\n"},
    )
    assert r.ok and "a,b" in r.stdout and "out.txt" in r.stdout


def test_run_sandboxed_default_pool():
    r = run_sandboxed("report(objective=7)", timeout=20)
    assert r.ok and r.result.objective == 7.0


async def test_arun(pool):
    import asyncio

    results = await asyncio.gather(*(pool.arun(f"report(objective={k})") for k in range(4)))
    assert [r.result.objective for r in results] == [0.0, 1.0, 2.0, 3.0]


def test_bad_arguments(pool):
    with pytest.raises(SandboxError):
        pool.run("pass", timeout=0)
    with pytest.raises(SandboxError):
        pool.run(b"pass")  # type: ignore[arg-type]
    with pytest.raises(SandboxError):
        SandboxPool(size=0)
    for bad in ({"../x": "a"}, {"": "a"}, {"program.py": "a"}, {"d/x.csv": "a"}, {"x": b"a"}):
        with pytest.raises(SandboxError, match="plain file name"):
            pool.run("pass", files=bad)


# -- hostile programs -------------------------------------------------------------------------


def test_infinite_loop_wall_timeout(pool):
    t0 = time.monotonic()
    r = pool.run("while True:\n    pass", timeout=1.5, cpu_time=30)
    assert r.exit_reason == ExitReason.TIMEOUT and time.monotonic() - t0 < 10
    assert_clean(pool)
    assert_serving(pool)


def test_infinite_loop_cpu_limit(pool):
    r = pool.run("while True:\n    pass", timeout=20, cpu_time=1)
    assert r.exit_reason == ExitReason.CPU_LIMIT, r
    assert_serving(pool)
    assert_clean(pool)


def test_sleeping_program_times_out(pool):
    r = pool.run("import time; time.sleep(100)", timeout=1)
    assert r.exit_reason == ExitReason.TIMEOUT
    assert_clean(pool)


def test_fork_bomb(pool):
    r = pool.run("import os\nwhile True:\n    os.fork()", timeout=5)
    assert r.exit_reason == ExitReason.ERROR and "starting processes is not allowed" in r.stderr
    r = pool.run("import subprocess; subprocess.run(['ls'])", timeout=5)
    assert "starting processes is not allowed" in r.stderr
    assert_clean(pool)
    assert_serving(pool)


def test_native_fork_bomb_is_bounded_and_cleaned(pool):
    # Bypasses the audit hook through libc; RLIMIT_NPROC (as root) bounds it, the worker
    # kills every survivor afterwards. Without a uid of its own nothing bounds it: skip.
    if "nproc" not in pool.run("pass").isolation:
        pytest.skip("no process limit here (no user namespace, not root)")
    code = textwrap.dedent(
        """
        import ctypes, time
        libc = ctypes.CDLL(None)
        n = 0
        for _ in range(200):
            if libc.fork() >= 0:
                n += 1
        time.sleep(30)
        """
    )
    r = pool.run(code, timeout=2)
    assert r.exit_reason == ExitReason.TIMEOUT
    assert_clean(pool)
    assert_serving(pool)


def test_memory_bomb(pool):
    r = pool.run("x = bytearray(64 * 1024**3)", memory_mb=256)
    assert r.exit_reason == ExitReason.MEMORY_LIMIT, r
    r = pool.run(
        "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 1024**2))", memory_mb=256
    )
    assert r.exit_reason == ExitReason.MEMORY_LIMIT, r
    assert_serving(pool)
    assert_clean(pool)


def test_gigabyte_of_output(pool):
    code = "import sys\nchunk = 'x' * 1_000_000\nfor _ in range(1000):\n    sys.stdout.write(chunk)"
    t0 = time.monotonic()
    r = pool.run(code, output_limit=2_000_000, timeout=20)
    assert r.exit_reason == ExitReason.OUTPUT_LIMIT, r
    assert r.stdout_bytes <= 2_000_000 and len(r.stdout) <= 8000
    assert time.monotonic() - t0 < 10
    # A big file in its own directory hits the same cap.
    r = pool.run("open('big.bin', 'wb').write(b'0' * 10_000_000)", output_limit=1_000_000)
    assert r.exit_reason == ExitReason.OUTPUT_LIMIT
    assert_serving(pool)
    assert_clean(pool)


def test_socket_connect_is_blocked(pool):
    r = pool.run("import socket; socket.create_connection(('1.1.1.1', 80), timeout=3)")
    assert r.exit_reason == ExitReason.ERROR and "network access is blocked" in r.stderr
    r = pool.run("import urllib.request; urllib.request.urlopen('http://pypi.org', timeout=3)")
    assert r.exit_reason == ExitReason.ERROR
    assert_clean(pool)


def test_native_socket_has_no_network(pool):
    if "netns" not in pool.run("pass").isolation:
        pytest.skip("no network namespace here (not root); the audit hook is the only layer")
    code = textwrap.dedent(
        """
        import ctypes, struct
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.socket(2, 1, 0)
        addr = struct.pack('!HH4s8x', 2, 80, bytes([1, 1, 1, 1]))
        addr = struct.pack('H', 2) + addr[2:]
        rc = libc.connect(fd, addr, len(addr))
        print('connect', rc, ctypes.get_errno())
        """
    )
    r = pool.run(code, timeout=10)
    assert r.ok and r.stdout.split()[1] == "-1"  # ENETUNREACH: no route out
    assert_clean(pool)


def test_write_and_delete_outside_directory(pool, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    target = tmp_path / "created.txt"
    code = textwrap.dedent(
        f"""
        import os, shutil
        errors = []
        for action in (
            lambda: os.remove({str(victim)!r}),
            lambda: open({str(target)!r}, 'w').write('x'),
            lambda: shutil.rmtree({str(tmp_path)!r}),
            lambda: open('/etc/optiforge_probe', 'w'),
            lambda: open('../escape.txt', 'w'),
        ):
            try:
                action()
            except Exception as e:
                errors.append(type(e).__name__)
        print(len(errors), errors)
        """
    )
    r = pool.run(code)
    assert r.ok and r.stdout.startswith("5 "), r.stdout + r.stderr
    assert victim.read_text() == "keep me" and not target.exists()
    assert not os.path.exists("/etc/optiforge_probe")
    assert_clean(pool)


def test_native_writes_cannot_reach_the_host(pool, tmp_path):
    if "readonly" not in pool.run("pass").isolation:
        pytest.skip("no read-only view here (no user namespace, not root)")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    code = textwrap.dedent(
        f"""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        print(libc.unlink({str(victim).encode()!r}), libc.creat(b'/etc/optiforge_probe', 0o644))
        """
    )
    r = pool.run(code)
    assert r.ok and r.stdout.split() == ["-1", "-1"]
    assert victim.read_text() == "keep me" and not os.path.exists("/etc/optiforge_probe")
    assert_clean(pool)


def test_kill_parent(pool):
    workers = pool.worker_pids()
    # (In its own PID namespace the program's parent is out of sight: getppid() is 0.)
    r = pool.run(f"import os, signal; os.kill({workers[0]}, signal.SIGKILL)")
    assert r.exit_reason == ExitReason.ERROR and "signalling other processes" in r.stderr
    if "pidns" in r.isolation or "uid" in r.isolation:
        # Through libc, past the audit hook: the kernel refuses (another uid), or the
        # targets do not exist in the program's PID namespace.
        code = textwrap.dedent(
            f"""
            import ctypes, os
            libc = ctypes.CDLL(None)
            print(libc.kill({workers[0]}, 9), libc.kill({os.getpid()}, 9))
            """
        )
        r = pool.run(code)
        assert r.ok and r.stdout.split() == ["-1", "-1"] and pool.worker_pids() == workers
    assert_serving(pool)
    assert_clean(pool)


def test_os_exit(pool):
    r = pool.run("import os\nprint('bye', flush=True)\nos._exit(7)")
    assert r.exit_reason == ExitReason.ERROR and r.returncode == 7 and "bye" in r.stdout
    r = pool.run("import os\nreport(objective=5)\nos._exit(0)")
    assert r.ok and r.result.objective == 5.0
    assert_clean(pool)


def test_segfault_through_ctypes(pool):
    r = pool.run("import ctypes\nctypes.string_at(0)")
    assert r.exit_reason == ExitReason.CRASHED and r.signal == "SIGSEGV"
    assert "Fatal Python error" in r.stderr  # faulthandler shows where
    assert_serving(pool)
    assert_clean(pool)


def test_garbage_report(pool):
    r = pool.run("report(objective='lots', status='optimal')")
    assert r.exit_reason == ExitReason.ERROR and "must be a number" in r.stderr
    r = pool.run("report(objective=1, status='great')")
    assert "unknown status" in r.stderr
    r = pool.run("report(status='optimal')")
    assert "needs objective" in r.stderr
    r = pool.run("report(objective=float('nan'))")
    assert "NaN" in r.stderr
    r = pool.run("report(objective=1, variables=[1, 2])")
    assert "must be a dict" in r.stderr
    # Bypassing report() and writing junk to the channel.
    r = pool.run("import os\nos.write(3, b'garbage\\n{\"status\": 5}\\n' + bytes(range(256)))")
    assert r.ok and r.result.status == SolveStatus.ERROR and r.report_error
    assert "rejected" in r.result.message
    assert_serving(pool)
    assert_clean(pool)


def test_pool_replaces_a_dead_worker(pool):
    # Kill a worker from outside, as if it had crashed; the next runs still work.
    victim = pool.worker_pids()[0]
    os.kill(victim, 9)
    results = [pool.run("report(objective=1)") for _ in range(4)]
    assert all(r.exit_reason in (ExitReason.OK, ExitReason.SANDBOX_ERROR) for r in results)
    assert results[-1].ok and victim not in pool.worker_pids()
    assert_serving(pool)
    assert_clean(pool)


def test_close_leaves_no_process():
    p = SandboxPool(size=1)
    r = p.run("report(objective=2)")
    assert r.ok
    pids = p.worker_pids()
    spares = {pid for pid, ppid, _ in _processes() if ppid in pids}
    p.close()
    p.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        alive = {pid for pid, _, _ in _processes()}
        if not (set(pids) | spares) & alive:
            break
        time.sleep(0.05)
    assert not (set(pids) | spares) & alive
    with pytest.raises(SandboxError, match="closed"):
        p.run("pass")


@pytest.mark.parametrize(
    "code, expected",
    [
        (
            """
            import highspy
            h = highspy.Highs()
            h.setOptionValue("output_flag", False)
            x = h.addVariable(lb=0, ub=4, type=highspy.HighsVarType.kInteger)
            y = h.addVariable(lb=0)
            h.addConstr(x + 2 * y <= 7)
            h.maximize(3 * x + y)
            report(objective=h.getInfo().objective_function_value, status="optimal")
            """,
            13.5,
        ),
        (
            """
            from pyscipopt import Model, quicksum
            m = Model()
            m.hideOutput()
            x = m.addVar("x", ub=10)
            y = m.addVar("y", ub=10)
            m.addCons(x + 2 * y <= 10)
            t = m.addVar("t", lb=None)
            m.addCons(t <= x * y)
            m.setObjective(t, "maximize")
            m.optimize()
            report(objective=m.getObjVal(), status=m.getStatus(),
                   variables={"x": m.getVal(x), "y": m.getVal(y)})
            """,
            12.5,
        ),
        (
            """
            import pyomo.environ as pyo
            m = pyo.ConcreteModel()
            m.x = pyo.Var(bounds=(0, 10))
            m.y = pyo.Var(bounds=(0, 10))
            m.c = pyo.Constraint(expr=m.x + 2 * m.y <= 10)
            m.o = pyo.Objective(expr=m.x * m.y, sense=pyo.maximize)
            res = pyo.SolverFactory("scip_direct").solve(m)
            report(model=m, results=res)
            """,
            12.5,
        ),
        (
            """
            import fractions, statistics, decimal, csv, itertools, random, heapq, bisect
            import scipy.optimize
            r = scipy.optimize.linprog([-1, -2], A_ub=[[1, 1]], b_ub=[4], bounds=[(0, 3), (0, 3)])
            print("OBJECTIVE:", -r.fun)
            """,
            7.0,
        ),
    ],
    ids=["highspy", "pyscipopt", "pyomo-scip", "stdlib-scipy"],
)
def test_other_solver_routes(pool, code, expected):
    if "scipy" in code:
        pytest.importorskip("scipy")
    r = pool.run(textwrap.dedent(code))
    assert r.ok, r.stderr
    assert r.result.status == SolveStatus.OPTIMAL
    assert r.result.objective == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "body, status, objective",
    [
        (
            "m.c = pyo.Constraint(expr=m.x + 2 * m.y <= 10)\nm.o = pyo.Objective(expr=m.x * m.y, sense=pyo.maximize)",
            "optimal",
            12.5,
        ),
        (
            "m.c = pyo.Constraint(expr=m.x + 2 * m.y <= 10)\nm.o = pyo.Objective(expr=m.x + m.y, sense=pyo.maximize)",
            "optimal",
            10.0,
        ),
        (
            "m.c = pyo.Constraint(expr=m.x + m.y >= 30)\nm.o = pyo.Objective(expr=m.x)",
            "infeasible",
            None,
        ),
        ("m.o = pyo.Objective(expr=m.x - m.z, sense=pyo.maximize)", "unbounded", None),
    ],
    ids=["nonlinear-scip", "linear-highs", "infeasible", "unbounded"],
)
def test_solve_pyomo_builtin(pool, body, status, objective):
    code = (
        "import pyomo.environ as pyo\n"
        "m = pyo.ConcreteModel()\n"
        "m.x = pyo.Var(bounds=(0, 10))\n"
        "m.y = pyo.Var(bounds=(0, 10))\n"
        "m.z = pyo.Var(bounds=(None, 0))\n"
        f"{body}\n"
        "results = solve_pyomo(m)\n"
        "report(model=m, results=results)\n"
    )
    r = pool.run(code)
    assert r.ok, r.stderr
    if status == "unbounded":
        assert r.result.status in (SolveStatus.UNBOUNDED, SolveStatus.INFEASIBLE_OR_UNBOUNDED)
    else:
        assert r.result.status == SolveStatus(status)
    if objective is None:
        assert r.result.objective is None
    else:
        assert r.result.objective == pytest.approx(objective, rel=1e-6)


def test_many_threads_share_the_pool(pool):
    from concurrent.futures import ThreadPoolExecutor

    def run(k):
        r = pool.run(f"import time\ntime.sleep(0.01)\nreport(objective={k})")
        return r.ok and r.result.objective == k

    with ThreadPoolExecutor(max_workers=8) as ex:
        assert all(ex.map(run, range(24)))
    assert_clean(pool)


def test_program_environment(pool):
    code = textwrap.dedent(
        """
        import json, os, sys
        status = open('/proc/self/status').read()
        fields = dict(l.split(':', 1) for l in status.splitlines() if ':' in l)
        print(json.dumps({
            "env": sorted(os.environ),
            "uid": os.getuid(),
            "nnp": fields["NoNewPrivs"].strip(),
            "cwd_is_home": os.getcwd() == os.environ["HOME"] == os.environ["TMPDIR"],
            "name": __name__,
            "argv0": os.path.basename(sys.argv[0]),
        }))
        """
    )
    r = pool.run(code)
    import json

    info = json.loads(r.stdout)
    assert info["env"] == ["HOME", "LANG", "OMP_NUM_THREADS", "PATH", "TMPDIR"]
    assert info["nnp"] == "1" and info["cwd_is_home"]
    assert info["name"] == "__main__" and info["argv0"] == "program.py"
    if "uid" in r.isolation:
        assert info["uid"] - UID_BASE in pool.worker_pids()
    assert_clean(pool)


@pytest.mark.parametrize("solver", ["appsi_highs", "highs"])
def test_pyomo_raising_on_an_infeasible_model_reads_as_infeasible(pool, solver):
    """The coder's usual program (`res = SolverFactory(...).solve(m)`) makes Pyomo raise on an
    infeasible model; the sandbox reports that as a solver status, not as a crash."""
    code = textwrap.dedent(
        f"""
        import pyomo.environ as pyo
        m = pyo.ConcreteModel()
        m.x = pyo.Var(domain=pyo.NonNegativeReals)
        m.c = pyo.Constraint(expr=m.x <= -1)
        m.o = pyo.Objective(expr=m.x)
        res = pyo.SolverFactory({solver!r}).solve(m)
        report(model=m, results=res)
        """
    )
    r = pool.run(code)
    assert r.exit_reason == ExitReason.ERROR  # the program itself did fail
    assert r.result is not None and not r.result.ok
    assert r.result.status == SolveStatus.INFEASIBLE_OR_UNBOUNDED
    assert "infeasible or unbounded" in r.result.message
    # Any other error stays an error without a result.
    r = pool.run("raise RuntimeError('something else')")
    assert r.exit_reason == ExitReason.ERROR and r.result is None
