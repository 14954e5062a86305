"""benchmarks/role_costs.py sums each role's calls, tokens and server timings from journals."""

import json
import subprocess
import sys
from pathlib import Path

from optiforge.evals import ResultRecord, RunMeta
from optiforge.evals.journal import Journal, write_meta

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "role_costs.py"


def _usage(calls, ptok, cached, pms, cms):
    return {
        "calls": calls,
        "prompt_tokens": ptok,
        "completion_tokens": 10 * calls,
        "server_cached_tokens": cached,
        "prompt_ms": pms,
        "completion_ms": cms,
    }


def _run(path: Path) -> None:
    with Journal(path) as j:
        j.append(
            ResultRecord(
                id="long",
                text="x" * 2000,
                usage_by_tag={
                    "formulator": _usage(3, 3000, 600, 9000.0, 3000.0),
                    "critic": _usage(1, 1500, 0, 5000.0, 800.0),
                },
            )
        )
        j.append(
            ResultRecord(
                id="short",
                text="y" * 300,
                usage_by_tag={"formulator": _usage(3, 900, 300, 900.0, 2000.0)},
            )
        )
        # a retried problem: only its last line counts
        j.append(
            ResultRecord(
                id="short",
                text="y" * 300,
                usage_by_tag={"formulator": _usage(1, 300, 0, 0.0, 0.0)},
            )
        )
    write_meta(path, RunMeta(dataset="optibench", agent="team", model="m"))


def _costs(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_roles_are_summed_over_the_last_line_per_problem(tmp_path):
    _run(tmp_path / "r")
    run = _costs(str(tmp_path / "r"))["runs"][0]
    assert run["problems"] == 2 and run["run_json"]["model"] == "m"
    f = run["roles"]["formulator"]
    assert f["calls"] == 4 and f["prompt_tokens"] == 3300
    assert f["server_cached_tokens"] == 600 and f["server_cached_share"] == round(600 / 3300, 3)
    # the retried problem's last line had no timings: means are over timed calls only
    assert f["timed_calls"] == 3 and f["prompt_ms_per_call"] == 3000.0


def test_long_problems_only(tmp_path):
    _run(tmp_path / "r")
    run = _costs(str(tmp_path / "r"), "--min-chars", "1500")["runs"][0]
    assert run["problems"] == 1
    assert run["roles"]["critic"]["prompt_ms_per_call"] == 5000.0
    assert run["roles"]["critic"]["server_cached_share"] == 0.0


def test_a_directory_without_a_journal_is_a_clear_error(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 2 and "no results.jsonl" in out.stderr
