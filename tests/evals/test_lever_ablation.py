"""benchmarks/lever_ablation.py: the ablation runs to make, and the table from them."""

import subprocess
import sys
from pathlib import Path

from optiforge.evals import ResultRecord, RunMeta
from optiforge.evals.journal import Journal, write_meta

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "lever_ablation.py"
ON = {"verify": True, "hints": True, "templates": False}


def _run(path: Path, rows: list[tuple[str, bool, list[str]]], levers: dict | None) -> Path:
    with Journal(path) as j:
        for pid, ok, fired in rows:
            j.append(
                ResultRecord(
                    id=pid,
                    gt=1.0,
                    gt_kind="value",
                    prediction=1.0 if ok else 2.0,
                    prediction_kind="value",
                    executed=True,
                    calls=4,
                    levers=fired,
                    correct={k: ok for k in ("strict_1e-6", "rel_1e-4", "dp2", "orlm_round_5pct")},
                )
            )
    write_meta(
        path,
        RunMeta(
            dataset="nl4opt",
            agent="team",
            model="m",
            levers=levers,
            command="optiforge eval nl4opt --levers verify,hints --timeout 900",
        ),
    )
    return path


def _script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False
    )


def test_plan_and_table(tmp_path):
    full = _run(
        tmp_path / "full",
        [("p1", True, ["verify"]), ("p2", False, ["verify", "hints"]), ("p3", True, [])],
        ON,
    )
    base = _run(tmp_path / "base", [("p1", False, []), ("p2", True, []), ("p3", True, [])], None)
    out = _script("plan", str(full), "--out-prefix", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "--levers hints --ids p1,p2 --out" in out.stdout and "full-minus-verify" in out.stdout
    assert "--levers verify --ids p2 " in out.stdout and "--timeout 900" in out.stdout
    minus = _run(
        tmp_path / "full-minus-verify",
        [("p1", False, ["hints"]), ("p2", True, ["hints"])],
        {**ON, "verify": False},
    )
    table = _script("table", str(full), str(base), str(minus))
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if line.startswith("| verify"))
    assert "| 2 | 1/2 (4.0 calls) | 1/2 (4.0 calls) | 1/2 (4.0 calls) | 1 / 1 (p1, p2) |" in row
    assert "| (all levers, every problem) | 3 | 2/3" in table.stdout
    readme = tmp_path / "R.md"
    readme.write_text("a\n<!-- ablation:start -->\nold\n<!-- ablation:end -->\nb\n")
    assert (
        _script("table", str(full), str(base), str(minus), "--update", str(readme)).returncode == 0
    )
    assert "| verify | 2 |" in readme.read_text() and "old" not in readme.read_text()


def test_bad_input_fails_clearly(tmp_path):
    full = _run(tmp_path / "full", [("p1", True, [])], None)
    bad = _script("plan", str(full))
    assert bad.returncode != 0 and "no lever on" in bad.stderr
    missing = _script("table", str(tmp_path / "nope"), str(full))
    assert (
        missing.returncode != 0 and "error:" in missing.stderr and "Traceback" not in missing.stderr
    )
