#!/usr/bin/env python
"""What each role's LLM calls cost, summed from ``optiforge eval`` runs' journals.

    python benchmarks/role_costs.py runs/long20-team [RUN_DIR ...] [--sample optibench-long20]

For every run directory it reads ``results.jsonl`` (the last line per problem) and sums each
problem's ``usage_by_tag`` per role (tag): requests, failed requests, prompt and completion
tokens, the prompt tokens the server took from its own prompt (KV) cache, and the server's
milliseconds of prompt processing and of generation (llama.cpp reports both; other servers
report 0, and the JSON says how many calls carried timings). Per role it prints totals and
means per answered request, so the cost of a long prompt shows where it is paid: a role
whose ``prompt_ms_per_call`` is large and whose ``server_cached_share`` is small re-sends a
long prompt the cache cannot reuse.

``--sample NAME`` (or ``--ids a,b``) keeps only those problems. ``--min-chars N`` keeps
problems whose text has at least N characters (the long ones). Output: JSON on stdout (and
``--out FILE``), with each run's ``run.json`` header (commit, model, settings) copied.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

FIELDS = (
    "calls",
    "failed_calls",
    "prompt_tokens",
    "completion_tokens",
    "server_cached_tokens",
    "prompt_ms",
    "completion_ms",
    "wall_time_s",
)


def _ids(args: argparse.Namespace) -> set[str] | None:
    if args.sample:
        from optiforge.evals.sample import load_sample

        return set(load_sample(args.sample))
    if args.ids:
        return {i.strip() for i in args.ids.split(",") if i.strip()}
    return None


def summarize(run_dir: Path, ids: set[str] | None, min_chars: int) -> dict[str, Any]:
    """Per-role sums and means over the run's problems that pass the filters."""
    from optiforge.evals.journal import read_journal, read_meta

    records = read_journal(run_dir).latest()
    kept = [
        r
        for r in records.values()
        if (ids is None or r.id in ids) and len(r.text or "") >= min_chars
    ]
    roles: dict[str, dict[str, float]] = {}
    for rec in kept:
        for tag, usage in (rec.usage_by_tag or {}).items():
            bucket = roles.setdefault(tag, {f: 0 for f in FIELDS} | {"timed_calls": 0})
            for f in FIELDS:
                bucket[f] += usage.get(f, 0) or 0
            if (usage.get("prompt_ms") or 0) > 0:
                bucket["timed_calls"] += usage.get("calls", 0) or 0
    out_roles = {}
    for tag, b in sorted(roles.items()):
        calls = b["calls"] or 0
        timed = b["timed_calls"] or 0
        out_roles[tag] = {
            **{k: round(v, 3) if isinstance(v, float) else v for k, v in b.items()},
            "prompt_tokens_per_call": round(b["prompt_tokens"] / calls, 1) if calls else None,
            "server_cached_share": (
                round(b["server_cached_tokens"] / b["prompt_tokens"], 3)
                if b["prompt_tokens"]
                else None
            ),
            "prompt_ms_per_call": round(b["prompt_ms"] / timed, 1) if timed else None,
            "completion_ms_per_call": round(b["completion_ms"] / timed, 1) if timed else None,
        }
    meta = read_meta(run_dir)
    return {
        "run": str(run_dir),
        "run_json": meta.model_dump(mode="json") if meta is not None else None,
        "problems": len(kept),
        "mean_text_chars": round(sum(len(r.text or "") for r in kept) / len(kept), 1)
        if kept
        else None,
        "roles": out_roles,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="optiforge eval output directories")
    ap.add_argument("--sample", help="keep only this shipped sample's problems")
    ap.add_argument("--ids", help="keep only these comma-separated ids")
    ap.add_argument("--min-chars", type=int, default=0, help="keep problems this long or longer")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args(argv)
    missing = [str(r) for r in args.runs if not (r / "results.jsonl").exists()]
    if missing:
        print(f"error: no results.jsonl in {', '.join(missing)}", file=sys.stderr)
        return 2
    ids = _ids(args)
    report = {"runs": [summarize(r, ids, args.min_chars) for r in args.runs]}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
