"""The sandbox's unprivileged fallback (no namespaces, no separate uid) still contains
the Python-level hostile cases and keeps serving."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest

from optiforge.solvers import ExitReason, SolveStatus, ir_to_pyomo_code

_spec = importlib.util.spec_from_file_location("solvers_gold", Path(__file__).with_name("gold.py"))
_gold = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_gold)
_pspec = importlib.util.spec_from_file_location(
    "solvers_procs", Path(__file__).with_name("procs.py")
)
_procs = importlib.util.module_from_spec(_pspec)
_pspec.loader.exec_module(_procs)


def test_isolation_is_basic(basic_pool):
    r = basic_pool.run("pass")
    assert r.ok and r.isolation == "fork+rlimits+audit-hook+nocaps"
    assert r.isolation_level == "basic"


def test_gold_program(basic_pool):
    rec = _gold.load_gold()[9]
    r = basic_pool.run(ir_to_pyomo_code(_gold.gold_to_ir(rec, integer=True)))
    assert r.ok and r.result.status == SolveStatus.OPTIMAL
    assert r.result.objective == pytest.approx(rec["expected_objective_integer"])


@pytest.mark.parametrize(
    "code, kwargs, reason, text",
    [
        ("while True:\n    pass", {"timeout": 1.5, "cpu_time": 30}, ExitReason.TIMEOUT, ""),
        ("while True:\n    pass", {"timeout": 20, "cpu_time": 1}, ExitReason.CPU_LIMIT, ""),
        ("x = bytearray(64 * 1024**3)", {"memory_mb": 256}, ExitReason.MEMORY_LIMIT, ""),
        (
            "import sys\nfor _ in range(1000):\n    sys.stdout.write('x' * 1_000_000)",
            {"output_limit": 1_000_000},
            ExitReason.OUTPUT_LIMIT,
            "",
        ),
        ("import os\nos.fork()", {}, ExitReason.ERROR, "starting processes is not allowed"),
        (
            "import socket; socket.create_connection(('1.1.1.1', 80), timeout=2)",
            {},
            ExitReason.ERROR,
            "network access is blocked",
        ),
        ("open('/etc/optiforge_probe', 'w')", {}, ExitReason.ERROR, "is not allowed"),
        (
            "import os, signal; os.kill(os.getppid(), signal.SIGKILL)",
            {},
            ExitReason.ERROR,
            "signalling other processes",
        ),
        ("import ctypes\nctypes.string_at(0)", {}, ExitReason.CRASHED, "Fatal Python error"),
        ("import os\nos._exit(4)", {}, ExitReason.ERROR, ""),
        ("report(objective='x')", {}, ExitReason.ERROR, "must be a number"),
    ],
    ids=[
        "loop-timeout",
        "loop-cpu",
        "memory",
        "output",
        "fork",
        "socket",
        "write-outside",
        "kill-parent",
        "segfault",
        "os-exit",
        "garbage-report",
    ],
)
def test_hostile_cases(basic_pool, code, kwargs, reason, text):
    r = basic_pool.run(code, **kwargs)
    assert r.exit_reason == reason, r
    assert text in r.stderr
    _procs.assert_clean(basic_pool)
    ok = basic_pool.run(textwrap.dedent("report(objective=1.5)"))
    assert ok.ok and ok.result.objective == 1.5
