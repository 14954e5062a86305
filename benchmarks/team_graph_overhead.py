"""Measure what recording a team run as a trace graph costs, with a scripted model.

    python benchmarks/team_graph_overhead.py --runs 200 --json

Each run solves the printers problem with the modelling team and a scripted model (three
formulations that agree, so three real HiGHS solves and the critic's checks per run; no
LLM time). Modes: ``plain`` is :func:`optiforge.agents.asolve` (nothing recorded, what
``optiforge solve`` and ``optiforge eval`` do), ``graph`` is ``asolve_graph`` (every step
recorded, what ``--save-graph`` and ``tune`` do). Modes alternate run by run so that load
from other processes hits both alike. Reports wall-clock and CPU seconds per run (median
and mean) and the graph's size. ``graph`` is skipped on a checkout without
``asolve_graph``, so the same script measures the code before the graph existed:

    PYTHONPATH=/path/to/older/checkout python benchmarks/team_graph_overhead.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time

PRINTERS = (
    "An office supply company makes color printers and black and white printers. The color "
    "printer team can produce at most 20 color printers per day while the black and white "
    "printer team can produce at most 30 per day. The paper tray machine can make at most 35 "
    "printers of either type each day. Color printers generate a profit of $200 per printer "
    "while black and white printers generate a profit of $70 per printer. How many of each "
    "printer should be made to maximize the company's profit?"
)


def _draft() -> str:
    var = {"units": "printers", "domain": "integer"}
    return json.dumps(
        {
            "variables": [
                {"name": "color", "description": "number of color printers", **var},
                {"name": "bw", "description": "number of black and white printers", **var},
            ],
            "objective": {"sense": "maximize", "expression": "200*color + 70*bw"},
            "constraints": [
                {"source": "", "expression": e}
                for e in ("color <= 20", "bw <= 30", "color + bw <= 35")
            ],
        }
    )


async def _one(mode: str, reply: str) -> tuple[float, float, int]:
    from optiforge.agents.team import asolve
    from optiforge.llm.testing import ScriptedLLM

    llm = ScriptedLLM(reply)
    c0, t0 = time.process_time(), time.perf_counter()
    if mode == "plain":
        sol = await asolve(PRINTERS, llm=llm, samples=3)
        nodes = 0
    else:
        from optiforge.agents.team import asolve_graph
        from optiforge.trace import topological_order

        out = await asolve_graph(PRINTERS, llm=llm, samples=3)
        sol = out.value
        nodes = len(topological_order(out))
    c1, t1 = time.process_time(), time.perf_counter()
    if sol.answer is None or abs(sol.answer - 5050) > 1e-6:
        raise SystemExit(f"error: the {mode} run answered {sol.answer}, expected 5050")
    return t1 - t0, c1 - c0, nodes


def _stats(xs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(xs), 5), "mean": round(statistics.fmean(xs), 5)}


async def measure(runs: int, warmup: int) -> dict:
    """Alternate plain and graph runs; per-run wall and CPU seconds for each mode."""
    import optiforge.agents.team as team

    modes = ["plain"] + (["graph"] if hasattr(team, "asolve_graph") else [])
    reply = _draft()
    for _ in range(warmup):
        for m in modes:
            await _one(m, reply)
    wall: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    nodes = 0
    for i in range(runs):
        for m in modes if i % 2 == 0 else modes[::-1]:
            w, c, n = await _one(m, reply)
            wall[m].append(w)
            cpu[m].append(c)
            nodes = max(nodes, n)
    out = {m: {"wall_s_per_run": _stats(wall[m]), "cpu_s_per_run": _stats(cpu[m])} for m in modes}
    if "graph" in out:
        out["graph"]["nodes_per_run"] = nodes
        out["graph_over_plain_cpu_median"] = round(
            statistics.median(cpu["graph"]) / statistics.median(cpu["plain"]), 3
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200, help="runs per mode (default 200)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed runs per mode first")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    args = ap.parse_args(argv)
    import optiforge

    res = {
        "benchmark": "team_graph_overhead",
        "runs": args.runs,
        "optiforge": os.path.dirname(optiforge.__file__),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        **asyncio.run(measure(args.runs, args.warmup)),
    }
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        for k, v in res.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
