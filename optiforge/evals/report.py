"""Summaries and reports of an eval run: ``summary.json``, ``report.md``, ``report.html``.

Everything is computed from ``results.jsonl`` (the last record per id) and ``run.json``, so
``optiforge report DIR`` can regenerate the files at any time, also for a partial run.
The HTML report is self-contained: inline CSS and SVG drawn here, no scripts, no network.
"""

from __future__ import annotations

import html
import json
import math
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optiforge.evals.journal import read_journal, read_meta
from optiforge.evals.records import FAILURE_LABELS, EvalError, ResultRecord, RunMeta
from optiforge.evals.scoring import DEFAULT_RULE, RULES
from optiforge.fileio import write_text_atomic

SUMMARY_FILE = "summary.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"


# ---------------------------------------------------------------- summary


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    idx = q * (len(s) - 1)
    lo, hi = math.floor(idx), math.ceil(idx)
    return s[lo] + (s[hi] - s[lo]) * (idx - lo)


def _stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"total": 0.0, "mean": 0.0, "median": 0.0, "p90": 0.0, "max": 0.0}
    return {
        "total": round(float(sum(values)), 4),
        "mean": round(statistics.fmean(values), 4),
        "median": round(_quantile(values, 0.5), 4),
        "p90": round(_quantile(values, 0.9), 4),
        "max": round(float(max(values)), 4),
    }


def _accuracy(records: Sequence[ResultRecord]) -> dict[str, dict[str, Any]]:
    scored = [r for r in records if r.scored]
    out = {}
    for rule in RULES:
        c = sum(1 for r in scored if r.correct.get(rule))
        out[rule] = {
            "correct": c,
            "scored": len(scored),
            "accuracy": round(c / len(scored), 6) if scored else None,
        }
    return out


def summarize(records: Sequence[ResultRecord], meta: RunMeta | None = None) -> dict[str, Any]:
    """Aggregate journal records (one per problem) into the ``summary.json`` dict."""
    meta = meta or RunMeta(dataset=records[0].dataset if records else "")
    n = len(records)
    scored = [r for r in records if r.scored]
    by_cat: dict[str, list[ResultRecord]] = defaultdict(list)
    for r in records:
        by_cat[r.category or "unknown"].append(r)
    wall = meta.wall_s
    planned = len(meta.planned_ids) or n
    answer_fields = sorted({r.answer_field for r in records}) or [meta.answer_field]
    answered = sum(1 for r in records if r.prediction is not None)
    return {
        "dataset": meta.dataset,
        "answer_field": answer_fields[0] if len(answer_fields) == 1 else answer_fields,
        "agent": meta.agent,
        "model": meta.model,
        "samples": meta.samples,
        "budget": meta.budget,
        "filters": meta.filters,
        "optiforge_version": meta.optiforge_version,
        "planned": planned,
        "finished": n,
        "complete": n >= planned,
        "scored": len(scored),
        "unscored": n - len(scored),
        "ground_truth_kinds": dict(Counter(r.gt_kind for r in records)),
        "default_rule": DEFAULT_RULE,
        "rules": {k: v[1] for k, v in RULES.items()},
        "accuracy": _accuracy(records),
        "execution_rate": round(sum(1 for r in records if r.executed) / n, 6) if n else None,
        # Problems with an answer (right or wrong), and why problems stopped early: the
        # agent at its deadline ("deadline"), for want of time for the next step
        # ("time_left"), or the runner's hard cancel ("cancelled").
        "answered": answered,
        "answered_rate": round(answered / n, 6) if n else None,
        "stopped": dict(Counter(r.stopped for r in records if r.stopped).most_common()),
        "by_category": {
            cat: {"n": len(rs), "accuracy": _accuracy(rs)} for cat, rs in sorted(by_cat.items())
        },
        "tokens": {
            **_stats([float(r.tokens) for r in records]),
            "prompt_total": sum(r.prompt_tokens for r in records),
            "completion_total": sum(r.completion_tokens for r in records),
        },
        "calls": _stats([float(r.calls) for r in records]),
        # Requests without a reply, and replies from the cache with what they cost when
        # first produced: kept apart from calls and tokens above.
        "failed_calls": sum(r.failed_calls for r in records),
        "cached": {
            "calls": sum(r.cached_calls for r in records),
            "replies": sum(r.cache_hits for r in records),
            "tokens": sum(r.cached_tokens for r in records),
        },
        "time_per_problem_s": _stats([r.elapsed_s for r in records]),
        "wall_time_s": round(wall, 3),
        "throughput_per_min": round(n_session_finished(meta) / wall * 60, 3) if wall else None,
        "failure_classes": dict(
            Counter(r.failure_class for r in records if r.failure_class).most_common()
        ),
        "sessions": len(meta.sessions),
        "usage": [s.usage for s in meta.sessions if s.usage],
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def n_session_finished(meta: RunMeta) -> int:
    """Problems finished over all sessions (for throughput)."""
    return sum(s.finished for s in meta.sessions)


def load_run(out_dir: str | Path) -> tuple[RunMeta | None, list[ResultRecord]]:
    """Read ``run.json`` and the latest journal record per id, in planned order."""
    out = Path(out_dir)
    if not out.is_dir():
        raise EvalError(f"{out} is not a directory with an eval run (no such directory)")
    meta = read_meta(out)
    contents = read_journal(out)
    if meta is None and not contents.records:
        raise EvalError(f"{out} holds no eval run: results.jsonl and run.json are missing")
    latest = contents.latest()
    order = {pid: i for i, pid in enumerate(meta.planned_ids)} if meta else {}
    records = sorted(latest.values(), key=lambda r: (order.get(r.id, len(order)), r.id))
    return meta, records


def write_reports(out_dir: str | Path) -> dict[str, Any]:
    """(Re)write ``summary.json``, ``report.md`` and ``report.html``; return the summary."""
    out = Path(out_dir)
    meta, records = load_run(out)
    summary = summarize(records, meta)
    write_text_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    write_text_atomic(out / REPORT_MD, render_markdown(summary, records))
    write_text_atomic(out / REPORT_HTML, render_html(summary, records))
    return summary


# ---------------------------------------------------------------- markdown


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.6g}"


def _pred_str(r: ResultRecord) -> str:
    if r.prediction_kind == "value":
        return _num(r.prediction)
    return "infeasible" if r.prediction_kind == "infeasible" else "-"


def _gt_str(r: ResultRecord) -> str:
    if r.gt_kind == "value":
        return _num(r.gt)
    return r.gt_kind


def _mark(r: ResultRecord, rule: str = DEFAULT_RULE) -> str:
    c = r.correct.get(rule)
    return "n/a" if c is None else ("yes" if c else "no")


def render_markdown(summary: dict[str, Any], records: Sequence[ResultRecord]) -> str:
    """The Markdown report: configuration, accuracy, categories, cost, failures, problems."""
    acc = summary["accuracy"]
    d = summary["default_rule"]
    lines = [
        f"# Eval report: {summary['dataset']} ({summary['agent'] or 'agent'}"
        f"{', ' + summary['model'] if summary.get('model') else ''})",
        "",
        f"- answer field: `{summary['answer_field']}`; samples per problem: {summary['samples'] or 'agent default'}",
        f"- problems: {summary['finished']} finished of {summary['planned']} planned"
        f"{'' if summary['complete'] else ' (partial run: resume with --resume)'}; "
        f"{summary['scored']} scored, {summary['unscored']} without a usable ground truth",
        f"- answered: {summary.get('answered', 0)} of {summary['finished']} "
        f"({_pct(summary.get('answered_rate'))})"
        + (
            "; stopped early: " + ", ".join(f"{k} {v}" for k, v in summary["stopped"].items())
            if summary.get("stopped")
            else ""
        ),
        f"- accuracy ({d}): **{_pct(acc[d]['accuracy'])}** "
        f"({acc[d]['correct']}/{acc[d]['scored']}); execution rate "
        f"{_pct(summary['execution_rate'])}",
        f"- wall time {summary['wall_time_s']:.1f} s over {summary['sessions']} session(s); "
        f"time per problem mean {summary['time_per_problem_s']['mean']:.2f} s",
        "",
        "## Accuracy by rule",
        "",
        "| rule | correct | scored | accuracy | definition |",
        "|---|---:|---:|---:|---|",
    ]
    for rule, a in acc.items():
        definition = summary["rules"][rule].replace("|", "\\|")
        lines.append(
            f"| `{rule}` | {a['correct']} | {a['scored']} | {_pct(a['accuracy'])} | {definition} |"
        )
    lines += ["", "## By category", "", "| category | n | scored | correct | accuracy |"]
    lines.append("|---|---:|---:|---:|---:|")
    for cat, c in summary["by_category"].items():
        a = c["accuracy"][d]
        lines.append(
            f"| {cat} | {c['n']} | {a['scored']} | {a['correct']} | {_pct(a['accuracy'])} |"
        )
    t, calls, tp = summary["tokens"], summary["calls"], summary["time_per_problem_s"]
    lines += [
        "",
        "## Cost",
        "",
        "| | total | mean | median | p90 | max |",
        "|---|---:|---:|---:|---:|---:|",
        f"| tokens | {int(t['total'])} | {t['mean']:.0f} | {t['median']:.0f} | {t['p90']:.0f} | "
        f"{t['max']:.0f} |",
        f"| LLM calls | {int(calls['total'])} | {calls['mean']:.2f} | {calls['median']:.0f} | "
        f"{calls['p90']:.0f} | {calls['max']:.0f} |",
        f"| seconds | {tp['total']:.1f} | {tp['mean']:.2f} | {tp['median']:.2f} | "
        f"{tp['p90']:.2f} | {tp['max']:.2f} |",
        "",
        f"Prompt tokens {t['prompt_total']}, completion tokens {t['completion_total']}. "
        f"Requests without a reply: {summary.get('failed_calls', 0)}. From the cache (not in "
        f"the counts above): {summary.get('cached', {}).get('calls', 0)} requests, "
        f"{summary.get('cached', {}).get('replies', 0)} replies, "
        f"{summary.get('cached', {}).get('tokens', 0)} tokens.",
        "",
        "## Failure classes",
        "",
    ]
    if summary["failure_classes"]:
        lines += ["| class | count | meaning |", "|---|---:|---|"]
        for cls, cnt in summary["failure_classes"].items():
            lines.append(f"| {cls} | {cnt} | {FAILURE_LABELS.get(cls, '')} |")
    else:
        lines.append("None.")
    lines += [
        "",
        "## Problems",
        "",
        "| id | category | ground truth | prediction | correct | failure | tokens | calls | s |",
        "|---|---|---:|---:|---|---|---:|---:|---:|",
    ]
    for r in records:
        lines.append(
            f"| {r.id} | {r.category} | {_gt_str(r)} | {_pred_str(r)} | {_mark(r, d)} | "
            f"{r.failure_class or ''} | {r.tokens} | {r.calls} | {r.elapsed_s:.1f} |"
        )
    lines += ["", "Details (formulation, code, solver output) are in report.html.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- SVG charts

_W = 560
_BAR_H = 22
_PAD_L = 170
_COLORS = ["#3b6fb6", "#e08a2c", "#4d9a4d", "#c44e52", "#8172b2", "#937860", "#da8bc3"]


def _svg_hbars(title: str, items: Sequence[tuple[str, float, str]], max_value: float) -> str:
    """Horizontal bars: (label, value, text shown at the bar end)."""
    h = 30 + _BAR_H * max(len(items), 1) + 10
    parts = [
        f'<svg width="{_W}" height="{h}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="0" y="16" font-weight="bold">{html.escape(title)}</text>',
    ]
    if not items:
        parts.append('<text x="0" y="44" fill="#666">no data</text>')
    span = _W - _PAD_L - 110
    for i, (label, value, text) in enumerate(items):
        y = 30 + i * _BAR_H
        w = 0 if max_value <= 0 else span * value / max_value
        color = _COLORS[i % len(_COLORS)]
        parts.append(
            f'<text x="{_PAD_L - 6}" y="{y + 15}" text-anchor="end">{html.escape(label)}</text>'
            f'<rect x="{_PAD_L}" y="{y + 3}" width="{w:.1f}" height="{_BAR_H - 6}" '
            f'fill="{color}"><title>{html.escape(label)}: {html.escape(text)}</title></rect>'
            f'<text x="{_PAD_L + w + 6:.1f}" y="{y + 15}">{html.escape(text)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _svg_histogram(title: str, values: Sequence[float], unit: str, bins: int = 12) -> str:
    h, top, bottom, left = 210, 28, 40, 40
    plot_w, plot_h = _W - left - 10, h - top - bottom
    parts = [
        f'<svg width="{_W}" height="{h}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="0" y="16" font-weight="bold">{html.escape(title)}</text>',
    ]
    if not values:
        parts.append('<text x="0" y="50" fill="#666">no data</text></svg>')
        return "".join(parts)
    lo, hi = min(values), max(values)
    if hi == lo:
        hi = lo + 1
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    cmax = max(counts)
    bw = plot_w / bins
    for i, c in enumerate(counts):
        bh = plot_h * c / cmax if cmax else 0
        x, y = left + i * bw, top + plot_h - bh
        a, b = lo + i * width, lo + (i + 1) * width
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{bw - 2:.1f}" height="{bh:.1f}" '
            f'fill="#3b6fb6"><title>{a:.3g}-{b:.3g} {html.escape(unit)}: {c}</title></rect>'
        )
        if c:
            parts.append(
                f'<text x="{x + bw / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle" '
                f'font-size="11">{c}</text>'
            )
    axis_y = top + plot_h
    parts.append(
        f'<line x1="{left}" y1="{axis_y}" x2="{left + plot_w}" y2="{axis_y}" stroke="#333"/>'
        f'<text x="{left}" y="{axis_y + 16}" font-size="11">{lo:.3g}</text>'
        f'<text x="{left + plot_w}" y="{axis_y + 16}" font-size="11" text-anchor="end">'
        f"{hi:.3g}</text>"
        f'<text x="{left + plot_w / 2}" y="{axis_y + 32}" font-size="12" text-anchor="middle">'
        f"{html.escape(unit)} per problem (n = {len(values)})</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:3px 7px}
th{background:#f3f3f3}td.num{text-align:right}.yes{color:#17752a;font-weight:bold}
.no{color:#b3261e;font-weight:bold}.na{color:#888}pre{background:#f6f8fa;padding:.6em;
overflow-x:auto;white-space:pre-wrap;font-size:.85em;max-height:30em}
details{margin:.3em 0 1em 0;border-left:3px solid #ccd;padding-left:.8em}
summary{cursor:pointer}.charts{display:flex;flex-wrap:wrap;gap:1.5em}
.charts svg{font-size:12px;font-family:inherit}.kv td:first-child{color:#555}
"""


def _esc(x: Any) -> str:
    # Every journal or run field goes through here (tests/evals/test_report.py proves it
    # with a `<script>` in each field); the charts escape their labels the same way.
    return html.escape("" if x is None else str(x))


def _detail_html(r: ResultRecord, rule: str) -> str:
    c = r.correct.get(rule)
    cls = "na" if c is None else ("yes" if c else "no")
    parts = [
        f'<details id="p-{_esc(r.id)}"><summary><b>{_esc(r.id)}</b> '
        f'<span class="{cls}">{_esc(_mark(r, rule))}</span> gt {_esc(_gt_str(r))}, '
        f"predicted {_esc(_pred_str(r))}"
        f"{' (' + _esc(r.failure_class) + ')' if r.failure_class else ''}</summary>",
        '<table class="kv">',
        f"<tr><td>answer field</td><td>{_esc(r.answer_field)}</td></tr>",
        f"<tr><td>solver status</td><td>{_esc(r.solve_status)}</td></tr>",
        f"<tr><td>correct by rule</td><td>{_esc(json.dumps(r.correct))}</td></tr>",
        f"<tr><td>cost</td><td>{r.calls} calls, {r.prompt_tokens} prompt + "
        f"{r.completion_tokens} completion tokens, {r.elapsed_s:.2f} s; "
        f"{r.failed_calls} without reply; from the cache {r.cache_hits} replies "
        f"({r.cached_tokens} tokens)</td></tr>",
        "</table>",
        f"<h4>Problem</h4><pre>{_esc(r.text)}</pre>",
    ]
    if r.error:
        parts.append(f"<h4>Error</h4><pre>{_esc(r.error)}</pre>")
    if r.formulation_markdown:
        parts.append(f"<h4>Formulation</h4><pre>{_esc(r.formulation_markdown)}</pre>")
    elif r.formulation:
        parts.append(f"<h4>Formulation</h4><pre>{_esc(json.dumps(r.formulation, indent=2))}</pre>")
    if r.code:
        parts.append(f"<h4>Code</h4><pre>{_esc(r.code)}</pre>")
    if r.solver_message or r.solver_log:
        parts.append(
            "<h4>Solver output</h4><pre>"
            + _esc("\n".join(x for x in (r.solver_message, r.solver_log) if x))
            + "</pre>"
        )
    if r.steps:
        parts.append("<h4>Steps</h4><table><tr><th>role</th><th>ok</th><th>calls</th>")
        parts.append("<th>tokens</th><th>s</th><th>what happened</th></tr>")
        for s in r.steps:
            parts.append(
                f"<tr><td>{_esc(s.role)}</td><td>{'yes' if s.ok else 'no'}</td>"
                f'<td class="num">{s.calls}</td><td class="num">{s.tokens}</td>'
                f'<td class="num">{s.elapsed_s:.1f}</td><td>{_esc(s.summary)}</td></tr>'
            )
        parts.append("</table>")
    parts.append('<p><a href="#problems">back to the table</a></p></details>')
    return "".join(parts)


def render_html(summary: dict[str, Any], records: Sequence[ResultRecord]) -> str:
    """The self-contained HTML report (inline CSS and SVG; no scripts, no network)."""
    d = summary["default_rule"]
    acc = summary["accuracy"]
    cat_items = []
    for cat, c in summary["by_category"].items():
        a = c["accuracy"][d]
        if a["scored"]:
            cat_items.append(
                (cat, a["accuracy"] or 0.0, f"{a['correct']}/{a['scored']} ({_pct(a['accuracy'])})")
            )
    fail_items = [(cls, float(n), str(n)) for cls, n in summary["failure_classes"].items()]
    charts = [
        _svg_hbars(f"Accuracy by category ({d})", cat_items, 1.0),
        _svg_hbars(
            "Failure classes",
            fail_items,
            max((v for _, v, _ in fail_items), default=1.0),
        ),
        _svg_histogram("Cost: tokens per problem", [float(r.tokens) for r in records], "tokens"),
        _svg_histogram("Time per problem", [r.elapsed_s for r in records], "seconds"),
    ]
    title = f"Eval report: {summary['dataset']} ({summary['agent'] or 'agent'})"
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        '<table class="kv">',
        f"<tr><td>model</td><td>{_esc(summary.get('model'))}</td></tr>",
        f"<tr><td>answer field</td><td><code>{_esc(summary['answer_field'])}</code></td></tr>",
        f"<tr><td>problems</td><td>{summary['finished']} finished of {summary['planned']}"
        f" planned; {summary['scored']} scored, {summary['unscored']} without ground truth"
        f"{'' if summary['complete'] else ' <b>(partial run)</b>'}</td></tr>",
        f"<tr><td>accuracy ({_esc(d)})</td><td><b>{_pct(acc[d]['accuracy'])}</b> "
        f"({acc[d]['correct']}/{acc[d]['scored']})</td></tr>",
        f"<tr><td>execution rate</td><td>{_pct(summary['execution_rate'])}</td></tr>",
        f"<tr><td>wall time</td><td>{summary['wall_time_s']:.1f} s "
        f"({summary['sessions']} session(s))</td></tr>",
        f"<tr><td>tokens</td><td>{int(summary['tokens']['total'])} total, "
        f"{summary['tokens']['mean']:.0f} per problem; calls "
        f"{int(summary['calls']['total'])} total</td></tr>",
        "</table>",
        "<h2>Accuracy by rule</h2><table><tr><th>rule</th><th>correct</th><th>scored</th>"
        "<th>accuracy</th><th>definition</th></tr>",
    ]
    for rule, a in acc.items():
        out.append(
            f"<tr><td><code>{_esc(rule)}</code></td><td class='num'>{a['correct']}</td>"
            f"<td class='num'>{a['scored']}</td><td class='num'>{_pct(a['accuracy'])}</td>"
            f"<td>{_esc(summary['rules'][rule])}</td></tr>"
        )
    out.append("</table><h2>Plots</h2><div class='charts'>")
    out.extend(charts)
    out.append("</div>")
    if summary["failure_classes"]:
        out.append("<p>")
        out.append(
            "; ".join(
                f"<b>{_esc(k)}</b>: {_esc(FAILURE_LABELS.get(k, k))}"
                for k in summary["failure_classes"]
            )
        )
        out.append("</p>")
    out.append(
        '<h2 id="problems">Problems</h2><table><tr><th>id</th><th>category</th>'
        "<th>ground truth</th><th>prediction</th><th>correct</th><th>failure</th>"
        "<th>tokens</th><th>calls</th><th>s</th></tr>"
    )
    for r in records:
        c = r.correct.get(d)
        cls = "na" if c is None else ("yes" if c else "no")
        out.append(
            f'<tr><td><a href="#p-{_esc(r.id)}">{_esc(r.id)}</a></td><td>{_esc(r.category)}</td>'
            f"<td class='num'>{_esc(_gt_str(r))}</td><td class='num'>{_esc(_pred_str(r))}</td>"
            f"<td class='{cls}'>{_esc(_mark(r, d))}</td><td>{_esc(r.failure_class or '')}</td>"
            f"<td class='num'>{r.tokens}</td><td class='num'>{r.calls}</td>"
            f"<td class='num'>{r.elapsed_s:.1f}</td></tr>"
        )
    out.append("</table><h2>Details</h2>")
    out.extend(_detail_html(r, d) for r in records)
    out.append(
        f"<p><small>optiforge {_esc(summary.get('optiforge_version'))}, generated "
        f"{_esc(summary['generated_at'])}</small></p></body></html>"
    )
    return "\n".join(out)


# ---------------------------------------------------------------- comparison


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs.

    Under the null hypothesis each discordant pair goes either way with probability 1/2,
    so ``min(b, c)`` is Binomial(b + c, 1/2); the p-value doubles its lower tail (capped at 1).
    """
    if b < 0 or c < 0:
        raise ValueError("counts must be >= 0")
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def compare_runs(dir_a: str | Path, dir_b: str | Path, rule: str = DEFAULT_RULE) -> dict[str, Any]:
    """Compare two runs on the problems both scored: gained, lost, and McNemar's p-value.

    "Gained" means wrong in A and right in B (B is the new run).
    """
    if rule not in RULES:
        raise EvalError(f"unknown scoring rule {rule!r}; known: {sorted(RULES)}")
    meta_a, recs_a = load_run(dir_a)
    meta_b, recs_b = load_run(dir_b)
    a = {r.id: r for r in recs_a if r.scored}
    b = {r.id: r for r in recs_b if r.scored}
    common = [i for i in a if i in b]
    gained = [i for i in common if not a[i].correct.get(rule) and b[i].correct.get(rule)]
    lost = [i for i in common if a[i].correct.get(rule) and not b[i].correct.get(rule)]
    both = sum(1 for i in common if a[i].correct.get(rule) and b[i].correct.get(rule))
    acc_a = sum(1 for i in common if a[i].correct.get(rule))
    acc_b = sum(1 for i in common if b[i].correct.get(rule))
    p = mcnemar_exact(len(gained), len(lost))

    def _cost(recs: Sequence[ResultRecord], ids: set[str]) -> dict[str, float]:
        sel = [r for r in recs if r.id in ids]
        return {
            "tokens_mean": round(statistics.fmean([r.tokens for r in sel]), 2) if sel else 0.0,
            "calls_mean": round(statistics.fmean([r.calls for r in sel]), 3) if sel else 0.0,
            "seconds_mean": round(statistics.fmean([r.elapsed_s for r in sel]), 3) if sel else 0.0,
        }

    ids = set(common)

    def _label(meta: RunMeta | None, path: str | Path) -> dict[str, Any]:
        return {
            "dir": str(path),
            "dataset": meta.dataset if meta else None,
            "agent": meta.agent if meta else None,
            "model": meta.model if meta else None,
            "answer_field": meta.answer_field if meta else None,
        }

    return {
        "rule": rule,
        "a": {**_label(meta_a, dir_a), "correct": acc_a, **_cost(recs_a, ids)},
        "b": {**_label(meta_b, dir_b), "correct": acc_b, **_cost(recs_b, ids)},
        "common": len(common),
        "only_in_a": sorted(set(a) - set(b)),
        "only_in_b": sorted(set(b) - set(a)),
        "both_correct": both,
        "neither_correct": len(common) - both - len(gained) - len(lost),
        "gained": gained,
        "lost": lost,
        "p_value": p,
        "significant_at_0.05": p < 0.05,
    }
