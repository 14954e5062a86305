"""``optiforge report``: regenerate and print an eval run's report, or compare two runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from optiforge.cli.app import app


@app.command("report")
def report_command(
    run_dir: Path = typer.Argument(..., help="Output directory of an `optiforge eval` run."),
    compare: Path | None = typer.Option(
        None,
        "--compare",
        help="Baseline run to compare against: problems RUN_DIR gained and lost, McNemar test.",
    ),
    rule: str | None = typer.Option(None, "--rule", help="Scoring rule for the comparison."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Rewrite summary.json, report.md and report.html from the journal and print a summary."""
    from rich.console import Console

    from optiforge.evals.report import compare_runs, write_reports
    from optiforge.evals.scoring import DEFAULT_RULE

    console = Console()
    summary = write_reports(run_dir)
    rule = rule or DEFAULT_RULE
    if compare is not None:
        write_reports(compare)
        cmp = compare_runs(compare, run_dir, rule)
        if as_json:
            typer.echo(json.dumps(cmp, indent=2))
        else:
            _print_comparison(console, cmp, run_dir, compare, rule)
        return
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    _print_summary(console, summary, run_dir)


def _print_comparison(
    console: Any, cmp: dict[str, Any], run_dir: Path, baseline: Path, rule: str
) -> None:
    """A table of the two runs, the problems this run gained and lost, McNemar's test."""
    from rich.table import Table

    a, b, n = cmp["a"], cmp["b"], cmp["common"]
    t = Table(title=f"{run_dir} vs baseline {baseline} ({rule}, {n} common scored problems)")
    for col in ("", "baseline", "this run"):
        t.add_column(col)
    t.add_row("agent", str(a["agent"]), str(b["agent"]))
    t.add_row("model", str(a["model"]), str(b["model"]))
    t.add_row("answer field", str(a["answer_field"]), str(b["answer_field"]))
    for key, label in (
        ("correct", "correct"),
        ("tokens_mean", "tokens / problem"),
        ("calls_mean", "calls / problem"),
        ("seconds_mean", "s / problem"),
    ):
        t.add_row(label, f"{a[key]:g}", f"{b[key]:g}")
    if n:
        t.add_row("accuracy", f"{100 * a['correct'] / n:.1f}%", f"{100 * b['correct'] / n:.1f}%")
    console.print(t)
    console.print(
        f"gained {len(cmp['gained'])} (wrong in baseline, right now): "
        f"{', '.join(cmp['gained']) or '-'}"
    )
    console.print(
        f"lost {len(cmp['lost'])} (right in baseline, wrong now): {', '.join(cmp['lost']) or '-'}"
    )
    verdict = "significant" if cmp["significant_at_0.05"] else "not significant"
    console.print(
        f"McNemar exact test: p = {cmp['p_value']:.4g} ({verdict} at 0.05); "
        f"both right {cmp['both_correct']}, both wrong {cmp['neither_correct']}"
    )
    if cmp["only_in_a"] or cmp["only_in_b"]:
        console.print(
            f"[yellow]not compared:[/] {len(cmp['only_in_a'])} only in the baseline, "
            f"{len(cmp['only_in_b'])} only in this run"
        )


def _print_summary(console: Any, summary: dict[str, Any], run_dir: Path) -> None:
    """Accuracy per rule, execution rate, cost and failure classes of one run."""
    from rich.table import Table

    d = summary["default_rule"]
    t = Table(
        title=f"{summary['dataset']} / {summary['agent']} / {summary.get('model')} "
        f"(answer field {summary['answer_field']!r}; {summary['finished']} of "
        f"{summary['planned']} problems)"
    )
    t.add_column("rule")
    t.add_column("correct", justify="right")
    t.add_column("accuracy", justify="right")
    for r, a in summary["accuracy"].items():
        pct = "-" if a["accuracy"] is None else f"{100 * a['accuracy']:.1f}%"
        t.add_row(r + (" (default)" if r == d else ""), f"{a['correct']}/{a['scored']}", pct)
    console.print(t)
    rate = summary["execution_rate"]
    console.print(
        f"execution rate {'-' if rate is None else f'{100 * rate:.1f}%'}; tokens "
        f"{int(summary['tokens']['total'])} total ({summary['tokens']['mean']:.0f}/problem); "
        f"calls {int(summary['calls']['total'])}; wall {summary['wall_time_s']:.1f} s"
    )
    if summary["failure_classes"]:
        console.print(
            "failures: " + ", ".join(f"{k} {v}" for k, v in summary["failure_classes"].items())
        )
    console.print(f"report: {Path(run_dir) / 'report.html'}")
