"""Run the speed benchmarks on two commits side by side, in one run, and compare.

    python benchmarks/side_by_side.py --base 7807700 --json
    python benchmarks/side_by_side.py --base main~5 --only trace,sandbox --rounds 5

Each benchmark script (``trace_overhead.py``, ``sandbox_throughput.py``,
``llm_throughput.py``) runs from each tree's own checkout (a temporary ``git worktree`` of
``--base``, and this checkout), in a fresh interpreter with that tree first on
``PYTHONPATH``. Rounds alternate which tree goes first, so that load from other processes
and warm caches hit both alike. For each metric the JSON gives every round's value, the
median per tree and ``head / base`` of the medians, with a direction (``higher`` or
``lower`` is better) so that a reader can tell a regression from a gain.

Used for issue #13's constraint: a restructuring must leave these within noise of the
commit it started from.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: benchmark -> (script, extra arguments, {metric: "higher" | "lower"} is better)
BENCHMARKS: dict[str, tuple[str, list[str], dict[str, str]]] = {
    "trace": (
        "trace_overhead.py",
        ["--n", "10000", "--repeat", "3"],
        {"forward_us_per_call": "lower", "backward_s": "lower", "peak_mb": "lower"},
    ),
    "sandbox": ("sandbox_throughput.py", ["-k", "3"], {"programs_per_s": "higher"}),
    "llm": (
        "llm_throughput.py",
        ["--model", "smollm2-135m", "--requests", "8", "--max-tokens", "32", "--rounds", "2"],
        {"ratio": "higher", "optiforge_tok_s": "higher"},
    ),
}


def _git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def _last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON object in the benchmark's output")


def _run(tree: Path, script: str, args: list[str], timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run(
        [sys.executable, str(tree / "benchmarks" / script), "--json", *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{script} failed in {tree} (exit {proc.returncode}): {tail}")
    return _last_json(proc.stdout)


def _extract(out: dict, metric: str) -> float | None:
    """``metric`` at the top level or one level down (scripts nest some results)."""
    if metric in out and isinstance(out[metric], (int, float)):
        return float(out[metric])
    for v in out.values():
        if isinstance(v, dict) and isinstance(v.get(metric), (int, float)):
            return float(v[metric])
    return None


def compare(base: str, only: list[str], rounds: int, timeout: float) -> dict:
    head_commit = _git("rev-parse", "--short", "HEAD")
    base_commit = _git("rev-parse", "--short", base)
    tmp = Path(tempfile.mkdtemp(prefix="optiforge-base-"))
    base_tree = tmp / "tree"
    _git("worktree", "add", "--detach", str(base_tree), base_commit)
    trees = {"base": base_tree, "head": REPO}
    raw: dict[str, dict[str, dict[str, list[float | None]]]] = {}
    load_start = os.getloadavg()[0]
    t0 = time.time()
    try:
        for r in range(rounds):
            order = ["base", "head"] if r % 2 == 0 else ["head", "base"]
            for name in only:
                script, args, metrics = BENCHMARKS[name]
                for side in order:
                    out = _run(trees[side], script, args, timeout)
                    for m in metrics:
                        raw.setdefault(name, {}).setdefault(m, {"base": [], "head": []})
                        raw[name][m][side].append(_extract(out, m))
                    print(f"round {r + 1}/{rounds} {name} {side} done", file=sys.stderr)
    finally:
        _git("worktree", "remove", "--force", str(base_tree))
        shutil.rmtree(tmp, ignore_errors=True)
    results: dict[str, dict] = {}
    for name, per_metric in raw.items():
        for m, sides in per_metric.items():
            b = [v for v in sides["base"] if v is not None]
            h = [v for v in sides["head"] if v is not None]
            mb = statistics.median(b) if b else None
            mh = statistics.median(h) if h else None
            results[f"{name}.{m}"] = {
                "better": BENCHMARKS[name][2][m],
                "base": sides["base"],
                "head": sides["head"],
                "base_median": mb,
                "head_median": mh,
                "head_over_base": round(mh / mb, 4) if mb and mh is not None else None,
            }
    return {
        "base": base_commit,
        "head": head_commit,
        "rounds": rounds,
        "results": results,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_1min_start": round(load_start, 2),
        "load_avg_1min_end": round(os.getloadavg()[0], 2),
        "wall_s": round(time.time() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the commit to compare against (any git ref)")
    ap.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated benchmarks to run (default: all of {', '.join(BENCHMARKS)})",
    )
    ap.add_argument("--rounds", type=int, default=3, help="rounds per tree (default 3)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per benchmark run")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = sorted(set(only) - set(BENCHMARKS))
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    out = compare(args.base, only, args.rounds, args.timeout)
    if args.json:
        print(json.dumps(out))
        return
    print(f"base {out['base']}  head {out['head']}  ({out['rounds']} rounds, {out['wall_s']} s)")
    for key, r in out["results"].items():
        print(
            f"{key:32s} base {r['base_median']}  head {r['head_median']}  "
            f"head/base {r['head_over_base']}  ({r['better']} is better)"
        )


if __name__ == "__main__":
    main()
