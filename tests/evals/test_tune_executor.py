"""``optiforge tune`` through an executor, without Ray: GEPA's unrecorded evaluations go
through ``executor.run(problem, prompts=candidate)`` and give the very search an in-process
run gives; the flags fail early and clearly; a local tune never imports Ray. The Ray side is
in test_tune_ray.py (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from optiforge.agents.spec import AgentSpec, BuiltAgent
from optiforge.cli import main
from optiforge.evals.executor import LocalExecutor, WorkerDiedError
from optiforge.evals.tune import TuneConfig, TuneError, TuneWorkerError, run_tune
from optiforge.llm.testing import ScriptedLLM

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from test_tune import team_script, training_file  # noqa: E402


class CountingExecutor(LocalExecutor):
    """A local executor that notes each problem and the formulator prompt it was given."""

    def __init__(self, agent):
        super().__init__(agent)
        self.ran: list[tuple[str, str]] = []

    async def run(self, problem, *, prompts=None):
        self.ran.append((problem.id, (prompts or {}).get("formulator_system", "")))
        return await super().run(problem, prompts=prompts)


def _cfg(tmp_path: Path, name: str, **kw) -> TuneConfig:
    return TuneConfig(
        dataset=str(training_file(tmp_path, n=6)),
        out=tmp_path / name / "prompts.json",
        optimizer="gepa",
        val_fraction=0.34,
        samples=1,
        budget=2,
        max_metric_calls=12,
        minibatch=2,
        progress=False,
        **kw,
    )


def _expected_remote(state: dict, n_val: int) -> int:
    """Evaluations GEPA runs without a graph: the seed's validation, every child's
    minibatch, and the validation of every accepted child."""
    n = n_val
    for h in state["history"]:
        if "child_scores" in h:
            n += len(h["minibatch"])
        if h.get("accepted"):
            n += n_val
    return n


def test_gepa_through_an_executor_is_the_same_search(tmp_path):
    local_llm = ScriptedLLM(team_script({"optimizer_calls": 0}))
    base = run_tune(_cfg(tmp_path, "here"), local_llm)

    llm = ScriptedLLM(team_script({"optimizer_calls": 0}))
    ex = CountingExecutor(BuiltAgent(AgentSpec(agent="team", budget=2, samples=1), llm=llm))
    out = run_tune(_cfg(tmp_path, "executor"), llm, executor=ex)

    here = json.loads(base.state_path.read_text())
    there = json.loads(out.state_path.read_text())
    for key in ("candidates", "parents", "origins", "val_scores", "metric_calls", "iteration"):
        assert here[key] == there[key], key
    strip = ("llm_calls", "tokens")
    assert [{k: v for k, v in h.items() if k not in strip} for h in here["history"]] == [
        {k: v for k, v in h.items() if k not in strip} for h in there["history"]
    ]
    assert there["candidates"][-1]["formulator_system"] == "TUNED RULES"
    assert out.best_val_score == 1.0 and out.initial_val_score == 0.0
    # Exactly the unrecorded evaluations went through the executor, each with its
    # candidate's prompt: the seed's on validation, then the tuned child's.
    assert len(ex.ran) == _expected_remote(there, len(out.val_ids)) > len(out.val_ids)
    assert {pid for pid, _ in ex.ran[: len(out.val_ids)]} == set(out.val_ids)
    assert {prompt for _, prompt in ex.ran} == {
        there["candidates"][0]["formulator_system"],
        "TUNED RULES",
    }
    # Same requests as the in-process run: the team was asked the same things.
    assert len(llm.requests) == len(local_llm.requests)
    saved = json.loads(out.out.read_text())
    assert saved["meta"]["executor"] == "local" and out.executor == "local"


def test_a_worker_that_died_twice_stops_the_tune(tmp_path):
    class Dying(LocalExecutor):
        async def run(self, problem, *, prompts=None):
            raise WorkerDiedError(f"the Ray worker running {problem.id} died 2 time(s)")

    llm = ScriptedLLM(team_script({"optimizer_calls": 0}))
    cfg = _cfg(tmp_path, "dying")
    with pytest.raises(TuneWorkerError, match=r"died 2 time.*rerun the same command"):
        run_tune(cfg, llm, executor=Dying(BuiltAgent(AgentSpec(), llm=llm)))
    assert not cfg.out.exists()  # nothing was scored 0 and saved as a result


def test_executor_options_are_checked_before_anything_starts(tmp_path):
    with pytest.raises(TuneError, match="--executor must be local or ray"):
        _cfg(tmp_path, "a", executor="spark")
    with pytest.raises(TuneError, match="need --executor ray"):
        _cfg(tmp_path, "b", ray_address="auto")
    with pytest.raises(TuneError, match="--ray-workers must be >= 1"):
        _cfg(tmp_path, "c", executor="ray", ray_workers=0)
    with pytest.raises(TuneError, match=r"GEPA's unrecorded evaluations.*optoprime runs"):
        TuneConfig(dataset="x", out=tmp_path / "p.json", optimizer="optoprime", executor="ray")
    llm = ScriptedLLM(team_script({"optimizer_calls": 0}))
    cfg = _cfg(tmp_path, "d")
    cfg.optimizer = "opro"
    with pytest.raises(TuneError, match="opro runs every problem in this process"):
        run_tune(cfg, llm, executor=LocalExecutor(BuiltAgent(AgentSpec(), llm=llm)))


def test_cli_executor_flags(tmp_path):
    def tune(*args):
        return subprocess.run(
            [sys.executable, "-m", "optiforge", "tune", "--dataset", "nl4opt", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    out = tune("--executor", "spark", "--out", str(tmp_path / "a.json"))
    assert out.returncode == 2 and "--executor must be local or ray" in out.stderr
    out = tune("--ray-address", "auto", "--out", str(tmp_path / "b.json"))
    assert out.returncode == 2 and "need --executor ray" in out.stderr
    out = tune("--executor", "ray", "--optimizer", "textgrad", "--out", str(tmp_path / "c.json"))
    assert out.returncode == 2 and "Use --optimizer gepa" in out.stderr
    assert "Traceback" not in out.stderr
    help_text = " ".join(tune("--help").stdout.split())  # rich wraps and boxes the text
    assert "--executor" in help_text and "--ray-address" in help_text and "gepa only" in help_text
    assert "pip install -e '.[ray]'" in help_text  # not eaten as rich markup


def test_a_local_tune_never_imports_ray(tmp_path):
    """A GEPA tune with the default executor, through the CLI, loads no Ray module."""
    data = training_file(tmp_path, n=4)
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        import optiforge.llm
        from optiforge.llm.testing import ScriptedLLM
        from test_tune import team_script
        optiforge.llm.LLM = lambda *a, **k: ScriptedLLM(team_script({{"optimizer_calls": 0}}))
        from optiforge.cli import main
        try:
            main(["tune", "--dataset", {str(data)!r}, "--optimizer", "gepa", "--samples", "1",
                  "--budget", "2", "--max-metric-calls", "6", "--minibatch", "2",
                  "--val-fraction", "0.5", "--out", {str(tmp_path / "p.json")!r}])
        except SystemExit as exc:
            assert not exc.code, exc.code
        import optiforge.evals.tune, optiforge.evals.executor, optiforge.agents.optim
        loaded = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
        print("RAY", loaded)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "RAY []" in out.stdout
    assert json.loads((tmp_path / "p.json").read_text())["meta"]["executor"] == "local"


def test_tune_help_names_the_executor(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["tune", "--help"])
    assert exc.value.code == 0
    assert "--executor ray (gepa only" in " ".join(capsys.readouterr().out.split())


def test_a_tune_without_a_progress_bar_notes_every_iteration(tmp_path):
    notes: list[str] = []
    llm = ScriptedLLM(team_script({"optimizer_calls": 0}))
    out = run_tune(_cfg(tmp_path, "log"), llm, note=notes.append)
    state = json.loads(out.state_path.read_text())
    gepa = [n for n in notes if n.startswith("GEPA")]
    assert gepa[0].startswith(f"GEPA: scoring the starting values on {len(out.val_ids)} ")
    assert len([n for n in gepa if n.startswith("GEPA iteration")]) == len(state["history"])
