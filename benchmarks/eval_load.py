"""Load: many problems in flight against one embedded llama.cpp server with few slots.

    python benchmarks/eval_load.py                    # 16 problems, 4 slots, SmolLM2
    python benchmarks/eval_load.py --problems 16 --slots 4 --max-tokens 48 --model smollm2-135m

Steps, all in this process (the embedded server runs in it, so its RSS is the server's):

1. ``alone``: one request at a time (the latency a request has with the server to itself);
   ``batch``: ``slots`` requests at once (every slot busy, nothing queued).
2. The per-request timeout is set to ``timeout_factor`` x the slowest ``batch`` request: a
   request that the server works on (not one that waits) finishes well inside it.
3. ``run_eval`` runs ``problems`` problems at once (one request each), twice:
   ``client_queue`` - the client sends at most ``slots`` requests (what optiforge does for
   the embedded server and for llama.cpp servers that report their slots), the rest wait in
   the client; ``server_queue`` - all requests are sent at once and wait at the server,
   where their HTTP timeout keeps running.

Prints JSON: request latencies alone and with every slot busy, then per mode the failures
(a request timeout is journalled as llm_error; retries are off so that each shows), the
problem latencies (queueing included), wall time and RSS (baseline after loading, peak
during each run; sampled every 50 ms from /proc/self/status).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import tempfile
import threading
import time
from pathlib import Path


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakRSS:
    """Samples this process's RSS in a thread while the block runs."""

    def __enter__(self) -> PeakRSS:
        self.peak = _rss_mb()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def _messages(i: int) -> str:
    return f"Write a short paragraph about the number {i}."


async def _timed(llm, i: int, max_tokens: int) -> float:
    t0 = time.perf_counter()
    await llm.achat(_messages(i), max_tokens=max_tokens, temperature=0.0, seed=1)
    return time.perf_counter() - t0


async def _mode(settings, base_url, args, timeout: float, cap: bool, out_dir: Path) -> dict:
    from optiforge.datasets.problem import Problem
    from optiforge.evals import read_journal, run_eval
    from optiforge.llm import LLM
    from optiforge.llm.usage import usage_scope

    llm = LLM(
        model=settings.model,
        base_url=base_url,
        cache=False,
        concurrency=args.problems,
        timeout=timeout,
        max_retries=0,
        settings=settings,
    )
    if cap:
        llm.limit_in_flight(args.slots)
    latencies: list[float] = []

    async def agent(problem):
        from types import SimpleNamespace

        latencies.append(await _timed(llm, int(problem.id[1:]), args.max_tokens))
        return SimpleNamespace(answer=None)

    problems = [
        Problem(id=f"p{i}", dataset="load", text=_messages(i), answer=1.0)
        for i in range(args.problems)
    ]
    t0 = time.perf_counter()
    with PeakRSS() as rss:
        await run_eval(
            problems,
            agent,
            out_dir,
            concurrency=args.problems,
            max_consecutive_failures=0,
            write_report=False,
            usage=lambda: llm.usage.snapshot().model_dump(),
            usage_scope=usage_scope,
        )
    wall = time.perf_counter() - t0
    recs = read_journal(out_dir).records
    await llm.aclose()
    failures: dict[str, int] = {}
    for r in recs:
        if r.failure_class in ("llm_error", "timeout", "agent_crash"):
            failures[r.failure_class] = failures.get(r.failure_class, 0) + 1
    return {
        "requests_in_flight_max": llm.max_in_flight,
        "journalled": len(recs),
        "failures": failures,
        "timed_out_requests": sum(1 for r in recs if r.error and "did not answer" in r.error),
        "wall_s": round(wall, 2),
        "problem_latency_max_s": round(max(latencies), 2) if latencies else None,
        "problem_latency_mean_s": (
            round(sum(latencies) / len(latencies), 2) if latencies else None
        ),
        "peak_rss_mb": round(rss.peak, 1),
    }


async def main_async(args) -> dict:
    from optiforge.config import load_settings
    from optiforge.llm import LLM
    from optiforge.llm.serving.local import ensure_local_server

    settings = dataclasses.replace(
        load_settings(), model=args.model, base_url=None, local_parallel=args.slots
    )
    if args.threads:
        settings = dataclasses.replace(settings, local_threads=args.threads)
    server = ensure_local_server(args.model, settings)
    server.check_completion()
    base_rss = _rss_mb()
    probe = LLM(
        model=args.model,
        base_url=server.base_url,
        cache=False,
        concurrency=args.slots,
        settings=settings,
    )
    alone = [await _timed(probe, 1000 + i, args.max_tokens) for i in range(3)]
    batch = await asyncio.gather(
        *(_timed(probe, 2000 + i, args.max_tokens) for i in range(args.slots))
    )
    await probe.aclose()
    timeout = args.timeout_factor * max(batch)
    result = {
        "model": args.model,
        "slots": server.n_parallel,
        "threads": server.threads,
        "problems": args.problems,
        "max_tokens": args.max_tokens,
        "alone_latency_s": [round(x, 2) for x in alone],
        "batch_latency_max_s": round(max(batch), 2),
        "request_timeout_s": round(timeout, 2),
        "baseline_rss_mb": round(base_rss, 1),
    }
    with tempfile.TemporaryDirectory() as tmp:
        result["client_queue"] = await _mode(
            settings, server.base_url, args, timeout, True, Path(tmp) / "a"
        )
        result["server_queue"] = await _mode(
            settings, server.base_url, args, timeout, False, Path(tmp) / "b"
        )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=None, help="server threads (default: all)")
    ap.add_argument(
        "--timeout-factor",
        type=float,
        default=2.0,
        help="request timeout = this x the slowest request with every slot busy",
    )
    args = ap.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
