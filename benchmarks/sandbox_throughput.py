"""Sandbox throughput: the 20 gold formulations as Pyomo programs, run K times.

Prints the rates measured in the same run:

- ``programs_per_s``: through a warm :class:`SandboxPool` of the default size (two workers
  per core), with as many programs in flight as workers, as the user running this;
- ``unprivileged_programs_per_s``: the same as uid 65534 when this runs as root (through
  ``tests/solvers/as_nobody.py``), where the isolation comes from an unprivileged user
  namespace; ``unprivileged_isolation`` says which layers it had;
- ``naive_programs_per_s``: a fresh ``python program.py`` per program (same concurrency);
- ``in_process_programs_per_s``: a plain ``exec`` in this process, one at a time, no
  isolation.

Every sandboxed result is checked against the expected optimum, so speed never comes from
skipping work.

Usage: ``python benchmarks/sandbox_throughput.py [--json] [-k 5] [--workers N] [--naive 10]
[--no-unprivileged]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _gold_programs() -> list[tuple[str, str, float]]:
    """(id, Pyomo program, expected objective) for each gold record, as MILP."""
    import importlib.util

    from optiforge.solvers import ir_to_pyomo_code

    spec = importlib.util.spec_from_file_location("solvers_gold", ROOT / "tests/solvers/gold.py")
    gold = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gold)  # type: ignore[union-attr]
    out = []
    for rec in gold.load_gold():
        ir = gold.gold_to_ir(rec, integer=True)
        out.append((rec["id"], ir_to_pyomo_code(ir), rec["expected_objective_integer"]))
    return out


def _close(a: float | None, b: float) -> bool:
    return a is not None and abs(a - b) / (abs(b) + 1) < 1e-6


def bench_pool(programs, k: int, workers: int) -> dict:
    from optiforge.solvers import SandboxPool

    t0 = time.perf_counter()
    with SandboxPool(size=workers) as pool:
        pool.warm_up()
        start_s = time.perf_counter() - t0
        jobs = [p for _ in range(k) for p in programs]
        t1 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as ex:
            results = list(ex.map(lambda p: (p, pool.run(p[1], timeout=60)), jobs))
        elapsed = time.perf_counter() - t1
        isolation = results[0][1].isolation if results else ""
    wrong = [
        p[0] for p, r in results if not (r.result is not None and _close(r.result.objective, p[2]))
    ]
    return {
        "programs_per_s": len(jobs) / elapsed,
        "programs": len(jobs),
        "pool_start_s": start_s,
        "wrong": wrong,
        "isolation": isolation,
    }


def bench_unprivileged(programs, k: int, workers: int) -> dict:
    """``bench_pool`` again as uid 65534, in a subprocess (root only)."""
    import shutil

    home = tempfile.mkdtemp(prefix="optiforge-bench-")
    try:
        os.chown(home, 65534, 65534)
        data = Path(home) / "programs.json"
        data.write_text(json.dumps(programs))
        cmd = [
            sys.executable,
            str(ROOT / "tests/solvers/as_nobody.py"),
            home,
            "--",
            sys.executable,
            str(Path(__file__).resolve()),
            "--pool-only",
            str(data),
            "-k",
            str(k),
            "--workers",
            str(workers),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            return {"unprivileged_error": (out.stdout + out.stderr)[-2000:]}
        res = json.loads(out.stdout.strip().splitlines()[-1])
        return {f"unprivileged_{key}": v for key, v in res.items()}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def bench_naive(programs, n: int, workers: int) -> dict:
    jobs = [programs[i % len(programs)] for i in range(n)]
    prelude = (
        "def report(objective=None, status=None, variables=None, *, model=None, "
        "results=None, message=None):\n    pass\n"
    )

    def run(p) -> bool:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "program.py")
            Path(path).write_text(prelude + p[1])
            out = subprocess.run(
                [sys.executable, path], capture_output=True, text=True, cwd=d, timeout=300
            )
            return out.returncode == 0 and f"OBJECTIVE: {p[2]}" in out.stdout

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as ex:
        ok = list(ex.map(run, jobs))
    elapsed = time.perf_counter() - t0
    return {"naive_programs_per_s": n / elapsed, "naive_programs": n, "naive_ok": sum(ok)}


def bench_in_process(programs, k: int) -> dict:
    import pyomo.environ  # noqa: F401  (import cost is not part of the rate)

    reported: list[float | None] = []

    def report(
        objective=None, status=None, variables=None, *, model=None, results=None, message=None
    ):
        from optiforge.solvers.protocol import build_report

        reported.append(
            build_report(objective, status, variables, model=model, results=results)["objective"]
        )

    # One untimed pass warms Pyomo's lazy imports, as the pool's workers are warmed.
    jobs = [p for _ in range(k) for p in programs]
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        for p in programs:
            exec(compile(p[1], p[0], "exec"), {"__name__": "__main__", "report": report})
        reported.clear()
        t0 = time.perf_counter()
        for p in jobs:
            exec(compile(p[1], p[0], "exec"), {"__name__": "__main__", "report": report})
        elapsed = time.perf_counter() - t0
    ok = sum(_close(v, p[2]) for v, p in zip(reported, jobs, strict=False))
    return {"in_process_programs_per_s": len(jobs) / elapsed, "in_process_ok": ok}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("-k", type=int, default=5, help="rounds over the 20 programs (default 5)")
    ap.add_argument(
        "--workers", type=int, default=None, help="pool size (default: the pool's default)"
    )
    ap.add_argument(
        "--naive", type=int, default=10, help="programs for the naive rate (default 10)"
    )
    ap.add_argument(
        "--no-unprivileged",
        action="store_true",
        help="as root, skip the second pool measurement as uid 65534",
    )
    ap.add_argument("--pool-only", metavar="PROGRAMS_JSON", help=argparse.SUPPRESS)
    args = ap.parse_args()

    from optiforge.solvers.sandbox import default_pool_size

    if args.workers is None:
        args.workers = default_pool_size()
    if args.pool_only:  # the unprivileged half, run by bench_unprivileged
        programs = [tuple(p) for p in json.loads(Path(args.pool_only).read_text())]
        print(json.dumps(bench_pool(programs, args.k, args.workers)))
        return
    programs = _gold_programs()
    res: dict = {"cores": os.cpu_count(), "workers": args.workers, "k": args.k, "uid": os.getuid()}
    res.update(bench_pool(programs, args.k, args.workers))
    res.update(bench_in_process(programs, args.k))
    res.update(bench_naive(programs, args.naive, args.workers))
    res["pool_vs_in_process"] = res["programs_per_s"] / res["in_process_programs_per_s"]
    res["pool_vs_naive"] = res["programs_per_s"] / res["naive_programs_per_s"]
    if os.geteuid() == 0 and not args.no_unprivileged:
        res.update(bench_unprivileged(programs, args.k, args.workers))
        if "unprivileged_programs_per_s" in res:
            res["unprivileged_vs_in_process"] = (
                res["unprivileged_programs_per_s"] / res["in_process_programs_per_s"]
            )
    try:
        with open("/proc/loadavg") as f:
            res["loadavg_1m_after"] = float(f.read().split()[0])
    except OSError:
        pass
    if args.json:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()}))
    else:
        for key, v in res.items():
            print(f"{key:28s} {v:.2f}" if isinstance(v, float) else f"{key:28s} {v}")
    wrong = res["wrong"] + res.get("unprivileged_wrong", [])
    if wrong or "unprivileged_error" in res:
        sys.exit(f"wrong results from the sandbox: {wrong} {res.get('unprivileged_error', '')}")


if __name__ == "__main__":
    main()
