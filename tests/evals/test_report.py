"""Summary numbers, the McNemar test, comparisons and the rendered reports."""

import json
import math

import pytest

from optiforge.evals import EvalError, ResultRecord, RunMeta, compare_runs, mcnemar_exact
from optiforge.evals.journal import Journal, write_meta
from optiforge.evals.records import Session, StepSummary
from optiforge.evals.report import render_html, render_markdown, summarize, write_reports


def test_mcnemar_exact_known_values():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 32)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 1024)
    assert mcnemar_exact(5, 5) == 1.0
    # symmetric and a probability
    for b in range(8):
        for c in range(8):
            p = mcnemar_exact(b, c)
            assert 0 < p <= 1 and p == mcnemar_exact(c, b)
    # agrees with the binomial tail computed directly
    assert mcnemar_exact(3, 12) == pytest.approx(
        2 * sum(math.comb(15, k) for k in range(4)) / 2**15
    )
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def _rec(pid, ok, *, cat="linear/no-table", tokens=100, kind="value", fc=None):
    correct = None if kind == "missing" else ok
    return ResultRecord(
        id=pid,
        dataset="d",
        category=cat,
        gt=1.0 if kind == "value" else None,
        gt_kind=kind,
        prediction=1.0 if ok else 2.0,
        prediction_kind="value",
        correct={
            "strict_1e-6": correct,
            "rel_1e-4": correct,
            "dp2": correct,
            "orlm_round_5pct": correct,
        },
        executed=True,
        failure_class=fc if fc else (None if ok or kind == "missing" else "formulation"),
        prompt_tokens=tokens,
        completion_tokens=tokens // 2,
        calls=2,
        elapsed_s=1.5,
        code="x = 1 < 2 & 'q'",
    )


def test_summary_numbers():
    recs = [
        _rec("a", True),
        _rec("b", False),
        _rec("c", True, cat="nonlinear/table"),
        _rec("d", False, kind="missing"),
        _rec("e", False, fc="code_error"),
    ]
    meta = RunMeta(
        dataset="d",
        agent="team",
        planned_ids=list("abcdef"),
        sessions=[Session(index=1, started_at=100.0, ended_at=110.0, finished=5)],
    )
    s = summarize(recs, meta)
    assert s["planned"] == 6 and s["finished"] == 5 and not s["complete"]
    assert s["scored"] == 4 and s["unscored"] == 1
    assert s["accuracy"]["strict_1e-6"] == {"correct": 2, "scored": 4, "accuracy": 0.5}
    assert s["by_category"]["nonlinear/table"]["accuracy"]["strict_1e-6"]["accuracy"] == 1.0
    assert s["failure_classes"] == {"formulation": 1, "code_error": 1}
    assert s["tokens"]["total"] == 5 * 150 and s["tokens"]["mean"] == 150
    assert s["calls"]["total"] == 10 and s["wall_time_s"] == 10.0
    assert s["throughput_per_min"] == 30.0
    md = render_markdown(s, recs)
    assert "| `strict_1e-6` | 2 | 4 | 50.0% |" in md and "partial run" in md
    html = render_html(s, recs)
    assert 'id="p-a"' in html and 'href="#p-a"' in html
    assert "x = 1 &lt; 2 &amp; &#x27;q&#x27;" in html  # code is escaped
    assert html.count("<svg") == 4
    assert s["answered"] == 5 and s["answered_rate"] == 1.0 and s["stopped"] == {}


def test_summary_counts_answered_and_stopped_problems():
    kept = _rec("a", True).model_copy(update={"stopped": "deadline"})
    empty = _rec("b", False, fc="timeout").model_copy(
        update={"prediction": None, "stopped": "cancelled"}
    )
    s = summarize([kept, empty, _rec("c", True), _rec("d", False)])
    assert s["answered"] == 3 and s["answered_rate"] == 0.75
    assert s["stopped"] == {"deadline": 1, "cancelled": 1}
    md = render_markdown(s, [kept, empty])
    assert "answered: 3 of 4 (75.0%); stopped early: deadline 1, cancelled 1" in md


def _write_run(path, oks, agent):
    with Journal(path) as j:
        for i, ok in enumerate(oks):
            j.append(_rec(f"p{i}", ok))
    write_meta(
        path, RunMeta(dataset="d", agent=agent, planned_ids=[f"p{i}" for i in range(len(oks))])
    )


def test_compare_runs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _write_run(a, [True, False, False, True, False, False], "direct")
    _write_run(b, [True, True, True, False, True, False], "team")
    cmp = compare_runs(a, b)
    assert cmp["gained"] == ["p1", "p2", "p4"] and cmp["lost"] == ["p3"]
    assert cmp["both_correct"] == 1 and cmp["neither_correct"] == 1
    assert cmp["p_value"] == pytest.approx(mcnemar_exact(3, 1))
    assert cmp["a"]["agent"] == "direct" and cmp["b"]["correct"] == 4
    with pytest.raises(EvalError, match="unknown scoring rule"):
        compare_runs(a, b, rule="bogus")


def test_write_reports_from_journal_only(tmp_path):
    _write_run(tmp_path, [True, False], "team")
    s = write_reports(tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["finished"] == 2
    assert s["accuracy"]["strict_1e-6"]["accuracy"] == 0.5
    with pytest.raises(EvalError, match="holds no eval run"):
        (tmp_path / "empty").mkdir()
        write_reports(tmp_path / "empty")


def _hostile(tag: str) -> str:
    # Closes an attribute with either quote, opens tags, and carries an entity.
    return f"{tag}\"'><script>alert(\"{tag}\")</script><img src=x onerror='{tag}'>&amp;"


def _fill_strings(model_cls, fixed: dict) -> dict:
    """A hostile string in every str (or str | None) field of ``model_cls`` not in fixed."""
    values = dict(fixed)
    for name, field in model_cls.model_fields.items():
        ann = str(field.annotation)
        if name not in values and (field.annotation is str or ann in ("str | None",)):
            values[name] = _hostile(f"F-{name}")
    return values


class _Tags(__import__("html.parser").parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.attrs, self.data = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs

    def handle_data(self, data):
        self.data.append(data)


def test_every_journal_field_is_escaped_in_the_html_report(tmp_path):
    """A problem text, id, code, error, formulation, step and run metadata carrying
    `<script>` and both quotes stay text: the report gains no tag and no attribute."""
    steps = [StepSummary(**_fill_strings(StepSummary, {}))]
    rec = ResultRecord(
        **_fill_strings(
            ResultRecord,
            {
                "gt": 1.0,
                "gt_kind": "value",
                "prediction": 2.0,
                "prediction_kind": "value",
                "correct": {"strict_1e-6": False, "rel_1e-4": False, "dp2": False},
                "steps": steps,
                "formulation": {"name": _hostile("F-formulation")},
            },
        )
    )
    rec2 = rec.model_copy(update={"formulation_markdown": None, "id": _hostile("F-id2")})
    with Journal(tmp_path) as j:
        j.append(rec)
        j.append(rec2)
    meta = RunMeta(**_fill_strings(RunMeta, {"planned_ids": [rec.id, rec2.id]}))
    write_meta(tmp_path, meta)
    write_reports(tmp_path)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")

    assert "<script" not in page and "<img" not in page and "onerror='" not in page
    parsed = _Tags()
    parsed.feed(page)
    assert not {"script", "img"} & set(parsed.tags)
    assert not [a for a, _ in parsed.attrs if a == "onerror"]
    payloads = [_hostile(f"F-{f}") for f in ("id", "id2", "dataset", "agent", "model")]
    for _, value in parsed.attrs:  # attribute values come back whole, quotes and all
        if value and "F-" in value:
            assert any(value.endswith(p) for p in payloads), value
    # Not vacuous: the report shows these fields, as text.
    text = "".join(parsed.data)
    shown = [
        "id",
        "id2",
        "text",
        "category",
        "error",
        "code",
        "formulation_markdown",
        "failure_class",
        "answer_field",
        "role",
        "summary",
        "model",
    ]
    for field in shown:
        assert _hostile(f"F-{field}") in text, field
    # The formulation dict is shown as JSON, so its string keeps JSON's escapes.
    assert json.dumps(_hostile("F-formulation"))[1:-1] in text
