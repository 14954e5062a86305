"""``optiforge solve`` and ``optiforge tune`` with scripted models."""

from __future__ import annotations

import json
import sys

import pytest

import optiforge.llm
from optiforge.cli import main
from optiforge.llm.testing import ScriptedLLM

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_team import GOOD, PRINTERS, router


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture
def scripted(monkeypatch):
    made = []

    def factory(*args, **kwargs):
        llm = ScriptedLLM(router([GOOD]))
        made.append(llm)
        return llm

    monkeypatch.setattr(optiforge.llm, "LLM", factory, raising=False)
    return made


def test_solve_prints_formulation_status_objective_and_values(scripted, capsys, tmp_path):
    graph = tmp_path / "g.json"
    code, out, err = run(["solve", PRINTERS, "--show-code", "--save-graph", str(graph)], capsys)
    assert code in (0, None), err
    assert "5050" in out and "optimal" in out
    assert "color" in out and "import pyomo" in out
    doc = json.loads(graph.read_text())
    assert doc["format"].startswith("optiforge.graph")
    assert any(n["name"] == "formulator_system" for n in doc["nodes"])


def test_solve_json_from_file_and_stdin(scripted, capsys, tmp_path, monkeypatch):
    f = tmp_path / "p.txt"
    f.write_text(PRINTERS)
    code, out, _ = run(["solve", str(f), "--json"], capsys)
    assert code in (0, None)
    sol = json.loads(out)
    assert sol["answer"] == pytest.approx(5050) and sol["agent"] == "team"
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(PRINTERS))
    _code, out, _ = run(["solve", "-", "--json"], capsys)
    assert json.loads(out)["answer"] == pytest.approx(5050)


def test_solve_clear_errors(capsys, tmp_path, monkeypatch):
    code, _, err = run(["solve", "   "], capsys)
    assert code == 2 and "empty" in err
    code, _, err = run(["solve", str(tmp_path / "missing.txt")], capsys)
    assert code == 2 and "no such readable file" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, _, err = run(["solve", str(empty)], capsys)
    assert code == 2 and "empty" in err
    code, _, err = run(["solve", PRINTERS, "--agent", "solo"], capsys)
    assert code == 2 and "team or direct" in err
    code, _, err = run(["solve", PRINTERS, "--base-url", "http://127.0.0.1:9/v1"], capsys)
    assert code == 2 and "cannot reach" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run(["solve", PRINTERS, "--prompts", str(bad)], capsys)
    assert code == 2 and "prompts file" in err


def test_tune_refuses_eval_overlap(capsys, tmp_path):
    code, _, err = run(
        [
            "tune",
            "--dataset",
            "nl4opt",
            "--ids",
            "nl4opt-0013,nl4opt-0002",
            "--out",
            str(tmp_path / "p.json"),
        ],
        capsys,
    )
    assert code == 2 and "overlaps the fixed eval samples" in err and "nl4opt-0013" in err


def test_tune_trains_and_saves_prompts(monkeypatch, capsys, tmp_path):
    wrong = GOOD.replace("color + bw <= 35", "color + bw <= 30")
    state = {"tuned": False}

    def script(messages, tag=None, **kw):
        if tag and tag.startswith("optim"):
            state["tuned"] = True
            return json.dumps(
                {"reasoning": "fix capacity", "suggestion": {"formulator_system": "TUNED RULES"}}
            )
        if tag == "formulator":
            system = messages[0]["content"]
            return GOOD if system == "TUNED RULES" else wrong
        return json.dumps({"verdict": "correct"})

    monkeypatch.setattr(optiforge.llm, "LLM", lambda *a, **k: ScriptedLLM(script), raising=False)
    data = tmp_path / "train.jsonl"
    rows = [{"id": f"t{i}", "question": PRINTERS, "answer": 5050} for i in range(4)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "prompts.json"
    code, _, err = run(
        [
            "tune",
            "--dataset",
            str(data),
            "--optimizer",
            "optoprime",
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
        ],
        capsys,
    )
    assert code in (0, None), err
    saved = json.loads(out.read_text())
    assert state["tuned"]
    assert saved["parameters"]["formulator_system"] == "TUNED RULES"
    assert saved["meta"]["best_val_score"] == 1.0
    from optiforge.agents.team import load_prompt_values

    assert load_prompt_values(out)["formulator_system"] == "TUNED RULES"


def test_saved_graph_of_a_run_shows_the_roles(scripted, capsys, tmp_path):
    graph = tmp_path / "g.json"
    code, _, err = run(["solve", PRINTERS, "--samples", "2", "--save-graph", str(graph)], capsys)
    assert code in (0, None), err
    doc = json.loads(graph.read_text())
    ops = [n.get("op") for n in doc["nodes"]]
    assert ops.count("formulate") == 2 and ops.count("check") == 2
    out_node = next(n for n in doc["nodes"] if n["id"] == doc["outputs"][0])
    assert out_node["op"] == "decide" and out_node["type"] == "Solution"
    params = [n["name"] for n in doc["nodes"] if n["kind"] == "parameter" and n["trainable"]]
    assert sorted(params) == ["formulator_system"]  # no other role was asked
    code, out, err = run(["graph", str(graph), "--format", "mermaid", "-o", "-"], capsys)
    assert code in (0, None), err
    assert "formulate" in out and "formulator_system" in out and "decide" in out
    code, _, err = run(["graph", str(graph)], capsys)
    assert code in (0, None) and (tmp_path / "g.html").read_text().count("formulate") >= 2


def test_solve_refuses_a_prompts_file_of_another_version(scripted, capsys, tmp_path):
    from optiforge.agents import save_prompts

    path = tmp_path / "p.json"
    save_prompts({"formulator_system": "A"}, path)
    path.write_text(path.read_text().replace('"version": 1', '"version": 7'))
    code, _, err = run(["solve", PRINTERS, "--prompts", str(path)], capsys)
    assert code == 2 and "version 7" in err
    assert not scripted or not scripted[-1].requests


def test_solve_time_limit_answers_by_the_deadline(monkeypatch, capsys):
    import asyncio
    import time

    async def script(messages, *, tag, temperature, **_):
        if temperature > 0:  # the sampled formulations never come
            await asyncio.sleep(3600)
        return GOOD

    monkeypatch.setattr(optiforge.llm, "LLM", lambda *a, **k: ScriptedLLM(script), raising=False)
    t0 = time.monotonic()
    code, out, err = run(["solve", PRINTERS, "--time-limit", "1", "--json"], capsys)
    assert time.monotonic() - t0 < 10
    assert code in (0, None), err
    sol = json.loads(out)
    assert sol["answer"] == pytest.approx(5050)
    assert sol["stopped"] == "deadline" and sol["time_limit_s"] == 1.0
    code, out, _ = run(["solve", PRINTERS, "--time-limit", "1"], capsys)
    assert "stopped early (deadline)" in out and "5050" in out
    code, _, err = run(["solve", PRINTERS, "--time-limit", "0"], capsys)
    assert code == 2 and "time-limit" in err


def test_eval_without_levers_records_every_levers_state(monkeypatch, capsys, tmp_path):
    from optiforge.agents.team import TeamConfig
    from optiforge.agents.team.levers import LEVERS, default_levers

    class Served(ScriptedLLM):
        route = "scripted"

        def ensure_server(self):  # what eval calls before its progress bar
            return None

    monkeypatch.setattr(optiforge.llm, "LLM", lambda *a, **k: Served(router([GOOD])), raising=False)

    assert default_levers() == {n: getattr(TeamConfig(), n) for n in LEVERS}
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"id": "p1", "question": PRINTERS, "answer": 5050}))
    out = tmp_path / "run"
    argv = ["eval", str(data), "--agent", "team", "--out", str(out), "--no-progress", "-k", "1"]
    code, _, err = run(argv, capsys)
    assert code in (0, None), err
    meta = json.loads((out / "run.json").read_text())
    assert meta["levers"] == default_levers()  # what ran, not "the defaults"
    # A run.json from before (levers: null, no lever on) resumes with today's command.
    meta["levers"] = None
    (out / "run.json").write_text(json.dumps(meta))
    code, _, err = run([*argv, "--resume"], capsys)
    assert code in (0, None), err
    meta["levers"] = {"verify": True}  # a run with another lever on is not this one
    (out / "run.json").write_text(json.dumps(meta))
    code, _, err = run([*argv, "--resume"], capsys)
    assert code != 0 and "levers" in err
