"""benchmarks/template_report.py: per problem, whether a template fired and what it did."""

import json
import subprocess
import sys
from pathlib import Path

from optiforge.evals import ResultRecord
from optiforge.evals.journal import Journal
from optiforge.evals.records import StepSummary

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "template_report.py"


def _step(role: str, summary: str, ok: bool = True, plan: str | None = "template") -> StepSummary:
    return StepSummary(role=role, plan_id=plan, ok=ok, summary=summary)


def _journal(path: Path) -> None:
    rows = [
        # Classified, extracted, solved; the template's 10400 was the right answer.
        (
            "p1",
            10400.0,
            True,
            [
                _step(
                    "planner",
                    "template: transportation: cues supply, demand (2 points), 1 table(s)",
                ),
                _step("formulator", "wrote a model", plan="sample"),
                _step(
                    "extractor", "extracted 2 sets and 3 parameters (1 tables parsed); 2 findings"
                ),
                _step(
                    "solver",
                    "attempt 3: optimal, objective 10400, critic checks: suspicious (numbers)",
                ),
                _step(
                    "solver", "attempt 0: optimal, objective 9000, critic checks: ok", plan="sample"
                ),
            ],
        ),
        # Classified, but the extraction was unusable and the template not built.
        (
            "p2",
            5.0,
            False,
            [
                _step(
                    "planner", "template: knapsack: cues knapsack, select (2 points), 1 table(s)"
                ),
                _step(
                    "extractor",
                    "extracted 1 sets and 2 parameters (1 tables parsed); 1 findings",
                    ok=False,
                ),
                _step(
                    "solver",
                    "attempt 3: not built: extraction: parameter 'capacity' is missing",
                    ok=False,
                ),
            ],
        ),
        # No template fits.
        (
            "p3",
            7.0,
            True,
            [
                _step(
                    "planner",
                    "template: none (best match diet has one cue only ('feed'))",
                    ok=False,
                )
            ],
        ),
    ]
    with Journal(path) as j:
        for pid, pred, ok, steps in rows:
            j.append(
                ResultRecord(
                    id=pid,
                    gt=pred if ok else -1.0,
                    gt_kind="value",
                    prediction=pred,
                    prediction_kind="value",
                    steps=steps,
                    correct={"strict_1e-6": ok},
                )
            )


def test_report_rows_and_counts(tmp_path):
    _journal(tmp_path / "run")
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        check=True,
    )
    rep = json.loads(out.stdout)
    rows = {r["id"]: r for r in rep["rows"]}
    assert rows["p1"]["template"] == "transportation" and rows["p1"]["extraction"] == "ok"
    assert rows["p1"]["findings"] == 2 and rows["p1"]["objective"] == 10400
    assert rows["p1"]["agreed"] and rows["p1"]["attempt"] == "optimal, objective 10400"
    assert rows["p2"]["extraction"] == "failed" and rows["p2"]["objective"] is None
    assert rows["p2"]["attempt"].startswith("not built: extraction")
    assert rows["p3"]["template"] is None and "one cue only" in rows["p3"]["reason"]
    assert rep["counts"] == {
        "problems": 3,
        "classified": 2,
        "extracted": 1,
        "solved": 1,
        "agreed_with_answer": 1,
        "right_when_agreed": 1,
        "right": 2,
        "by_template": {"transportation": 1, "knapsack": 1},
    }
    readme = tmp_path / "README.md"
    readme.write_text(
        "a\n<!-- template-report:t:start -->\nold\n<!-- template-report:t:end -->\nb\n"
    )
    subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            str(tmp_path / "run"),
            "--update",
            str(readme),
            "--name",
            "t",
        ],
        check=True,
    )
    text = readme.read_text()
    assert "old" not in text and "| p1 | transportation | ok (2 findings) |" in text
    assert "2 of 3 problems classified (knapsack 1, transportation 1)" in text
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "none")], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "cannot read" in bad.stderr
