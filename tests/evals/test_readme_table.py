"""benchmarks/eval_readme_table.py renders the README table from summary.json files."""

import subprocess
import sys
from pathlib import Path

from optiforge.evals import ResultRecord, RunMeta
from optiforge.evals.journal import Journal, write_meta
from optiforge.evals.report import write_reports

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "eval_readme_table.py"


def _run_dir(path: Path, oks: list[bool], agent: str = "direct", **meta: object) -> None:
    with Journal(path) as j:
        for i, ok in enumerate(oks):
            j.append(
                ResultRecord(
                    id=f"p{i}",
                    gt=1.0,
                    gt_kind="value",
                    prediction=1.0 if ok else 3.0,
                    prediction_kind="value",
                    executed=True,
                    prompt_tokens=200,
                    correct={k: ok for k in ("strict_1e-6", "rel_1e-4", "dp2", "orlm_round_5pct")},
                )
            )
    write_meta(
        path,
        RunMeta(
            dataset="nl4opt", agent=agent, model="m", filters={"sample": "nl4opt-readme40"}, **meta
        ),
    )
    write_reports(path)


def test_table_from_runs_and_update(tmp_path):
    _run_dir(tmp_path / "a", [True, False, True, True])
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "a"), str(tmp_path / "a" / "summary.json")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith("| nl4opt")]
    assert len(rows) == 2 and "75.0% (3/4)" in rows[0] and "`nl4opt-readme40`" in rows[0]
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- eval-table:start -->\nold\n<!-- eval-table:end -->\nend\n")
    subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "a"), "--update", str(readme)], check=True
    )
    text = readme.read_text()
    assert "old" not in text and "75.0% (3/4)" in text and text.endswith("end\n")
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "none")], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "cannot read" in bad.stderr


def test_compare_line_counts_gained_and_lost(tmp_path):
    _run_dir(tmp_path / "direct", [True, False, False, False, True])
    _run_dir(tmp_path / "team", [True, True, True, False, False], agent="team")
    out = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            str(tmp_path / "direct"),
            str(tmp_path / "team"),
            "--compare",
            f"{tmp_path / 'direct'}:{tmp_path / 'team'}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("- nl4opt"))
    assert "team 3/5 against direct 2/5" in line
    assert "gained 2, lost 1" in line and "McNemar exact p = 1" in line
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "team"), "--compare", "nocolon"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "OLD_DIR:NEW_DIR" in bad.stderr


def test_runs_section_says_what_run_json_records(tmp_path):
    from optiforge.evals.records import Session

    run = tmp_path / "r1"
    run.mkdir()
    prov = {
        "git_commit": "a" * 40,
        "git_dirty": True,
        "optiforge_version": "9.9",
        "server": {"kind": "embedded llama.cpp", "url": "http://127.0.0.1:1/v1"},
        "model_file": {"file": "m.gguf", "sha256": "b" * 64},
    }
    write_meta(
        run,
        RunMeta(
            dataset="nl4opt",
            model="m",
            command="optiforge eval nl4opt",
            sessions=[Session(index=1, started_at=10.0, ended_at=20.0, provenance=prov)],
        ),
    )
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- runs:start -->\nold\n<!-- runs:end -->\ny\n")
    subprocess.run(
        [sys.executable, str(SCRIPT), "--runs", str(run), "--update", str(readme)], check=True
    )
    text = readme.read_text()
    assert "old" not in text and text.endswith("y\n")
    row = next(line for line in text.splitlines() if line.startswith("| r1 |"))
    assert "`aaaaaaa` (dirty tree), optiforge 9.9" in row
    assert "embedded llama.cpp" in row and "sha256 `bbbbbbbbbbbb" in row
    assert "1970-01-01 00:00:10" in row and "`optiforge eval nl4opt`" in text
    assert "r1 (session 1): no commit landed while it ran." in text


def test_the_settings_column_names_levers_prompts_and_library(tmp_path):
    _run_dir(tmp_path / "plain", [True], agent="team")
    _run_dir(
        tmp_path / "tuned",
        [True],
        agent="team",
        levers={"verify": True, "hints": False, "templates": True},
        prompts={"file": "p.json", "sha256": "abcdef0123" + "0" * 54, "parameters": []},
        experience={"file": "lib.jsonl", "sha256": "9876543210" + "0" * 54, "entries": 3},
    )
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "plain"), str(tmp_path / "tuned")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    plain, tuned = [line for line in out.splitlines() if line.startswith("| nl4opt")]
    assert "| team | - |" in plain
    assert "| team | verify, templates, prompts abcdef01, library 98765432 |" in tuned


def test_named_tables_live_side_by_side(tmp_path):
    _run_dir(tmp_path / "a", [True, False])
    readme = tmp_path / "README.md"
    readme.write_text(
        "<!-- eval-table:start -->\nfirst\n<!-- eval-table:end -->\n"
        "<!-- eval-table:levers:start -->\nsecond\n<!-- eval-table:levers:end -->\n"
    )
    args = [sys.executable, str(SCRIPT), str(tmp_path / "a"), "--update", str(readme)]
    subprocess.run([*args, "--name", "levers"], check=True)
    text = readme.read_text()
    assert "first" in text and "second" not in text and "50.0% (1/2)" in text


def test_the_deadline_table_shows_the_limit_the_code_and_what_was_answered(tmp_path):
    from optiforge.evals.records import Session

    run = tmp_path / "long"
    with Journal(run) as j:
        for i, (pred, stopped, secs) in enumerate(
            [(1.0, None, 120.0), (3.0, "deadline", 300.5), (None, "cancelled", 305.0)]
        ):
            j.append(
                ResultRecord(
                    id=f"p{i}",
                    gt=1.0,
                    gt_kind="value",
                    prediction=pred,
                    prediction_kind="none" if pred is None else "value",
                    executed=pred is not None,
                    calls=2 + i,
                    prompt_tokens=100,
                    elapsed_s=secs,
                    stopped=stopped,
                    correct={k: pred == 1.0 for k in ("strict_1e-6", "rel_1e-4", "dp2")},
                )
            )
    session = Session(
        index=1, started_at=1.0, time_limit_s=300.0, provenance={"git_commit": "c0ffee" + "0" * 34}
    )
    write_meta(
        run,
        RunMeta(
            dataset="optibench",
            agent="team",
            filters={"sample": "optibench-long20"},
            sessions=[session],
        ),
    )
    write_reports(run)
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--deadline", str(run)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    row = next(line for line in out.splitlines() if line.startswith("| optibench"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:7] == [
        "optibench `optibench-long20`",
        "team",
        "`c0ffee0`",
        "300 s",
        "3",
        "67% (2/3)",
        "deadline 1, cancelled 1",
    ]
    assert cells[7] == "33.3% (1/3)" and cells[8] == "3.0" and cells[10] == "242, 305"


def test_the_deadline_table_reads_runs_from_before_the_agent_knew_its_deadline(tmp_path):
    """707459c's journals: no time limit in the sessions (the command has --timeout) and no
    ``stopped``; a problem the runner cancelled has failure class ``timeout``."""
    from optiforge.evals.records import Session

    run = tmp_path / "old"
    with Journal(run) as j:
        j.append(ResultRecord(id="p0", gt=1.0, gt_kind="value", failure_class="timeout"))
        j.append(
            ResultRecord(id="p1", gt=1.0, gt_kind="value", prediction=1.0, prediction_kind="value")
        )
    write_meta(
        run,
        RunMeta(
            dataset="optibench",
            agent="team",
            command="optiforge eval optibench --timeout 300 --out old",
            sessions=[Session(index=1, started_at=1.0)],
        ),
    )
    write_reports(run)
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--deadline", str(run)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    row = next(line for line in out.splitlines() if line.startswith("| optibench"))
    assert "| 300 s |" in row and "| 50% (1/2) | timeout (cancelled by the runner) 1 |" in row
