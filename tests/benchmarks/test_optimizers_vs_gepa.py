"""benchmarks/optimizers_vs_gepa.py end to end on a scripted model (plumbing, seconds).

The scripted router labels tickets by a keyword rule once its instruction names the four
labels (free text before, scoring 0), and every optimizer's reply proposes an instruction
that names them; so each tuned router's test accuracy is the rule's accuracy on the test
split, and the JSON must say so, with the calls, the settings and the commit. Finished runs are reused, not re-run.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "optimizers_vs_gepa.py"


@pytest.fixture
def bench():
    spec = importlib.util.spec_from_file_location("optimizers_vs_gepa", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tuned_accuracy(bench, seed: int, n: int) -> float:
    """The scripted router's accuracy on the test split once its instruction names the
    labels (untuned, it scores 0)."""
    test = bench._example().load_splits(seed)[2][:n]
    return sum(bench.scripted_label(text) == label for text, label in test) / len(test)


def test_ticket_task_for_optiforge_optimizers_then_resume(bench, tmp_path, capsys, monkeypatch):
    out = tmp_path / "bench.json"
    argv = ["--scripted", "--smoke", "--task", "ticket", "--seeds", "1"]
    argv += ["--optimizers", "gepa,optoprime,opro", "--out", str(out)]
    summary = bench.main(argv)
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text()) == summary
    assert summary["model"] == "scripted" and summary["git"]["commit"]
    assert summary["settings"]["budgets_metric_calls"] == {"ticket": 12}
    assert summary["settings"]["seeds"] == [1] and summary["reused_runs"] == []
    share = _tuned_accuracy(bench, 1, 3)
    assert share > 0
    for opt in ("gepa", "optoprime", "opro"):
        row = summary["results"]["ticket"][opt]
        (run,) = row["runs"]
        assert run["seed"] == 1 and run["test_accuracy"] == pytest.approx(share)
        assert run["commit"] == summary["git"]["commit"]
        assert 0 < run["metric_calls"] <= 12 + 3  # GEPA scores an accepted child on val
        assert run["optimizer_calls"] >= 1 and run["optimizer_tokens"] > 0
        assert run["llm_calls"] > run["optimizer_calls"] and run["tokens"] > 0
        assert row["mean_test_accuracy"] == pytest.approx(share)
    files = sorted(p.name for p in (tmp_path / "bench.work" / "results").iterdir())
    assert files == [f"ticket-{o}-seed1.json" for o in ("gepa", "opro", "optoprime")]

    # A rerun reuses every finished run and calls no model.
    monkeypatch.setattr(bench, "run_one", lambda *a, **k: pytest.fail("re-ran a finished run"))
    again = bench.main(argv)
    assert sorted(again["reused_runs"]) == files
    assert again["results"] == summary["results"]
    # A finished run made with other settings is not silently mixed in.
    with pytest.raises(SystemExit, match="other settings"):
        bench.main([*argv, "--budget", "20"])


def test_formulator_task_names_its_metric_path(bench, tmp_path):
    out = tmp_path / "f.json"
    argv = ["--scripted", "--smoke", "--task", "formulator", "--optimizers", "gepa"]
    summary = bench.main([*argv, "--out", str(out)])
    path = summary["settings"]["formulator_path"]
    assert path["name"] == "formulator" and "formulator-only" in path["description"]
    assert summary["settings"]["formulator_splits"]["test"] == "nl4opt-tune-val"
    (run,) = summary["results"]["formulator"]["gepa"]["runs"]
    # The scripted formulator always writes the same model, whose optimum (10) is no
    # problem's answer: every metric call ran the team and scored 0.
    assert run["test_accuracy"] == 0.0 and run["metric_calls"] >= 7
    saved = json.loads((tmp_path / "f.work" / "results" / "formulator-gepa-seed0.json").read_text())
    assert set(saved["parameters"]) == {"formulator_system"}


def test_gepa_package_through_the_adapter(bench, tmp_path):
    pytest.importorskip("gepa")
    argv = ["--scripted", "--smoke", "--task", "ticket", "--optimizers", "gepa-pypi"]
    summary = bench.main([*argv, "--out", str(tmp_path / "g.json")])
    (run,) = summary["results"]["ticket"]["gepa-pypi"]["runs"]
    assert _tuned_accuracy(bench, 0, 3) > 0
    assert run["test_accuracy"] == pytest.approx(_tuned_accuracy(bench, 0, 3))
    assert run["optimizer_calls"] >= 1 and 0 < run["metric_calls"] <= 12 + 3
    assert summary["gepa_version"]


def test_missing_gepa_package_names_the_bench_extra(bench, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gepa" else real(name, *a)
    )
    monkeypatch.delitem(sys.modules, "gepa", raising=False)
    with pytest.raises(SystemExit, match=r"pip install -e '\.\[bench\]'"):
        bench.main(["--scripted", "--smoke", "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()


def test_bad_arguments_fail_before_any_run(bench, tmp_path):
    for argv in (["--task", "nope"], ["--optimizers", "gepa,dspy"], ["--seeds", "a"]):
        with pytest.raises(SystemExit):
            bench.main([*argv, "--scripted", "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.work").exists()


def test_the_gepa_package_sees_records_cut_to_the_same_prompt_cap(bench):
    # A 3,000-character prompt under a 9,000-character cap leaves 4,500 for a minibatch of
    # three records of three fields each.
    assert bench.record_chars(9000, {"formulator_system": "x" * 3000}) == 4500 // (3 * 3)
    assert bench.record_chars(18000, {"formulator_system": "x" * 3000}) == 13500 // 9
    assert bench.record_chars(2000, {"formulator_system": "x" * 3000}) == 200  # the floor
