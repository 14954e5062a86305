#!/usr/bin/env python
"""Render the README results table from eval runs, so README numbers are generated.

Usage:
    python benchmarks/eval_readme_table.py RUN_DIR_OR_SUMMARY_JSON [...]
    python benchmarks/eval_readme_table.py runs/* --update README.md
    python benchmarks/eval_readme_table.py A B --compare DIRECT_DIR:TEAM_DIR [...]

Each argument is an `optiforge eval` output directory (its summary.json is used) or a
summary.json file. Rows come out in argument order. With --update FILE, the table replaces
the text between the markers
    <!-- eval-table:start -->
    <!-- eval-table:end -->
in FILE (the markers must exist); otherwise the table is printed. Each --compare OLD:NEW
adds a line under the table with the problems NEW gained and lost against OLD on the
problems both scored, and McNemar's exact p-value (optiforge.evals.report.compare_runs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

START, END = "<!-- eval-table:start -->", "<!-- eval-table:end -->"


def _load(arg: str) -> dict:
    path = Path(arg)
    if path.is_dir():
        path = path / "summary.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        sys.exit(f"error: cannot read {path}: {exc}")


def _pct(acc: dict) -> str:
    a = acc.get("accuracy")
    return "-" if a is None else f"{100 * a:.1f}% ({acc['correct']}/{acc['scored']})"


def _cache_hits(summary: dict) -> str:
    """Replies served from the LLM cache (not counted in calls, tokens or time)."""
    hits = sum(int(u.get("cache_hits") or 0) for u in summary.get("usage") or [])
    return str(hits)


def render_table(summaries: list[dict]) -> str:
    """Markdown table: one row per run."""
    head = (
        "| dataset | agent | model | problems | accuracy (1e-6) | rel 1e-4 | ORLM 5% | "
        "ran | tokens / problem | calls / problem | cached replies | s / problem | wall time |"
    )
    lines = [head, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summaries:
        acc = s["accuracy"]
        rate = s.get("execution_rate")
        partial = "" if s.get("complete", True) else " (partial)"
        sample = (s.get("filters") or {}).get("sample")
        dataset = s["dataset"] + (f" `{sample}`" if sample else "")
        field = s.get("answer_field")
        if field and field != "answer":
            dataset += f" [{field}]"
        lines.append(
            f"| {dataset} | {s.get('agent') or '-'} | {s.get('model') or '-'} | "
            f"{s['finished']}{partial} | {_pct(acc['strict_1e-6'])} | {_pct(acc['rel_1e-4'])} | "
            f"{_pct(acc['orlm_round_5pct'])} | {'-' if rate is None else f'{100 * rate:.0f}%'} | "
            f"{s['tokens']['mean']:.0f} | {s['calls']['mean']:.1f} | {_cache_hits(s)} | "
            f"{s['time_per_problem_s']['mean']:.1f} | {s['wall_time_s'] / 60:.1f} min |"
        )
    return "\n".join(lines) + "\n"


def render_comparison(old: str, new: str) -> str:
    """One Markdown line: NEW against OLD on their common problems."""
    from optiforge.evals.report import compare_runs

    c = compare_runs(old, new)
    a, b = c["a"], c["b"]
    n = c["common"]
    return (
        f"- {b['dataset']}: {b['agent']} {b['correct']}/{n} against {a['agent']} "
        f"{a['correct']}/{n} on the same problems; gained {len(c['gained'])}, lost "
        f"{len(c['lost'])} (McNemar exact p = {c['p_value']:.2g}); cost per problem "
        f"{b['calls_mean']:.1f} vs {a['calls_mean']:.1f} calls, {b['tokens_mean']:.0f} vs "
        f"{a['tokens_mean']:.0f} tokens, {b['seconds_mean']:.0f} vs {a['seconds_mean']:.0f} s\n"
    )


def update_file(path: Path, table: str) -> None:
    """Replace the text between the eval-table markers in ``path`` with ``table``."""
    text = path.read_text(encoding="utf-8")
    a, b = text.find(START), text.find(END)
    if a < 0 or b < a:
        sys.exit(f"error: {path} has no {START} ... {END} markers")
    path.write_text(text[: a + len(START)] + "\n" + table + text[b:], encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="eval output dirs or summary.json files")
    parser.add_argument("--update", type=Path, help="file whose marked table to replace")
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="OLD:NEW",
        help="add gained/lost/McNemar for run NEW against run OLD (repeatable)",
    )
    args = parser.parse_args(argv)
    table = render_table([_load(a) for a in args.runs])
    if args.compare:
        table += "\n"
        for pair in args.compare:
            old, sep, new = pair.partition(":")
            if not sep or not old or not new:
                sys.exit(f"error: --compare wants OLD_DIR:NEW_DIR, got {pair!r}")
            table += render_comparison(old, new)
    if args.update:
        update_file(args.update, table)
    else:
        sys.stdout.write(table)


if __name__ == "__main__":
    main()
