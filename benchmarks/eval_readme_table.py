#!/usr/bin/env python
"""Render the README results table from eval runs, so README numbers are generated.

Usage:
    python benchmarks/eval_readme_table.py RUN_DIR_OR_SUMMARY_JSON [...]
    python benchmarks/eval_readme_table.py runs/* --update README.md
    python benchmarks/eval_readme_table.py A B --compare DIRECT_DIR:TEAM_DIR [...]

    python benchmarks/eval_readme_table.py --runs DIR [...] --update RESULTS_README.md
    python benchmarks/eval_readme_table.py --deadline RUN_DIR [...] --update README.md --name long

With --deadline the table is the anytime view (issue #17): per run the code it ran (git
commit from run.json), the per-problem time limit, the problems answered, how many stopped
early and why (the agent at its deadline, for want of time for the next step, or the runner's
hard cancel), accuracy, and calls, tokens and seconds per problem (mean and max).

Each argument is an `optiforge eval` output directory (its summary.json is used) or a
summary.json file. Rows come out in argument order. With --update FILE, the table replaces
the text between the markers
    <!-- eval-table:start -->
    <!-- eval-table:end -->
in FILE (the markers must exist; with --name NAME, <!-- eval-table:NAME:start --> and
<!-- eval-table:NAME:end -->, so one file can hold several tables); otherwise the table is printed. Each --compare OLD:NEW
adds a line under the table with the problems NEW gained and lost against OLD on the
problems both scored, and McNemar's exact p-value (optiforge.evals.report.compare_runs).

With --runs, the arguments are run directories and the output is what produced them, from
each run.json alone (between <!-- runs:start --> and <!-- runs:end --> with --update): per
session the command, start and end (UTC), status, the code (git commit and dirty flag,
when run.json records it) and the server and model file; then every commit that landed in
this repository while a session ran (git log by committer time), marked "code" when it
changed files under optiforge/. A results README says no more than this about provenance.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

START, END = "<!-- eval-table:start -->", "<!-- eval-table:end -->"
RUNS_START, RUNS_END = "<!-- runs:start -->", "<!-- runs:end -->"
REPO = Path(__file__).resolve().parents[1]


def _load(arg: str) -> dict:
    """A run's summary.json, with its run.json (when beside it) under ``"_run"``."""
    path = Path(arg)
    if path.is_dir():
        path = path / "summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        sys.exit(f"error: cannot read {path}: {exc}")
    try:
        summary["_run"] = json.loads((path.parent / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary["_run"] = {}
    return summary


def _settings(summary: dict) -> str:
    """The team's settings that change its answers: the levers on, tuned prompts (the
    first 8 hex digits of their sha256) and the experience library; "-" for the defaults."""
    run = summary.get("_run") or {}
    parts = [k for k, on in (run.get("levers") or {}).items() if on]
    if run.get("prompts"):
        parts.append(f"prompts {run['prompts']['sha256'][:8]}")
    if run.get("experience"):
        parts.append(f"library {run['experience']['sha256'][:8]}")
    return ", ".join(parts) or "-"


def _pct(acc: dict) -> str:
    a = acc.get("accuracy")
    return "-" if a is None else f"{100 * a:.1f}% ({acc['correct']}/{acc['scored']})"


def _cache_hits(summary: dict) -> str:
    """Replies served from the LLM cache (not counted in calls, tokens or time), with the
    tokens they cost when first produced (runs from before those were counted: the number
    of replies alone)."""
    usage = summary.get("usage") or []
    hits = sum(int(u.get("cache_hits") or 0) for u in usage)
    if not all("cached_prompt_tokens" in u for u in usage):
        return str(hits)
    tokens = sum(
        int(u.get("cached_prompt_tokens") or 0) + int(u.get("cached_completion_tokens") or 0)
        for u in usage
    )
    return f"{hits} ({tokens} tokens)" if hits else "0"


def _dataset(summary: dict) -> tuple[str, str]:
    """The dataset cell (with its sample and a non-default answer field) and " (partial)"
    for a run that did not finish its problems."""
    sample = (summary.get("filters") or {}).get("sample")
    dataset = summary["dataset"] + (f" `{sample}`" if sample else "")
    field = summary.get("answer_field")
    if field and field != "answer":
        dataset += f" [{field}]"
    return dataset, "" if summary.get("complete", True) else " (partial)"


def render_table(summaries: list[dict]) -> str:
    """Markdown table: one row per run."""
    head = (
        "| dataset | agent | settings | model | problems | accuracy (1e-6) | rel 1e-4 | ORLM 5% | "
        "ran | tokens / problem | calls / problem | cached replies | s / problem | wall time |"
    )
    lines = [head, "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summaries:
        acc = s["accuracy"]
        rate = s.get("execution_rate")
        dataset, partial = _dataset(s)
        lines.append(
            f"| {dataset} | {s.get('agent') or '-'} | {_settings(s)} | {s.get('model') or '-'} | "
            f"{s['finished']}{partial} | {_pct(acc['strict_1e-6'])} | {_pct(acc['rel_1e-4'])} | "
            f"{_pct(acc['orlm_round_5pct'])} | {'-' if rate is None else f'{100 * rate:.0f}%'} | "
            f"{s['tokens']['mean']:.0f} | {s['calls']['mean']:.1f} | {_cache_hits(s)} | "
            f"{s['time_per_problem_s']['mean']:.1f} | {s['wall_time_s'] / 60:.1f} min |"
        )
    return "\n".join(lines) + "\n"


def _code(summary: dict) -> str:
    """The git commits the run's sessions ran (short hashes), or "-" when not recorded."""
    sessions = (summary.get("_run") or {}).get("sessions") or []
    commits = []
    for s in sessions:
        sha = ((s.get("provenance") or {}).get("git_commit") or "")[:7]
        if sha and sha not in commits:
            commits.append(sha)
    return ", ".join(f"`{c}`" for c in commits) or "-"


def _time_limit(summary: dict) -> str:
    """The sessions' per-problem time limits in seconds (``--timeout``), "-" for none."""
    run = summary.get("_run") or {}
    sessions = run.get("sessions") or []
    limits = sorted({s.get("time_limit_s") for s in sessions if s.get("time_limit_s")})
    if not limits:  # run.json from before the limit was recorded: the command has it
        m = re.search(r"--timeout[ =]([0-9.]+)", run.get("command") or "")
        limits = [float(m.group(1))] if m and float(m.group(1)) > 0 else []
    return ", ".join(f"{x:g} s" for x in limits) or "-"


def render_deadline_table(summaries: list[dict]) -> str:
    """Markdown table for runs under a per-problem deadline: what was answered in time."""
    head = (
        "| dataset | agent | code | time limit | problems | answered | stopped early | "
        "accuracy (1e-6) | calls / problem | tokens / problem | s / problem (mean, max) |"
    )
    lines = [head, "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for s in summaries:
        n = s["finished"]
        dataset, partial = _dataset(s)
        answered = s.get("answered")
        answered_cell = "-" if answered is None else f"{100 * answered / n:.0f}% ({answered}/{n})"
        stopped = dict(s.get("stopped") or {})
        # Journals from before the agent knew its deadline: the runner's cancel shows as
        # the failure class "timeout" alone.
        timeouts = (s.get("failure_classes") or {}).get("timeout", 0)
        if not stopped and timeouts:
            stopped["timeout (cancelled by the runner)"] = timeouts
        stopped_cell = ", ".join(f"{k} {v}" for k, v in stopped.items()) or "none"
        secs = s["time_per_problem_s"]
        lines.append(
            f"| {dataset} | {s.get('agent') or '-'} | {_code(s)} | {_time_limit(s)} | "
            f"{n}{partial} | {answered_cell} | {stopped_cell} | "
            f"{_pct(s['accuracy']['strict_1e-6'])} | {s['calls']['mean']:.1f} | "
            f"{s['tokens']['mean']:.0f} | {secs['mean']:.0f}, {secs['max']:.0f} |"
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


def _utc(t: float | None) -> str:
    import datetime

    if not t:
        return "-"
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _git(*args: str) -> str:
    import subprocess

    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def commits_between(start: float, end: float) -> list[dict]:
    """Commits of this repository whose committer time lies in [start, end], oldest first,
    each with the files it changed under optiforge/ (the package code)."""
    out = []
    log = _git(
        "log", "--reverse", "--format=%H %ct %s", f"--since={int(start)}", f"--until={int(end) + 1}"
    )
    for line in log.splitlines():
        sha, ct, subject = line.split(" ", 2)
        if not start <= int(ct) <= end + 1:
            continue
        files = _git("show", "--format=", "--name-only", sha).split()
        code = [f for f in files if f.startswith("optiforge/")]
        out.append({"sha": sha[:7], "time": int(ct), "subject": subject, "code_files": code})
    return out


def tip_at(t: float) -> str | None:
    """The newest commit of this branch made at or before time ``t`` (short hash)."""
    out = _git("log", "-1", "--format=%h", f"--until={int(t)}")
    return out.strip() or None


def _subject(text: str, width: int = 100) -> str:
    return text if len(text) <= width else text[: width - 1].rsplit(" ", 1)[0] + " …"


def render_runs(dirs: list[str]) -> str:
    """Markdown: what produced each run (from its run.json) and the commits made meanwhile."""
    lines = [
        "| run | session | started (UTC) | ended (UTC) | status | code | server and model |",
        "|---|---:|---|---|---|---|---|",
    ]
    notes: list[str] = []
    commands: list[str] = []
    for d in dirs:
        path = Path(d) / "run.json"
        try:
            run = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            sys.exit(f"error: cannot read {path}: {exc}")
        name = Path(d).name
        commands.append(f"- {name}: `{run.get('command') or 'not recorded'}`")
        for s in run.get("sessions") or []:
            prov = s.get("provenance") or {}
            if prov.get("git_commit"):
                code = f"`{prov['git_commit'][:7]}`" + (
                    " (dirty tree)" if prov.get("git_dirty") else ""
                )
            else:
                tip = tip_at(s.get("started_at") or 0)
                code = "not recorded (branch tip at start: " + (f"`{tip}`" if tip else "?") + ")"
            code += f", optiforge {prov.get('optiforge_version') or run.get('optiforge_version') or '?'}"
            server = prov.get("server") or {}
            mfile = prov.get("model_file") or {}
            where = server.get("kind") or f"kind not recorded ({run.get('base_url') or '-'})"
            model = run.get("model") or "-"
            if mfile.get("sha256"):
                model += f" (`{mfile.get('file')}` sha256 `{mfile['sha256'][:12]}…`)"
            lines.append(
                f"| {name} | {s['index']} | {_utc(s.get('started_at'))} | "
                f"{_utc(s.get('ended_at'))} | {s.get('status')} | {code} | {where}: {model} |"
            )
            commits = commits_between(s.get("started_at") or 0, s.get("ended_at") or 0)
            code_commits = [c for c in commits if c["code_files"]]
            if commits:
                notes.append(
                    f"- {name} (session {s['index']}): {len(commits)} commit(s) landed while it "
                    f"ran, {len(code_commits)} of them changing code:"
                )
                for c in commits:
                    kind = "code: " + ", ".join(c["code_files"]) if c["code_files"] else "no code"
                    notes.append(
                        f"  - `{c['sha']}` {_utc(c['time'])[11:]} ({kind}) {_subject(c['subject'])}"
                    )
            else:
                notes.append(f"- {name} (session {s['index']}): no commit landed while it ran.")
    return (
        "\n".join(lines)
        + "\n\nCommands as recorded:\n\n"
        + "\n".join(commands)
        + "\n\nCommits made while a session ran:\n\n"
        + "\n".join(notes)
        + "\n"
    )


def update_file(path: Path, table: str, start: str = START, end: str = END) -> None:
    """Replace the text between the markers in ``path`` with ``table``."""
    text = path.read_text(encoding="utf-8")
    a, b = text.find(start), text.find(end)
    if a < 0 or b < a:
        sys.exit(f"error: {path} has no {start} ... {end} markers")
    path.write_text(text[: a + len(start)] + "\n" + table + text[b:], encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="eval output dirs or summary.json files")
    parser.add_argument("--update", type=Path, help="file whose marked table to replace")
    parser.add_argument(
        "--name",
        help="with --update: the table between <!-- eval-table:NAME:start --> and "
        "<!-- eval-table:NAME:end --> (several tables in one file)",
    )
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="OLD:NEW",
        help="add gained/lost/McNemar for run NEW against run OLD (repeatable)",
    )
    parser.add_argument(
        "--runs",
        dest="runs_section",
        action="store_true",
        help="render what produced each run (run.json, git log) instead of the table",
    )
    parser.add_argument(
        "--deadline",
        action="store_true",
        help="the anytime table: code, time limit, answered, stopped early, accuracy, "
        "calls, tokens and seconds per problem",
    )
    args = parser.parse_args(argv)
    if args.runs_section:
        text = render_runs(args.runs)
        if args.update:
            update_file(args.update, text, RUNS_START, RUNS_END)
        else:
            sys.stdout.write(text)
        return
    render = render_deadline_table if args.deadline else render_table
    table = render([_load(a) for a in args.runs])
    if args.compare:
        table += "\n"
        for pair in args.compare:
            old, sep, new = pair.partition(":")
            if not sep or not old or not new:
                sys.exit(f"error: --compare wants OLD_DIR:NEW_DIR, got {pair!r}")
            table += render_comparison(old, new)
    if args.update:
        if args.name:
            update_file(
                args.update,
                table,
                f"<!-- eval-table:{args.name}:start -->",
                f"<!-- eval-table:{args.name}:end -->",
            )
        else:
            update_file(args.update, table)
    else:
        sys.stdout.write(table)


if __name__ == "__main__":
    main()
