"""Executor overhead: the same problems through the local and the Ray executor.

The agent is the real direct agent (:func:`optiforge.agents.asolve`, one prompt -> Pyomo
code -> one sandbox run) with a scripted instant model (:class:`ScriptedLLM` answering a
small, correct Pyomo program), so the time is the agent, the solver, the sandbox and the
executor, never a model. Each executor first runs the problems once unmeasured (each
process starts its warm sandbox pool then; reported as ``*_warmup_s``), then ``--rounds``
measured times into fresh journals (rounds alternate, so load from other processes hits both
alike); every result is checked (all problems journalled, each executed with the expected
objective).

Reported: ``local_problems_per_s`` and ``ray_problems_per_s`` (pooled over the measured
rounds), ``ratio`` = ray / local (target >= 0.8 on a 2-core machine), and, separately,
``ray_startup_s`` (``ray.init`` of a private local instance plus the workers answering).
``driver_problems_per_s`` is the runner alone: ``--driver-problems`` problems whose agent
returns a finished Solution at once, so only scoring, the fsynced journal line and the
bookkeeping are timed (what one eval driver can absorb, whatever the cluster behind it).

    python benchmarks/executor_overhead.py --json
    python benchmarks/executor_overhead.py --problems 20 --concurrency 4 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROGRAM = """```python
import pyomo.environ as pyo

m = pyo.ConcreteModel()
m.x = pyo.Var(domain=pyo.NonNegativeIntegers)
m.y = pyo.Var(domain=pyo.NonNegativeIntegers)
m.obj = pyo.Objective(expr=3 * m.x + 2 * m.y, sense=pyo.maximize)
m.c1 = pyo.Constraint(expr=m.x + m.y <= 4)
m.c2 = pyo.Constraint(expr=m.x + 3 * m.y <= 6)
res = pyo.SolverFactory('appsi_highs').solve(m)
report(model=m, results=res)
```"""
EXPECTED = 12.0

_lock = threading.Lock()
_llm = None


async def instant_agent(problem):
    """The direct agent with a scripted instant model (one per process)."""
    global _llm
    from optiforge.agents import asolve
    from optiforge.llm.testing import ScriptedLLM

    with _lock:
        if _llm is None:
            _llm = ScriptedLLM(lambda messages, **kw: PROGRAM, concurrency=64)
    return await asolve(problem.text, llm=_llm, agent="direct")


async def done_agent(problem):
    """An agent that has already finished: the driver's own cost per problem."""
    from optiforge.agents.solution import Solution, StepRecord
    from optiforge.solvers.result import SolveResult, SolveStatus

    return Solution(
        problem_text=problem.text,
        agent="done",
        answer=EXPECTED,
        result=SolveResult(status=SolveStatus.OPTIMAL, objective=EXPECTED),
        code=PROGRAM,
        steps=[StepRecord(role="direct", calls=1, prompt_tokens=500, completion_tokens=300)],
        calls=1,
        prompt_tokens=500,
        completion_tokens=300,
    )


def _driver_rate(n: int, concurrency: int, tmp: str) -> float:
    from optiforge.datasets import load_dataset
    from optiforge.evals.executor import LocalExecutor

    base = load_dataset("nl4opt")
    problems = [
        p.model_copy(update={"id": f"{p.id}-{i}"}) for i in range(n // len(base) + 1) for p in base
    ][:n]
    out = Path(tmp) / "driver"
    seconds = asyncio.run(_timed(problems, LocalExecutor(done_agent), out, concurrency))
    return n / seconds


def _check(out: Path, ids: list[str]) -> None:
    from optiforge.evals import read_journal

    recs = read_journal(out).latest()
    if sorted(recs) != sorted(ids):
        raise SystemExit(f"{out}: journal has {len(recs)} of {len(ids)} problems")
    bad = [r.id for r in recs.values() if r.prediction != EXPECTED or not r.executed]
    if bad:
        raise SystemExit(f"{out}: wrong or unexecuted results for {bad[:5]}")


async def _timed(problems, executor, out: Path, concurrency: int) -> float:
    from optiforge.evals import run_eval

    t0 = time.perf_counter()
    await run_eval(problems, None, out, executor=executor, concurrency=concurrency)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--problems", type=int, default=20, help="NL4Opt problems (default 20)")
    ap.add_argument("--concurrency", type=int, default=4, help="problems in flight (default 4)")
    ap.add_argument("--rounds", type=int, default=5, help="measured runs each (default 5)")
    ap.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray instance")
    ap.add_argument(
        "--driver-problems", type=int, default=1000, help="problems for the driver-only rate"
    )
    args = ap.parse_args()

    from optiforge.agents.spec import AgentSpec, build_agent, load_agent_fn
    from optiforge.datasets import load_dataset
    from optiforge.evals.executor import LocalExecutor, RayExecutor

    problems = load_dataset("nl4opt")[: args.problems]
    ids = [p.id for p in problems]
    agent = f"{Path(__file__).resolve()}:instant_agent"
    factory = functools.partial(build_agent, AgentSpec(agent_fn=agent))
    os.environ.setdefault("PYTHONPATH", str(ROOT))

    t0 = time.perf_counter()
    ray_ex = RayExecutor(factory, concurrency=args.concurrency, num_cpus=args.num_cpus).start()
    ray_startup = time.perf_counter() - t0
    local_ex = LocalExecutor(load_agent_fn(agent))
    times: dict[str, list[float]] = {"local": [], "ray": []}
    warmup: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, ex in (("local", local_ex), ("ray", ray_ex)):
                out = Path(tmp) / f"{name}-warmup"
                warmup[name] = asyncio.run(_timed(problems, ex, out, args.concurrency))
                _check(out, ids)
            for r in range(args.rounds):
                order = [("local", local_ex), ("ray", ray_ex)]
                if r % 2:
                    order.reverse()
                for name, ex in order:
                    out = Path(tmp) / f"{name}-{r}"
                    times[name].append(asyncio.run(_timed(problems, ex, out, args.concurrency)))
                    _check(out, ids)
            workers = ray_ex.worker_count
            driver_rate = _driver_rate(args.driver_problems, args.concurrency, tmp)
    finally:
        ray_ex.close()
        local_ex.close()
    n = len(problems) * args.rounds
    local_rate = n / sum(times["local"])
    ray_rate = n / sum(times["ray"])
    res = {
        "problems": len(problems),
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "ray_workers": workers,
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "local_s": [round(t, 3) for t in times["local"]],
        "ray_s": [round(t, 3) for t in times["ray"]],
        "local_problems_per_s": round(local_rate, 3),
        "ray_problems_per_s": round(ray_rate, 3),
        "ratio": round(ray_rate / local_rate, 3),
        "ray_startup_s": round(ray_startup, 3),
        "driver_problems_per_s": round(driver_rate, 1),
        "local_warmup_s": round(warmup["local"], 3),
        "ray_warmup_s": round(warmup["ray"], 3),
        "python": sys.version.split()[0],
    }
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:>22}: {v}")


if __name__ == "__main__":
    main()
