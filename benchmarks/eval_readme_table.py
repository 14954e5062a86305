#!/usr/bin/env python
"""Render the README results table from eval runs, so README numbers are generated.

Usage:
    python benchmarks/eval_readme_table.py RUN_DIR_OR_SUMMARY_JSON [...]
    python benchmarks/eval_readme_table.py runs/* --update README.md

Each argument is an `optiforge eval` output directory (its summary.json is used) or a
summary.json file. Rows come out in argument order. With --update FILE, the table replaces
the text between the markers
    <!-- eval-table:start -->
    <!-- eval-table:end -->
in FILE (the markers must exist); otherwise the table is printed.
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


def render_table(summaries: list[dict]) -> str:
    """Markdown table: one row per run."""
    head = (
        "| dataset | agent | model | problems | accuracy (1e-6) | rel 1e-4 | ORLM 5% | "
        "ran | tokens / problem | calls / problem | s / problem | wall time |"
    )
    lines = [head, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
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
            f"{s['tokens']['mean']:.0f} | {s['calls']['mean']:.1f} | "
            f"{s['time_per_problem_s']['mean']:.1f} | {s['wall_time_s'] / 60:.1f} min |"
        )
    return "\n".join(lines) + "\n"


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
    args = parser.parse_args(argv)
    table = render_table([_load(a) for a in args.runs])
    if args.update:
        update_file(args.update, table)
    else:
        sys.stdout.write(table)


if __name__ == "__main__":
    main()
