"""Planning an evaluation (optiforge.evals.plan): flag checks, problem selection, run.json
metadata, resume planning and the resume command, without a model or a subprocess."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import pytest

from optiforge.datasets import DatasetError
from optiforge.evals.journal import Journal, read_journal
from optiforge.evals.plan import (
    EvalRequest,
    default_out_dir,
    pending_count,
    plan_eval,
    requested_ids,
    resume_command,
    select_problems,
)
from optiforge.evals.records import EvalError, ResultRecord

ROWS = [
    {"id": "a", "question": "max x, x <= 3", "answer": 3, "tags": "easy"},
    {"id": "b", "question": "max y, y <= 4", "answer": 4, "tags": "easy, table"},
    {"id": "c", "question": "no answer known", "answer": None, "tags": "hard"},
    {"id": "d", "question": "max z, z <= 5", "answer": 5, "tags": "hard"},
]


@pytest.fixture
def data(tmp_path) -> str:
    path = tmp_path / "Mine.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"agent": "clever"}, "--agent must be team or direct, got 'clever'"),
        ({"samples": 0}, "--samples must be >= 1, got 0"),
        ({"budget": 0}, "--budget must be >= 1, got 0"),
        ({"retry_failed": True}, "--retry-failed needs --resume"),
        ({"executor": "slurm"}, "--executor must be local or ray, got 'slurm'"),
        ({"ray_workers": 2}, "--ray-address and --ray-workers need --executor ray"),
        ({"ray_address": "auto"}, "--ray-address and --ray-workers need --executor ray"),
        ({"executor": "ray", "ray_workers": 0}, "--ray-workers must be >= 1, got 0"),
    ],
)
def test_request_checks_flags(kwargs, message):
    with pytest.raises(EvalError) as info:
        EvalRequest(dataset="nl4opt", **kwargs)
    assert str(info.value) == message


def test_request_names():
    assert EvalRequest(dataset="NL4Opt").dataset_name == "nl4opt"
    assert EvalRequest(dataset="/x/Mine.jsonl").dataset_name == "Mine"
    custom = EvalRequest(dataset="nl4opt", agent="whatever", agent_fn="m:f")
    assert custom.agent_name == "custom"
    assert EvalRequest(dataset="nl4opt", agent="direct").agent_name == "direct"


def test_requested_ids_intersect_in_ids_order(tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("# mine\nd\nb\n", encoding="utf-8")
    assert requested_ids(None, None) is None
    assert requested_ids(" a, b ,,", None) == ["a", "b"]
    assert requested_ids(None, str(ids)) == ["d", "b"]
    assert requested_ids("b,a,d", str(ids)) == ["b", "d"]
    with pytest.raises(DatasetError, match="no sample named"):
        requested_ids(None, str(tmp_path / "missing"))


def test_unscorable_problems_are_left_out_with_a_note(data):
    notes = []
    sel = select_problems(EvalRequest(dataset=data), note=notes.append)
    assert [p.id for p in sel.problems] == ["a", "b", "d"]
    assert sel.unscored_left_out == 1 and sel.ids is None
    assert notes == [sel.note]
    assert notes[0] == (
        "1 of 4 selected problems have no usable ground truth under answer field 'answer'; "
        "they are left out (pass --include-unscored to run them)."
    )
    everything = select_problems(EvalRequest(dataset=data, include_unscored=True))
    assert [p.id for p in everything.problems] == ["a", "b", "c", "d"]
    assert everything.note is None and everything.unscored_left_out == 0


def test_filters_apply_before_limit(data):
    sel = select_problems(EvalRequest(dataset=data, category=["hard"], limit=5))
    assert [p.id for p in sel.problems] == ["d"]
    sel = select_problems(EvalRequest(dataset=data, ids="d,b,a", limit=2))
    assert [p.id for p in sel.problems] == ["a", "b"] and sel.ids == ["d", "b", "a"]


def test_nothing_left_is_an_error_after_the_note(data):
    notes = []
    with pytest.raises(DatasetError, match="no problems left to run after the filters"):
        select_problems(EvalRequest(dataset=data, ids="c"), note=notes.append)
    # the note names the field asked for when no problem is left to read it from
    assert notes and "answer field 'answer'" in notes[0]
    with pytest.raises(DatasetError, match="no problems left"):
        select_problems(EvalRequest(dataset=data, limit=0))


def test_default_out_dir():
    now = time.mktime((2026, 11, 30, 23, 5, 9, 0, 0, -1))
    req = EvalRequest(dataset="NL4Opt", agent="direct")
    assert default_out_dir(req, now) == Path("runs/eval-nl4opt-direct-20261130-230509")
    assert default_out_dir(EvalRequest(dataset="nl4opt", out=Path("x")), now) == Path("x")
    assert EvalRequest(dataset="nl4opt", out="runs/r").out == Path("runs/r")


def test_plan_records_what_runs(data, tmp_path):
    argv = ["eval", data, "--ids", "a,b", "-k", "3", "--budget", "4"]
    plan = plan_eval(
        EvalRequest(dataset=data, ids="a,b", samples=3, budget=4, out=tmp_path / "run"),
        concurrency=2,
        model="m",
        base_url="http://h",
        argv=argv,
    )
    meta = plan.meta
    assert (meta.dataset, meta.agent, meta.model, meta.base_url) == (
        "Mine",
        "team",
        "m",
        "http://h",
    )
    assert meta.samples == 3 and meta.budget == {"llm_samples": 4}
    assert meta.filters == {
        "ids": ["a", "b"],
        "sample": None,
        "limit": None,
        "category": None,
        "include_unscored": False,
    }
    assert meta.command == shlex.join(["optiforge", *argv])
    assert plan.pending == 2 and plan.out_dir == tmp_path / "run" and plan.concurrency == 2
    assert [p.id for p in plan.problems] == ["a", "b"]


def test_custom_agent_records_no_model(data, tmp_path):
    plan = plan_eval(
        EvalRequest(dataset=data, agent_fn="mod:fn", out=tmp_path),
        concurrency=1,
        model="m",
        base_url="u",
        argv=[],
    )
    assert plan.meta.agent == "custom:mod:fn"
    assert plan.meta.model is None and plan.meta.base_url is None


def test_concurrency_must_be_positive(data):
    with pytest.raises(EvalError, match="--concurrency must be >= 1, got 0"):
        plan_eval(EvalRequest(dataset=data), concurrency=0, model=None, base_url=None, argv=[])


def _record(pid: str, failure: str | None) -> ResultRecord:
    return ResultRecord(id=pid, dataset="Mine", failure_class=failure)


def test_resume_counts_what_is_left(data, tmp_path):
    problems = select_problems(EvalRequest(dataset=data)).problems
    out = tmp_path / "run"
    assert pending_count(problems, out, resume=False, retry_failed=False) == 3
    assert pending_count(problems, out, resume=True, retry_failed=False) == 3  # no journal yet
    journal = Journal(out)
    journal.append(_record("a", None))
    journal.append(_record("b", "llm_error"))
    journal.close()
    assert len(read_journal(out).latest()) == 2
    assert pending_count(problems, out, resume=True, retry_failed=False) == 1
    assert pending_count(problems, out, resume=True, retry_failed=True) == 2


def test_resume_command_replaces_out_and_resume():
    out = Path("runs/x y")
    assert resume_command([], out) == "optiforge eval --out 'runs/x y' --resume"
    argv = ["eval", "nl4opt", "-o", "old", "--limit", "3", "--resume", "--out=older"]
    assert resume_command(argv, out) == (
        "optiforge eval nl4opt --limit 3 --out 'runs/x y' --resume"
    )
    assert resume_command(["eval", "nl4opt", "--out"], out).startswith("optiforge eval nl4opt")
