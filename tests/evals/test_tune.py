"""``optiforge tune`` and its judge (optiforge.evals.tune) with scripted models."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import optiforge.llm
from optiforge.cli import main
from optiforge.datasets import Problem, load_dataset
from optiforge.evals.sample import builtin_samples, load_sample
from optiforge.evals.tune import (
    HeldOutProblemError,
    TeamJudge,
    TuneConfig,
    TuneError,
    held_out_ids,
    is_test_problem,
    make_optimizer,
    select_training,
)
from optiforge.llm.testing import ScriptedLLM

PRINTERS = (
    "An office supply company makes color printers and black and white printers. The color "
    "printer team can produce at most 20 color printers per day while the black and white "
    "printer team can produce at most 30 per day. The paper tray machine can make at most 35 "
    "printers of either type each day. Color printers generate a profit of $200 per printer "
    "while black and white printers generate a profit of $70 per printer. How many of each "
    "printer should be made to maximize the company's profit?"
)


def draft(capacity: int) -> str:
    """A formulator reply for PRINTERS; capacity 35 is right (5050), 30 is wrong (4700)."""
    variables = [
        {"name": n, "description": n, "units": "printers", "domain": "integer"}
        for n in ("color", "bw")
    ]
    constraints = ["color <= 20", "bw <= 30", f"color + bw <= {capacity}"]
    return json.dumps(
        {
            "variables": variables,
            "objective": {"sense": "maximize", "expression": "200*color + 70*bw"},
            "constraints": [{"source": "", "expression": c} for c in constraints],
        }
    )


def problem(pid="t1", answer=5050.0, kind="value", **kw) -> Problem:
    return Problem(id=pid, text=PRINTERS, answer=answer, answer_kind=kind, **kw)


# -- the judge --------------------------------------------------------------------------------
def test_judge_grades_with_the_eval_rule_and_answer_kinds():
    judge = TeamJudge()
    out = {"answer": 5050.0, "status": "optimal", "critic_findings": ["c3 looks right"]}
    score, text = judge(out, problem())
    assert score == 1.0 and "Correct" in text and "optimal" in text and "c3 looks right" in text

    near = {"answer": 5050.4, "status": "optimal", "formulation": "max 200 color + 70 bw"}
    score, text = judge(near, problem())
    assert score == 0.0  # strict_1e-6, as eval reports by default
    assert "expected answer is the optimal objective 5050" in text and "5050.4" in text
    assert "max 200 color" in text and "Solver status: optimal" in text
    assert TeamJudge(rule="rel_1e-4")(near, problem())[0] == 1.0

    infeasible = {"answer": None, "status": "infeasible", "failure": "infeasible"}
    assert judge(infeasible, problem(answer=None, kind="infeasible"))[0] == 1.0
    score, text = judge(infeasible, problem())
    assert score == 0.0 and "Failure: infeasible" in text
    with pytest.raises(TuneError, match="unknown scoring rule"):
        TeamJudge(rule="close-enough")


def test_the_feedback_shows_a_validated_formulation_as_plain_text_math():
    from optiforge.agents.solution import Solution
    from optiforge.solvers import ModelIR, SolveResult, SolveStatus

    d = json.loads(draft(30))
    for i, c in enumerate(d["constraints"], 1):
        c["name"] = f"c{i}"
    model = ModelIR.from_json(d)
    sol = Solution(
        problem_text=PRINTERS,
        agent="team",
        answer=4700.0,
        result=SolveResult(status=SolveStatus.OPTIMAL, objective=4700.0),
        formulation=model,
        formulation_markdown="**Objective** $\\max\\ 200 \\mathit{color}$ ...",
    )
    score, text = TeamJudge()(sol, problem())
    assert score == 0.0 and "maximize  200*color + 70*bw" in text and "mathit" not in text
    assert "color + bw <= 30" in text


def test_no_feedback_is_ever_written_for_a_test_sample_problem():
    held = held_out_ids()
    tests = [n for n in builtin_samples() if n.endswith(("-fresh60", "-readme40"))]
    assert len(tests) == 4 and all(set(load_sample(n)) <= held for n in tests)
    judge = TeamJudge()
    out = {"answer": 1.0, "status": "optimal"}
    for dataset in ("nl4opt", "optibench"):
        for p in load_dataset(dataset):
            if not is_test_problem(p):
                continue
            with pytest.raises(HeldOutProblemError, match="held-out test sample"):
                judge(out, p)
    assert judge.seen == []
    # An OptiBench copy of a held-out NL4Opt problem counts as that problem.
    copies = [
        p
        for p in load_dataset("optibench")
        if ((p.extra or {}).get("same_problem_as_nl4opt") or {}).get("id") in held
    ]
    assert copies and all(is_test_problem(p) for p in copies)


def test_training_selection_refuses_eval_samples():
    fresh = load_sample("nl4opt-fresh60")[:2]
    with pytest.raises(TuneError, match="overlaps the fixed eval samples") as exc:
        select_training("nl4opt", ids=fresh)
    assert fresh[0] in str(exc.value)
    in_samples = {i for n in builtin_samples() for i in load_sample(n)}
    free = [p.id for p in load_dataset("nl4opt") if p.id not in in_samples][:2]
    notes = []
    kept = select_training("nl4opt", ids=[*fresh, *free], drop_overlap=True, note=notes.append)
    assert [p.id for p in kept] == free and notes
    # The shipped training splits are what tuning is for.
    split_ids = [i for n in builtin_samples() if n.endswith("-tune-train") for i in load_sample(n)]
    nl4opt_split = [i for i in split_ids if i.startswith("nl4opt")][:3]
    assert len(select_training("nl4opt", ids=nl4opt_split)) == len(nl4opt_split)
    # The problems come in the order of the ids, so the ids listed last validate.
    backwards = list(reversed(nl4opt_split))
    assert [p.id for p in select_training("nl4opt", ids=backwards)] == backwards


# -- the command ------------------------------------------------------------------------------
def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def team_script(state):
    """The team solves PRINTERS right only with the prompt 'TUNED RULES'; every optimizer
    proposes that prompt in its own reply format."""

    def script(messages, tag=None, **kw):
        if tag and tag.startswith("optim"):
            state["optimizer_calls"] += 1
            if tag == "optim.gepa":
                return "The capacity is 35.\n```\nTUNED RULES\n```"
            return json.dumps(
                {"reasoning": "fix capacity", "suggestion": {"formulator_system": "TUNED RULES"}}
            )
        if tag == "formulator":
            return draft(35 if messages[0]["content"] == "TUNED RULES" else 30)
        return json.dumps({"verdict": "correct"})

    return script


def training_file(tmp_path, n=4):
    data = tmp_path / "train.jsonl"
    rows = [{"id": f"t{i}", "question": PRINTERS, "answer": 5050} for i in range(n)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    return data


@pytest.mark.parametrize("optimizer", ["gepa", "optoprime", "opro", "textgrad"])
def test_tune_runs_every_optimizer(optimizer, monkeypatch, capsys, tmp_path):
    state = {"optimizer_calls": 0}
    monkeypatch.setattr(
        optiforge.llm, "LLM", lambda *a, **k: ScriptedLLM(team_script(state)), raising=False
    )
    out = tmp_path / "prompts.json"
    code, _, err = run(
        [
            "tune",
            "--dataset",
            str(training_file(tmp_path)),
            "--optimizer",
            optimizer,
            "--out",
            str(out),
            "--batch-size",
            "2",
            "--val-fraction",
            "0.5",
            "--samples",
            "1",
            "--budget",
            "2",
            "--max-metric-calls",
            "8",
            "--minibatch",
            "2",
        ],
        capsys,
    )
    assert code in (0, None), err
    saved = json.loads(out.read_text())
    assert state["optimizer_calls"] >= 1
    assert saved["parameters"]["formulator_system"] == "TUNED RULES"
    assert saved["meta"]["optimizer"] == optimizer and saved["meta"]["rule"] == "strict_1e-6"
    assert saved["meta"]["initial_val_score"] == 0.0 and saved["meta"]["best_val_score"] == 1.0
    assert out.with_suffix(".state.json").exists() and out.with_suffix(".log.json").exists()


@pytest.mark.parametrize("optimizer", ["gepa", "optoprime", "opro", "textgrad"])
def test_every_optimizer_gets_the_prompt_cap(optimizer, tmp_path):
    from optiforge.trace import node

    prompt = node("Write the model.", name="formulator_system", trainable=True)
    cfg = TuneConfig(dataset="nl4opt", out=tmp_path / "p.json", max_prompt_chars=18000)
    opt = make_optimizer(optimizer, [prompt], ScriptedLLM([]), cfg)
    assert opt.kind == optimizer and opt.max_prompt_chars == 18000


def test_tune_rejects_bad_options(capsys, tmp_path):
    data = str(training_file(tmp_path))
    code, _, err = run(["tune", "--dataset", data, "--optimizer", "sgd"], capsys)
    assert code == 2 and "gepa, optoprime, opro, textgrad" in err
    code, _, err = run(["tune", "--dataset", data, "--rule", "close"], capsys)
    assert code == 2 and "unknown scoring rule" in err
    code, out, _ = run(["tune", "--help"], capsys)
    assert code == 0 and "gepa" in out and "state.json" in out and "resume" in out
    code, _, err = run(["tune", "--dataset", data, "--time-limit", "0"], capsys)
    assert code == 2 and "--time-limit must be > 0" in err


def test_tune_time_limit_bounds_each_problem(monkeypatch, capsys, tmp_path):
    """With --time-limit the team works to a deadline on every training problem, as under
    eval --timeout: the default prompt's formulator would take 30 s; it is cancelled at 1 s
    and scores 0, and the tuned prompt (answered at once) still wins."""
    state = {"optimizer_calls": 0}
    inner = team_script(state)

    async def script(messages, tag=None, **kw):
        if tag == "formulator" and messages[0]["content"] != "TUNED RULES":
            await asyncio.sleep(30)
        return inner(messages, tag=tag, **kw)

    monkeypatch.setattr(optiforge.llm, "LLM", lambda *a, **k: ScriptedLLM(script), raising=False)
    out = tmp_path / "prompts.json"
    argv = ["tune", "--dataset", str(training_file(tmp_path)), "--optimizer", "gepa"]
    argv += ["--out", str(out), "--val-fraction", "0.5", "--samples", "1", "--budget", "2"]
    argv += ["--max-metric-calls", "8", "--minibatch", "2", "--no-cache", "--time-limit", "1"]
    t0 = time.monotonic()
    code, _, err = run(argv, capsys)
    assert code in (0, None), err
    assert time.monotonic() - t0 < 20  # without the limit, each untuned problem takes 30 s
    meta = json.loads(out.read_text())["meta"]
    assert meta["time_limit_s"] == 1.0
    assert meta["initial_val_score"] == 0.0 and meta["best_val_score"] == 1.0


def test_a_resume_with_other_settings_is_refused(monkeypatch, capsys, tmp_path):
    state = {"optimizer_calls": 0}
    monkeypatch.setattr(
        optiforge.llm, "LLM", lambda *a, **k: ScriptedLLM(team_script(state)), raising=False
    )
    out = tmp_path / "prompts.json"
    data = str(training_file(tmp_path))

    def tune(samples=1, calls=6, *extra):
        argv = ["tune", "--dataset", data, "--optimizer", "gepa", "--out", str(out)]
        argv += ["--val-fraction", "0.5", "--budget", "2", "--minibatch", "2"]
        argv += ["--samples", str(samples), "--max-metric-calls", str(calls), *extra]
        return run(argv, capsys)

    code, _, err = tune()
    assert code in (0, None), err
    recorded = json.loads(out.with_suffix(".tune.json").read_text())
    assert recorded["samples"] == 1 and recorded["optimizer"] == "gepa"
    assert recorded["max_prompt_chars"] == 9000 and recorded["time_limit_s"] is None
    state_before = out.with_suffix(".state.json").read_text()
    # Other samples per problem would score other runs into the same search: refused.
    code, _, err = tune(2)
    assert code == 2 and "samples: 1 -> 2" in " ".join(err.split()) and "--restart" in err
    assert out.with_suffix(".state.json").read_text() == state_before  # nothing lost
    # A larger budget continues the same search; --restart starts over with the new settings.
    code, _, err = tune(1, 8)
    assert code in (0, None) and "resuming from" in err, err
    code, _, err = tune(2, 6, "--restart")
    assert code in (0, None), err
    assert json.loads(out.with_suffix(".tune.json").read_text())["samples"] == 2


_SLOW_TUNE = """
import json, sys, time
import optiforge.llm
from optiforge.llm.testing import ScriptedLLM
sys.path.insert(0, {here!r})
from test_tune import team_script

state = {{"optimizer_calls": 0}}
inner = team_script(state)
n = {{"calls": 0}}

def slow(messages, tag=None, **kw):
    if tag == "formulator":
        time.sleep(0.2)
    n["calls"] += 1
    if tag == "optim.gepa":  # each reflection proposes a new, longer prompt
        return "```\\nRULES " + "x" * n["calls"] + "\\n```"
    return inner(messages, tag=tag, **kw)

optiforge.llm.LLM = lambda *a, **k: ScriptedLLM(slow)
from optiforge.cli import main
main(sys.argv[1:])
"""


def test_tune_killed_with_sigkill_resumes_from_its_state_file(monkeypatch, capsys, tmp_path):
    data = training_file(tmp_path, n=6)
    out = tmp_path / "prompts.json"
    state_file = out.with_suffix(".state.json")
    argv = [
        "tune",
        "--dataset",
        str(data),
        "--optimizer",
        "gepa",
        "--out",
        str(out),
        "--val-fraction",
        "0.34",
        "--samples",
        "1",
        "--budget",
        "1",
        "--workers",
        "1",
        "--max-metric-calls",
        "200",
        "--no-cache",
    ]
    script = textwrap.dedent(_SLOW_TUNE.format(here=str(Path(__file__).parent)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", script, *argv], env=env)
    try:
        deadline = time.monotonic() + 90
        saved = {}
        while time.monotonic() < deadline and saved.get("iteration", 0) < 2:
            time.sleep(0.1)
            with contextlib.suppress(OSError, ValueError):
                saved = json.loads(state_file.read_text())
        assert saved.get("iteration", 0) >= 2, "no progress was saved"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    saved = json.loads(state_file.read_text())  # GEPA's own state: never a torn file

    # Resume in this process with a budget just above what was spent.
    state = {"optimizer_calls": 0}
    monkeypatch.setattr(
        optiforge.llm, "LLM", lambda *a, **k: ScriptedLLM(team_script(state)), raising=False
    )
    argv[argv.index("200")] = str(saved["metric_calls"] + 4)
    code, _, err = run(argv, capsys)
    assert code in (0, None), err
    final = json.loads(state_file.read_text())
    assert final["candidates"][: len(saved["candidates"])] == saved["candidates"]
    assert final["metric_calls"] > saved["metric_calls"]
    assert "resuming from" in err
