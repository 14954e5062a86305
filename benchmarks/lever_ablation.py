#!/usr/bin/env python
"""The accuracy levers' ablation (issue #12): which runs to make, and the table from them.

Usage:
    python benchmarks/lever_ablation.py plan FULL_RUN [--out-prefix DIR]
    python benchmarks/lever_ablation.py table FULL_RUN BASE_RUN [ABLATION_RUN ...] [--update FILE]

FULL_RUN is an ``optiforge eval`` run with several levers on, BASE_RUN the same problems
with none (the defaults). Each journal line of FULL_RUN lists the levers that changed
something on its problem, so a lever can only have mattered where it fired:

- ``plan`` prints one ``optiforge eval`` command per lever that fired: FULL_RUN's settings
  with that lever off, on the problems where it fired (``--ids``), into
  ``DIR/<name>-minus-<lever>``. Run them one at a time on a quiet machine.
- ``table`` renders a Markdown table with one row per ablation run (its run.json says which
  lever it leaves out): the problems where the lever fired, and on those the accuracy with
  every lever, without this one, and with none, with the calls per problem of each. The
  last column is the problems the lever won (right with it, wrong without) and lost. With
  ``--update FILE`` the table replaces the text between ``<!-- ablation:start -->`` and
  ``<!-- ablation:end -->`` in FILE.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from optiforge.evals import read_journal
from optiforge.evals.journal import read_meta

START, END = "<!-- ablation:start -->", "<!-- ablation:end -->"
RULE = "strict_1e-6"


def _records(run: Path) -> dict:
    try:
        return {r.id: r for r in read_journal(run).latest().values() if r.scored}
    except Exception as exc:  # a missing or unreadable run directory
        sys.exit(f"error: cannot read the run in {run}: {exc}")


def _meta(run: Path):
    meta = read_meta(run)
    if meta is None:
        sys.exit(f"error: {run} has no run.json")
    return meta


def _on(meta) -> list[str]:
    return [k for k, v in (meta.levers or {}).items() if v]


def fired_ids(run: Path) -> dict[str, list[str]]:
    """Lever -> the problems of ``run`` where it fired, in journal order."""
    out: dict[str, list[str]] = {}
    for rid, rec in _records(run).items():
        for lever in rec.levers:
            out.setdefault(lever, []).append(rid)
    return out


def plan(full: Path, out_prefix: Path) -> str:
    """One eval command per lever that fired in ``full``."""
    meta = _meta(full)
    on = _on(meta)
    if not on:
        sys.exit(f"error: {full} ran with no lever on; nothing to ablate")
    lines = []
    for lever, ids in fired_ids(full).items():
        levers = ",".join(x for x in on if x != lever) or "none"
        argv = ["optiforge", "eval", meta.dataset, "--agent", meta.agent]
        if meta.model:
            argv += ["--model", meta.model]
        if meta.base_url:
            argv += ["--base-url", meta.base_url]
        if meta.samples:
            argv += ["--samples", str(meta.samples)]
        if meta.prompts:
            argv += ["--prompts", meta.prompts["file"]]
        if meta.experience and lever != "experience":
            argv += ["--experience-library", meta.experience["file"]]
        argv += ["--levers", levers, "--ids", ",".join(ids)]
        argv += ["--out", str(out_prefix / f"{full.name}-minus-{lever}")]
        lines.append(f"# {lever}: fired on {len(ids)} problem(s)\n{shlex.join(argv)}")
    lines.append(
        "# Run them at the full run's commit (its run.json sessions record it), with its\n"
        "# --timeout, -c and --no-cache; the full run's command was:\n"
        f"# {meta.command or ''}"
    )
    return "\n".join(lines) + "\n"


def _acc(recs: dict, ids: list[str]) -> str:
    got = [i for i in ids if i in recs]
    if not got:
        return "-"
    right = sum(1 for i in got if recs[i].correct.get(RULE))
    calls = sum(recs[i].calls for i in got) / len(got)
    return f"{right}/{len(got)} ({calls:.1f} calls)"


def table(full: Path, base: Path, ablations: list[Path]) -> str:
    """The ablation table (see the module docs)."""
    full_meta, full_recs, base_recs = _meta(full), _records(full), _records(base)
    on = set(_on(full_meta))
    fired = fired_ids(full)
    lines = [
        "| lever | fired on | all levers | all but this one | none | won / lost by the lever |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for run in ablations:
        left_out = sorted(on - set(_on(_meta(run))))
        if len(left_out) != 1:
            sys.exit(f"error: {run} must leave out exactly one of {full}'s levers")
        lever = left_out[0]
        ids = fired.get(lever, [])
        recs = _records(run)
        common = [i for i in ids if i in recs]
        won = [
            i for i in common if full_recs[i].correct.get(RULE) and not recs[i].correct.get(RULE)
        ]
        lost = [
            i for i in common if recs[i].correct.get(RULE) and not full_recs[i].correct.get(RULE)
        ]
        lines.append(
            f"| {lever} | {len(ids)} | {_acc(full_recs, ids)} | {_acc(recs, ids)} | "
            f"{_acc(base_recs, ids)} | {len(won)} / {len(lost)}"
            + (f" ({', '.join(won + lost)})" if won or lost else "")
            + " |"
        )
    both = [i for i in full_recs if i in base_recs]
    lines.append(
        f"| (all levers, every problem) | {len(both)} | {_acc(full_recs, both)} | - | "
        f"{_acc(base_recs, both)} | |"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan", help="print the ablation runs to make")
    p.add_argument("full", type=Path)
    p.add_argument("--out-prefix", type=Path, default=Path("runs"))
    t = sub.add_parser("table", help="render the ablation table")
    t.add_argument("full", type=Path)
    t.add_argument("base", type=Path)
    t.add_argument("ablations", type=Path, nargs="*")
    t.add_argument("--update", type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "plan":
        sys.stdout.write(plan(args.full, args.out_prefix))
        return
    text = table(args.full, args.base, args.ablations)
    if args.update:
        from eval_readme_table import update_file  # beside this script: one marker rewriter

        update_file(args.update, text, START, END)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
