#!/usr/bin/env python
"""Per problem of a team eval run: whether a problem-class template fired, and what it did.

Usage:
    python benchmarks/template_report.py RUN_DIR [--markdown] [--update FILE --name NAME]

Reads the run's journal (results.jsonl; the steps keep their plan, ``template``, since the
journal format of 2026-12-01) and prints, per problem, from the steps of the ``templates``
lever (``--levers templates``):

- ``template``: the template the classifier chose, or ``-`` with its reason;
- ``extraction``: ``ok``, ``failed`` (the extractor's reply was unusable or the call
  failed) or ``not used`` (no budget or time left for it), with the findings' count;
- ``attempt``: the template attempt's solve (status and objective), or why it was not built;
- ``final``: the run's answer and whether it was right (strict rule), and ``agreed``:
  whether the template attempt's objective is the run's answer.

JSON by default (a list of rows plus counts); ``--markdown`` prints a table, and
``--update FILE --name NAME`` writes it between ``<!-- template-report:NAME:start -->`` and
``<!-- template-report:NAME:end -->`` in FILE.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

_ATTEMPT = re.compile(r"^attempt \d+: (?P<rest>.*)$")
_OBJECTIVE = re.compile(r"objective (?P<v>[-+0-9.eE]+|inf|nan)")


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return False
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-9)  # steps print 6 digits


def row(record: dict) -> dict:
    """The template report of one journal line."""
    out: dict = {
        "id": record["id"],
        "template": None,
        "reason": "",
        "extraction": None,
        "findings": None,
        "attempt": None,
        "objective": None,
        "prediction": record.get("prediction"),
        "correct": (record.get("correct") or {}).get("strict_1e-6"),
        "agreed": False,
    }
    for s in record.get("steps") or []:
        if s.get("plan_id") != "template":
            continue
        summary = s.get("summary") or ""
        role = s.get("role")
        if role == "planner" and summary.startswith("template: "):
            body = summary[len("template: ") :]
            if body.startswith("none ("):
                out["reason"] = body[len("none (") : -1]
            else:
                out["template"] = body.split(":", 1)[0].strip()
                out["reason"] = body
        elif role == "extractor":
            if " not used: " in summary:
                out["extraction"] = "not used"
                out["reason"] += f"; {summary.split(' not used: ', 1)[1]}"
            else:
                out["extraction"] = "ok" if s.get("ok", True) else "failed"
                m = re.search(r"; (\d+) findings", summary)
                out["findings"] = int(m.group(1)) if m else None
        elif role == "solver":
            m = _ATTEMPT.match(summary)
            rest = m.group("rest") if m else summary
            out["attempt"] = rest.split(", critic checks", 1)[0]
            obj = _OBJECTIVE.search(rest)
            if obj and not rest.startswith("not built"):
                out["objective"] = float(obj.group("v"))
    out["agreed"] = _close(out["objective"], out["prediction"])
    return out


def report(run_dir: Path) -> dict:
    """Rows for every problem of ``run_dir`` (its latest line per id) and the counts."""
    path = run_dir / "results.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        sys.exit(f"error: cannot read {path}: {exc}")
    latest: dict[str, dict] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            sys.exit(f"error: {path}:{n} is not JSON")
        latest[rec["id"]] = rec
    rows = [row(r) for r in latest.values()]
    fired = [r for r in rows if r["template"]]
    counts = {
        "problems": len(rows),
        "classified": len(fired),
        "extracted": sum(r["extraction"] == "ok" for r in fired),
        "solved": sum(r["objective"] is not None for r in fired),
        "agreed_with_answer": sum(r["agreed"] for r in fired),
        "right_when_agreed": sum(bool(r["agreed"] and r["correct"]) for r in fired),
        "right": sum(bool(r["correct"]) for r in rows),
        "by_template": {},
    }
    for r in fired:
        counts["by_template"][r["template"]] = counts["by_template"].get(r["template"], 0) + 1
    return {"run": str(run_dir), "counts": counts, "rows": rows}


def _cell(value: object) -> str:
    text = "-" if value is None or value == "" else str(value)
    return text.replace("|", "/")[:90]


def markdown(rep: dict) -> str:
    """The report as a Markdown table with a counts line."""
    lines = [
        "| problem | template | extraction | template attempt | answer | right | agreed |",
        "|---|---|---|---|---:|---|---|",
    ]
    for r in rep["rows"]:
        tpl = r["template"] or f"- ({r['reason'][:60]})"
        ext = r["extraction"] or "-"
        if r["findings"] is not None:
            ext += f" ({r['findings']} findings)"
        pred = "-" if r["prediction"] is None else f"{r['prediction']:g}"
        lines.append(
            f"| {r['id']} | {_cell(tpl)} | {_cell(ext)} | {_cell(r['attempt'])} | {pred} | "
            f"{'yes' if r['correct'] else 'no'} | {'yes' if r['agreed'] else 'no'} |"
        )
    c = rep["counts"]
    by = ", ".join(f"{k} {v}" for k, v in sorted(c["by_template"].items())) or "none"
    lines.append("")
    lines.append(
        f"{c['classified']} of {c['problems']} problems classified ({by}); extraction usable "
        f"on {c['extracted']}, template solved on {c['solved']}, its objective was the answer "
        f"on {c['agreed_with_answer']} ({c['right_when_agreed']} right); {c['right']} right in all."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="an `optiforge eval` output directory")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("--update", type=Path, help="file whose marked report to replace")
    ap.add_argument("--name", default="templates", help="the markers' name (with --update)")
    args = ap.parse_args(argv)
    rep = report(args.run)
    if args.update:
        from eval_readme_table import update_file

        update_file(
            args.update,
            markdown(rep),
            f"<!-- template-report:{args.name}:start -->",
            f"<!-- template-report:{args.name}:end -->",
        )
    elif args.markdown:
        sys.stdout.write(markdown(rep))
    else:
        print(json.dumps(rep, indent=2))


if __name__ == "__main__":
    main()
