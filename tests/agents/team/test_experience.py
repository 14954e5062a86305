"""The experience library (issue #12, lever 4): building it from eval runs, the file,
BM25 retrieval, the formulator's few-shot messages and a scripted team run using them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from optiforge.agents.team import TeamConfig, TeamError, asolve, asolve_graph
from optiforge.agents.team import experience as xp
from optiforge.agents.team.experience import (
    ExperienceEntry,
    ExperienceError,
    ExperienceLibrary,
    constraint_kinds,
    draft_from_ir,
    example_budget,
    fit_examples,
    make_library,
    rule_insight,
)
from optiforge.agents.team.prompts import PromptSet
from optiforge.agents.team.roles import formulator_messages
from optiforge.datasets import load_dataset
from optiforge.evals.experience import (
    ExperienceSourceError,
    HeldOutExperienceError,
    select_experience,
)
from optiforge.evals.records import ResultRecord
from optiforge.llm.errors import LLMError
from optiforge.llm.testing import ScriptedLLM
from optiforge.prompts import load_prompt
from optiforge.trace import graph_to_dict

DATA = Path(__file__).resolve().parents[2] / "data"
RUN = DATA / "experience_run"
#: Kept from the fixture run under strict_1e-6: solved on the IR route and correct.
KEPT = ["nl4opt-0003", "nl4opt-0012", "nl4opt-0052"]


def _problem(pid: str):
    ds = "optibench" if pid.startswith("optibench") else "nl4opt"
    return load_dataset(ds, ids=[pid])[0]


# nl4opt-0016 (training split): the wage-bill problem most like nl4opt-0003 in the fixture.
STORE = _problem("nl4opt-0016").text
STORE_DRAFT = json.dumps(
    {
        "variables": [
            {"name": "seniors", "description": "number of senior citizens", "units": "workers",
             "domain": "integer"},
            {"name": "young", "description": "number of young adults", "units": "workers",
             "domain": "integer"},
        ],
        "objective": {"sense": "minimize", "expression": "500*seniors + 750*young"},
        "constraints": [
            {"source": "keep the weekly wage bill below $30000",
             "expression": "500*seniors + 750*young <= 30000"},
            {"source": "at least 50 workers", "expression": "seniors + young >= 50"},
            {"source": "at least 10 must be young adults", "expression": "young >= 10"},
            {"source": "young adults at least a third the number of senior citizens",
             "expression": "3*young >= seniors"},
        ],
    }
)  # fmt: skip


def build_library(runs, *, llm=None, rule=None, drop_held_out=False, note=lambda _m: None):
    """What `optiforge experience build` does: select, then make the library."""
    sel = select_experience(runs, rule=rule, drop_held_out=drop_held_out, note=note)
    return make_library(sel, llm=llm, provenance={"git_commit": "abc"}, note=note)


@pytest.fixture
def library(tmp_path) -> Path:
    """The library built from the fixture run without a model, saved to a file."""
    report = build_library([RUN])
    return report.library.save(tmp_path / "lib.jsonl")


def _write_run(path: Path, records: list[ResultRecord]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in records))
    return path


def _fixture_records() -> list[ResultRecord]:
    return [
        ResultRecord.model_validate_json(line)
        for line in (RUN / "results.jsonl").read_text().splitlines()
    ]


def _held_out_record(pid: str, *, text: str | None = None, ds: str = "nl4opt") -> ResultRecord:
    good = _fixture_records()[0]  # a correct one: only the held-out rule may stop it
    return good.model_copy(update={"id": pid, "dataset": ds, "text": text or _problem(pid).text})


# -- building -------------------------------------------------------------------------------
def test_build_keeps_only_solved_and_checked_problems():
    report = build_library([RUN])
    lib = report.library
    assert [e.id for e in lib.entries] == KEPT
    assert report.read == 6 and report.kept == 3
    skipped = {pid: why for why, ids in report.skipped.items() for pid in ids}
    assert skipped["nl4opt-0006"] == "not correct under strict_1e-6"  # 2333.333 vs 2333.33
    assert skipped["nl4opt-0037"] == "not correct under strict_1e-6"  # the transposed matrix
    assert skipped["nl4opt-0018"].startswith("no formulation")  # the code route's answer
    e = lib.entries[0]
    assert e.text == _problem("nl4opt-0003").text and e.answer == 150000.0
    assert [v.name for v in e.formulation.variables] == ["senior", "junior"]
    assert e.formulation.constraints[2].expression == "3*senior >= junior"
    assert "at least a third" in e.formulation.constraints[2].source
    assert e.insight_from == "rule" and "ratio" in e.insight
    h = lib.header
    assert h.format == "optiforge.experience" and h.version == 1 and h.entries == 3
    assert h.rule == "strict_1e-6" and h.insights == "rule" and h.model is None
    assert h.runs[0]["path"] == "tests/data/experience_run" and h.runs[0]["dataset"] == "nl4opt"
    assert h.commit == "abc" and h.built_at


def test_another_rule_admits_what_it_passes():
    report = build_library([RUN], rule="dp2")
    assert [e.id for e in report.library.entries] == [
        "nl4opt-0003",
        "nl4opt-0006",
        "nl4opt-0012",
        "nl4opt-0052",
    ]


def test_held_out_problems_are_refused_or_dropped(tmp_path):
    # nl4opt-0013 is in nl4opt-readme40; an OptiBench copy of a held-out NL4Opt problem and
    # a problem under another id with a held-out text are held out too.
    from optiforge.evals.tune import copy_of, held_out_ids

    copy = next(
        p
        for p in load_dataset("optibench")
        if copy_of(p) in held_out_ids() and p.id not in held_out_ids()
    )
    run = _write_run(
        tmp_path / "run",
        [
            *_fixture_records(),
            _held_out_record("nl4opt-0013"),
            _held_out_record(copy.id, text=copy.text, ds="optibench"),
            _held_out_record("mine-1", text="  " + _problem("nl4opt-0013").text.upper()),
        ],
    )
    with pytest.raises(HeldOutExperienceError) as exc:
        build_library([run])
    msg = str(exc.value)
    assert "3 problem(s) of held-out samples" in msg and "--drop-held-out" in msg
    assert "nl4opt-0013 (in nl4opt-readme40)" in msg
    assert f"{copy.id} (a copy of {copy_of(copy)}" in msg
    assert "mine-1 (the text of nl4opt-0013" in msg
    notes: list[str] = []
    report = build_library([run], drop_held_out=True, note=notes.append)
    assert [e.id for e in report.library.entries] == KEPT
    assert sorted(report.skipped["held out"]) == sorted(["nl4opt-0013", copy.id, "mine-1"])
    assert any("left out 3 problem(s) of held-out samples" in n for n in notes)
    assert any(n.startswith("[3/3] nl4opt-0052") for n in notes)  # progress per entry


def test_a_training_problem_in_no_sample_may_enter(tmp_path):
    rec = _held_out_record("user-7", text="A baker makes bread and cake ...")
    report = build_library([_write_run(tmp_path / "run", [rec])])
    assert [e.id for e in report.library.entries] == ["user-7"]


def test_bad_run_directories_fail_clearly(tmp_path):
    with pytest.raises(ExperienceSourceError, match="not an eval run directory"):
        build_library([tmp_path])
    with pytest.raises(ExperienceSourceError, match="at least one"):
        build_library([])
    with pytest.raises(ExperienceSourceError, match="unknown rule 'nope'"):
        build_library([RUN], rule="nope")
    (tmp_path / "results.jsonl").write_text('{"id": 1}\n{"id": "x"}\n')
    with pytest.raises(ExperienceSourceError, match="line 1"):
        build_library([tmp_path])


def test_insights_from_the_model_and_the_fallback_when_a_call_fails():
    asked: list[list[dict]] = []

    def script(messages, tag=None, **kw):
        asked.append(messages)
        if "nl4opt-0012" in json.dumps(messages) or "condos" in messages[-1]["content"]:
            raise LLMError("server down")
        return json.dumps({"insight": "Ratios go the way the sentence says. Keep it. Extra."})

    llm = ScriptedLLM(script)
    report = build_library([RUN], llm=llm)
    by_id = {e.id: e for e in report.library.entries}
    assert by_id["nl4opt-0003"].insight == "Ratios go the way the sentence says. Keep it."
    assert by_id["nl4opt-0003"].insight_from == "llm"
    assert by_id["nl4opt-0012"].insight_from == "rule" and report.llm_failures == 1
    assert report.library.header.insights == "llm" and report.library.header.model == "scripted"
    assert all(r.tag == "experience" and r.temperature == 0.0 for r in llm.requests)
    first = asked[0]
    assert first[0]["content"] == load_prompt("team/experience_insight")
    assert _problem("nl4opt-0003").text in first[1]["content"]
    assert '"expression":"3*senior >= junior"' in first[1]["content"]


def test_draft_from_ir_keeps_bounds_and_refuses_indexed_models():
    ir = {
        "variables": [
            {"name": "x", "domain": "integer", "lb": 2.0, "ub": 10.0},
            {"name": "y", "domain": "binary", "lb": 0.0, "ub": 1.0},
        ],
        "objective": {"sense": "maximize", "expression": "x + y"},
        "constraints": [{"name": "c1", "expression": "x + y <= 8", "source": "at most 8"}],
    }
    d = draft_from_ir(ir)
    assert [c.expression for c in d.constraints] == ["x + y <= 8", "x >= 2", "x <= 10"]
    assert d.variables[1].domain == "binary"
    with pytest.raises(ExperienceError, match="sets or parameters"):
        draft_from_ir({**ir, "sets": [{"name": "I", "elements": ["1", "2"]}]})
    indexed = {**ir, "constraints": [{"name": "c", "expression": "x <= 1", "for_all": "i in I"}]}
    with pytest.raises(ExperienceError, match="indexed constraint 'c'"):
        draft_from_ir(indexed)
    with pytest.raises(ExperienceError, match="free variable 'x'"):
        draft_from_ir({**ir, "variables": [{"name": "x", "lb": None}]})
    with pytest.raises(ExperienceError, match="draft schema"):
        draft_from_ir({**ir, "variables": [{"name": "x" * 40}]})
    with pytest.raises(ExperienceError, match="no variables"):
        draft_from_ir({"variables": [], "objective": {}})


def test_rule_insight_follows_the_constraint_kinds():
    lib = build_library([RUN]).library
    acc, condos, drills = (e.formulation for e in lib.entries)
    assert constraint_kinds(acc) == {"minimum": 1, "bound": 1, "ratio": 1, "limit": 1}
    assert constraint_kinds(condos) == {"limit": 1, "ratio": 1, "bound": 1}
    text = rule_insight(drills)
    assert text.startswith("Minimize over 2 integer variables with 1 resource limit")
    assert "A >= k*B" in text and text.count(". ") <= 2
    plain = draft_from_ir(
        {
            "variables": [{"name": "a"}, {"name": "b"}],
            "objective": {"sense": "maximize", "expression": "a + b"},
            "constraints": [
                {"expression": "2*a + 3*b <= 10"},
                {"expression": "a >= 0"},
            ],
        }
    )
    assert constraint_kinds(plain) == {"limit": 1}  # non-negativity says nothing
    assert "Give each resource its own constraint" in rule_insight(plain)


# -- the file -------------------------------------------------------------------------------
def test_save_and_load_round_trip(library):
    lib = ExperienceLibrary.load(library)
    assert [e.id for e in lib.entries] == KEPT and lib.path == library
    again = build_library([RUN]).library
    assert lib.entries == again.entries
    lines = library.read_text().splitlines()
    assert json.loads(lines[0])["format"] == "optiforge.experience" and len(lines) == 4


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda ls: [*ls[:2], "{not json", *ls[3:]], "line 3: not valid JSON"),
        (lambda ls: ['{"format": "something else"}', *ls[1:]], "line 1: not an experience"),
        (lambda ls: [ls[0].replace('"version": 1', '"version": 9'), *ls[1:]], "version 9"),
        (lambda ls: [*ls[:3], json.dumps({"id": "x", "text": "t"})], "line 4: bad entry"),
        (lambda ls: [*ls, ls[1]], "duplicate entry 'nl4opt-0003'"),
        (lambda ls: ls[:-1], "header says 3 entries but the file has 2"),
        (lambda ls: [], "empty file"),
    ],
    ids=["json", "header", "version", "entry", "duplicate", "cut", "empty"],
)
def test_malformed_files_fail_naming_the_line(library, edit, message):
    library.write_text("\n".join(edit(library.read_text().splitlines())) + "\n")
    with pytest.raises(ExperienceError, match=message) as exc:
        ExperienceLibrary.load(library)
    assert str(library) in str(exc.value)


def test_missing_library_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ExperienceError, match="no experience library at"):
        ExperienceLibrary.load(tmp_path / "nope.jsonl")
    monkeypatch.setattr(xp, "DEFAULT_LIBRARY", tmp_path / "shipped.jsonl")
    with pytest.raises(ExperienceError, match="ships none"):
        xp.load_library(None)


# -- retrieval ------------------------------------------------------------------------------
def test_retrieval_ranks_the_most_similar_problem_first(library):
    lib = ExperienceLibrary.load(library)
    hits = lib.retrieve(STORE, k=3)
    assert hits[0].entry.id == "nl4opt-0003"  # wage bill, at least a third, workers
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    drills = lib.retrieve("How many drills? Water and gems limit the drills.", k=1)
    assert [h.entry.id for h in drills] == ["nl4opt-0052"]
    assert lib.retrieve("zebra quokka", k=2) == []  # no word in common: nothing
    assert len(lib.retrieve(STORE, k=1)) == 1 and lib.retrieve(STORE, k=0) == []


def test_retrieval_excludes_the_problem_itself(library):
    lib = ExperienceLibrary.load(library)
    own = _problem("nl4opt-0003").text
    assert "nl4opt-0003" not in [h.entry.id for h in lib.retrieve(own, k=3)]
    spaced = "  " + own.replace(" ", "   ").upper()
    assert "nl4opt-0003" not in [h.entry.id for h in lib.retrieve(spaced, k=3)]
    hits = lib.retrieve(STORE, k=3, exclude_id="nl4opt-0003")
    assert hits and "nl4opt-0003" not in [h.entry.id for h in hits]


def test_examples_are_capped_by_length(library):
    hits = ExperienceLibrary.load(library).retrieve(STORE, k=3)
    full = fit_examples(hits, 100_000)
    assert full.ids == [h.entry.id for h in hits] and not full.left_out
    assert full.examples[0] == (hits[0].entry.text, hits[0].entry.formulation_json())
    first = len(hits[0].entry.text) + len(hits[0].entry.formulation_json())
    one = fit_examples(hits, first + len(hits[0].entry.insight) + 60)
    assert one.ids == [hits[0].entry.id] and one.left_out == [h.entry.id for h in hits[1:]]
    assert fit_examples(hits, 10).examples == []
    system = len(load_prompt("team/formulator_system"))
    assert example_budget(system, 500) == xp.MAX_EXAMPLE_CHARS
    assert example_budget(system, 5000) < example_budget(system, 4000) < xp.MAX_EXAMPLE_CHARS
    assert example_budget(system, 20_000) == 0
    # What is sent stays within the context: system + examples + problem + the reply.
    room = xp.example_budget(system, 2000)
    total_tokens = (system + room + 2000) / xp.CHARS_PER_TOKEN + xp.REPLY_TOKENS
    assert total_tokens <= xp.CONTEXT_TOKENS


# -- injection ------------------------------------------------------------------------------
def test_formulator_messages_put_the_examples_between_system_and_problem():
    ps = PromptSet()
    plain = formulator_messages(ps, "PROBLEM")
    assert [m["role"] for m in plain] == ["system", "user"]
    assert plain[1]["content"] == ps.render("formulator_user", problem="PROBLEM")
    shots = [("P1 text", '{"a":1}'), ("P2 text", '{"b":2}')]
    msgs = formulator_messages(ps, "PROBLEM", examples=shots, insights=["lesson one"])
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert msgs[0] == plain[0]
    assert msgs[1]["content"] == ps.render("formulator_user", problem="P1 text")
    assert msgs[2]["content"] == '{"a":1}' and msgs[4]["content"] == '{"b":2}'
    last = msgs[-1]["content"]
    assert last.startswith("Lessons from similar solved problems:\n- lesson one\n\n")
    assert last.endswith(plain[1]["content"])  # the problem comes last
    both = formulator_messages(ps, "PROBLEM", hints="Watch out for: X", examples=shots)
    assert both[0]["content"].endswith("Watch out for: X") and both[1:5] == msgs[1:5]
    repair = formulator_messages(ps, "PROBLEM", "PREV", "- bad", examples=shots)
    assert [m["role"] for m in repair][:5] == [m["role"] for m in msgs][:5]
    assert repair[:5] == msgs[:5]  # the same prefix as the first formulation
    assert repair[-2]["content"] == "PREV" and "- bad" in repair[-1]["content"]


def _store_llm() -> ScriptedLLM:
    def script(messages, tag=None, **kw):
        return STORE_DRAFT if tag == "formulator" else json.dumps({"verdict": "correct"})

    return ScriptedLLM(script)


async def test_team_run_uses_the_examples_and_records_the_lever(library, monkeypatch):
    # Room for two examples (the default cap fits one of these with the system prompt).
    monkeypatch.setattr(xp, "MAX_EXAMPLE_CHARS", 6000)
    llm = _store_llm()
    cfg = TeamConfig(experience=True, experience_library=str(library), experience_k=2)
    sol = await asolve(STORE, llm=llm, samples=3, config=cfg)
    assert sol.answer == pytest.approx(28250) and sol.levers == ["experience"]
    lib = ExperienceLibrary.load(library)
    top = lib.retrieve(STORE, k=2)
    forms = [r for r in llm.requests if r.tag == "formulator"]
    assert len(forms) == 3
    for r in forms:
        roles = [m["role"] for m in r.messages]
        assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
        assert top[0].entry.text in r.messages[1]["content"]
        assert r.messages[2]["content"] == top[0].entry.formulation_json()
        assert (
            STORE in r.messages[-1]["content"] and top[0].entry.insight in r.messages[-1]["content"]
        )
    (step,) = [s for s in sol.steps if s.role == "experience"]
    assert step.detail["ids"] == [h.entry.id for h in top] and step.ok and step.calls == 0
    assert "nl4opt-0003" in step.summary
    # Off (the default): the same run sends the plain two messages and fires nothing.
    plain = _store_llm()
    off = await asolve(STORE, llm=plain, samples=3)
    assert off.levers == [] and not [s for s in off.steps if s.role == "experience"]
    assert all(len(r.messages) == 2 for r in plain.requests)


async def test_repairs_keep_the_examples(library):
    bad = STORE_DRAFT.replace('"young >= 10"', '"young >= 100"')  # infeasible
    replies = [bad, STORE_DRAFT]

    def script(messages, tag=None, **kw):
        if tag == "formulator":
            return replies.pop(0) if len(replies) > 1 else replies[0]
        return json.dumps({"verdict": "wrong", "problems": ["too many"], "fixes": ["10"]})

    llm = ScriptedLLM(script)
    cfg = TeamConfig(experience=True, experience_library=str(library))
    sol = await asolve(STORE, llm=llm, samples=1, budget=6, config=cfg)
    assert sol.answer == pytest.approx(28250) and sol.levers == ["experience"]
    forms = [r for r in llm.requests if r.tag == "formulator"]
    first, repair = forms[0], forms[1]
    assert repair.messages[: len(first.messages)] == first.messages
    assert len(repair.messages) == len(first.messages) + 2


async def test_recall_is_a_node_that_the_formulator_reads(library):
    cfg = TeamConfig(experience=True, experience_library=str(library))
    out = await asolve_graph(STORE, llm=_store_llm(), samples=2, config=cfg)
    doc = graph_to_dict(out)
    by_id = {n["id"]: n for n in doc["nodes"]}
    (recall,) = [n for n in doc["nodes"] if n.get("op") == "recall"]
    assert [by_id[p]["name"] for p in recall["parents"]] == ["problem"]
    forms = [n for n in doc["nodes"] if n.get("op") == "formulate"]
    assert len(forms) == 2 and all(recall["id"] in n["parents"] for n in forms)
    # No prompt of the build step is a parameter of the run.
    params = {n["name"] for n in doc["nodes"] if n["kind"] == "parameter"}
    assert "experience_insight" not in params


async def test_no_similar_example_fires_nothing(tmp_path):
    entry = ExperienceEntry(
        id="t-1",
        text="Zebras and quokkas graze.",
        formulation=draft_from_ir(
            {
                "variables": [{"name": "z"}],
                "objective": {"sense": "maximize", "expression": "z"},
                "constraints": [{"expression": "z <= 1"}],
            }
        ),
        insight="none",
    )
    path = ExperienceLibrary([entry]).save(tmp_path / "lib.jsonl")
    llm = _store_llm()
    cfg = TeamConfig(experience=True, experience_library=str(path))
    sol = await asolve(STORE, llm=llm, samples=1, config=cfg)
    assert sol.levers == [] and all(len(r.messages) == 2 for r in llm.requests)
    (step,) = [s for s in sol.steps if s.role == "experience"]
    assert not step.ok and "none similar" in step.summary


async def test_experience_without_a_library_fails_before_any_call(tmp_path, monkeypatch):
    monkeypatch.setattr(xp, "DEFAULT_LIBRARY", tmp_path / "missing.jsonl")
    llm = _store_llm()
    with pytest.raises(TeamError, match="needs an experience library"):
        await asolve(STORE, llm=llm, config=TeamConfig(experience=True))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{}\n")
    with pytest.raises(ExperienceError, match="line 1"):
        await asolve(
            STORE, llm=llm, config=TeamConfig(experience=True, experience_library=str(bad))
        )
    assert llm.requests == []


# -- the command ----------------------------------------------------------------------------
def test_cli_builds_a_library_and_refuses_held_out_runs(tmp_path, capsys):
    from optiforge.cli import main

    out = tmp_path / "lib.jsonl"
    with pytest.raises(SystemExit) as exc:
        main(["experience", "build", str(RUN), "--out", str(out), "--no-llm"])
    assert exc.value.code in (0, None)
    got = capsys.readouterr()
    assert f"wrote {out}: 3 entries from 6 problem(s) in 1 run(s)" in got.out
    assert "[3/3] nl4opt-0052" in got.err and "left out" in got.err
    assert [e.id for e in ExperienceLibrary.load(out).entries] == KEPT
    run = tmp_path / "heldout"
    shutil.copytree(RUN, run)
    with (run / "results.jsonl").open("a") as f:
        f.write(_held_out_record("nl4opt-0013").model_dump_json() + "\n")
    with pytest.raises(SystemExit) as exc:
        main(["experience", "build", str(run), "--out", str(tmp_path / "x.jsonl"), "--no-llm"])
    assert exc.value.code == 2
    assert "nl4opt-0013 (in nl4opt-readme40)" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()
    with pytest.raises(SystemExit) as exc:
        main(["experience", "build", "--help"])
    assert exc.value.code == 0
    assert "--drop-held-out" in capsys.readouterr().out


def test_the_library_is_checked_with_the_lever_before_a_run(library, tmp_path, monkeypatch):
    from optiforge.agents.team.levers import experience_library

    monkeypatch.setattr(xp, "DEFAULT_LIBRARY", tmp_path / "none-shipped.jsonl")
    assert experience_library("verify", None) is None
    with pytest.raises(TeamError, match="turn the lever on"):
        experience_library("verify", library)
    with pytest.raises(xp.ExperienceError, match="--experience-library FILE"):
        experience_library("all", None)
    info = experience_library("experience", library)
    assert info.entries == len(xp.load_library(library)) > 0 and len(info.sha256) == 64
    moved = tmp_path / "elsewhere.jsonl"
    shutil.copy(library, moved)
    assert experience_library("all", moved).sha256 == info.sha256
