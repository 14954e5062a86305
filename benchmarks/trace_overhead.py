"""Measure the trace engine's overhead on a chain of N bundled calls.

    python benchmarks/trace_overhead.py --n 10000 --json
    python benchmarks/trace_overhead.py --scaling --json

For each N: ``x = step(x)`` N times starting from ``node(0)``, then
``x.backward("...")``. Reports the forward time per call (microseconds, best of --repeat
runs), the backward time (seconds, best of --repeat runs), and the peak memory of one
forward + backward run measured with tracemalloc (MB, separate run, since tracemalloc slows
Python down). Targets at N=10,000: forward <= 30 us/call, backward <= 0.15 s, peak <= 10 MB,
and linear growth from 1,000 to 100,000.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
import tracemalloc

from optiforge.trace import bundle, node


@bundle
def step(x):
    """Add one to x."""
    return x + 1


def _chain(n: int):
    x = node(0)
    for _ in range(n):
        x = step(x)
    return x


def measure(n: int, repeat: int = 3) -> dict:
    """Time forward and backward for a chain of ``n`` bundled calls; measure peak memory.

    Wall-clock times are the headline figures; CPU times of this process are reported too,
    because on a shared machine other processes inflate wall-clock time but not CPU time.
    """
    fwd = bwd = fwd_cpu = bwd_cpu = float("inf")
    for _ in range(repeat):
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        x = _chain(n)
        c1, t1 = time.process_time(), time.perf_counter()
        x.backward("The output should be larger.")
        c2, t2 = time.process_time(), time.perf_counter()
        assert x.value == n
        fwd, bwd = min(fwd, t1 - t0), min(bwd, t2 - t1)
        fwd_cpu, bwd_cpu = min(fwd_cpu, c1 - c0), min(bwd_cpu, c2 - c1)
        del x
    gc.collect()
    tracemalloc.start()
    x = _chain(n)
    x.backward("The output should be larger.")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del x
    return {
        "n": n,
        "forward_us_per_call": round(fwd / n * 1e6, 3),
        "backward_s": round(bwd, 5),
        "peak_mb": round(peak / 2**20, 3),
        "forward_cpu_us_per_call": round(fwd_cpu / n * 1e6, 3),
        "backward_cpu_s": round(bwd_cpu, 5),
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b > 0 else None


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=10_000, help="chain length (default 10000)")
    ap.add_argument("--repeat", type=int, default=3, help="timing runs per size; best is kept")
    ap.add_argument("--scaling", action="store_true", help="run N = 1,000 / 10,000 / 100,000")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))  # prove no recursion is needed
    env = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    if args.scaling:
        runs = [measure(n, args.repeat) for n in (1_000, 10_000, 100_000)]
        base = runs[0]
        growth = {
            f"{r['n']}/{base['n']}": {
                "size_ratio": r["n"] / base["n"],
                "forward_ratio": _ratio(
                    r["forward_us_per_call"] * r["n"], base["forward_us_per_call"] * base["n"]
                ),
                "backward_ratio": _ratio(r["backward_s"], base["backward_s"]),
                "forward_cpu_ratio": _ratio(
                    r["forward_cpu_us_per_call"] * r["n"],
                    base["forward_cpu_us_per_call"] * base["n"],
                ),
                "backward_cpu_ratio": _ratio(r["backward_cpu_s"], base["backward_cpu_s"]),
                "peak_ratio": _ratio(r["peak_mb"], base["peak_mb"]),
            }
            for r in runs[1:]
        }
        out = {"runs": runs, "growth": growth, **env}
    else:
        out = {**measure(args.n, args.repeat), **env}
    if args.json:
        print(json.dumps(out))
    else:
        for r in out.get("runs", [out]):
            print(
                f"N={r['n']:>7}: forward {r['forward_us_per_call']:.2f} us/call "
                f"(cpu {r['forward_cpu_us_per_call']:.2f}), backward {r['backward_s']:.4f} s "
                f"(cpu {r['backward_cpu_s']:.4f}), peak {r['peak_mb']:.2f} MB"
            )
        if "growth" in out:
            for k, g in out["growth"].items():
                print(
                    f"  {k} (size x{g['size_ratio']:.0f}): forward x{g['forward_ratio']} "
                    f"(cpu x{g['forward_cpu_ratio']}), backward x{g['backward_ratio']} "
                    f"(cpu x{g['backward_cpu_ratio']}), peak x{g['peak_ratio']}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
