"""The ``verify`` lever with scripted models: sentence-level verification of the leading
answers, fixes solved as new attempts, cache, cap, budget and deadline."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from optiforge.agents.team import asolve, asolve_graph
from optiforge.agents.team.state import TeamConfig, used_prompts
from optiforge.agents.team.verify import Item, items_of, judge, misaligned, same_line
from optiforge.llm.testing import ScriptedLLM
from optiforge.solvers import ModelIR, solve_ir

WORKSHOP = (
    "A workshop makes chairs and tables. Each chair requires 2 hours of carpentry and 1 hour "
    "of painting. Each table requires 3 hours of carpentry and 2 hours of painting. There are "
    "100 hours of carpentry and 60 hours of painting available each week. Each chair gives a "
    "profit of $30 and each table a profit of $50. How many chairs and tables should be made "
    "to maximize profit?"
)
FOOD_TRUCK = (
    "A food truck makes wraps and platters. Each wrap takes 5 minutes and each platter takes 8 "
    "minutes, and the truck has 600 minutes available. There must be at least 3 times as many "
    "wraps as platters. The profit is $4 per wrap and $7 per platter. How many of each should "
    "be made to maximize profit?"
)


def _draft(names, obj, constraints):
    return json.dumps(
        {
            "variables": [
                {"name": n, "description": f"number of {n}", "units": n, "domain": "integer"}
                for n in names
            ],
            "objective": {"sense": "maximize", "expression": obj},
            "constraints": [{"source": s, "expression": e} for s, e in constraints],
        }
    )


# The matrix transposed: each product's numbers grouped by product, not by resource.
TRANSPOSED = _draft(
    ["chairs", "tables"],
    "30*chairs + 50*tables",
    [
        ("There are 100 hours of carpentry", "2*chairs + 1*tables <= 100"),
        ("60 hours of painting available", "3*chairs + 2*tables <= 60"),
    ],
)
# The ratio written the wrong way round.
REVERSED = _draft(
    ["wraps", "platters"],
    "4*wraps + 7*platters",
    [
        ("the truck has 600 minutes available", "5*wraps + 8*platters <= 600"),
        ("at least 3 times as many wraps as platters", "3*wraps >= platters"),
    ],
)


def _answer(draft: str, replace: dict[str, str]) -> float:
    """The optimum of ``draft`` with some constraints replaced (the right formulation)."""
    d = json.loads(draft)
    cons = [
        {"name": f"c{i}", "expression": replace.get(c["expression"], c["expression"])}
        for i, c in enumerate(d["constraints"])
    ]
    ir = {
        "variables": [{"name": v["name"], "domain": "integer"} for v in d["variables"]],
        "objective": d["objective"],
        "constraints": cons,
    }
    return solve_ir(ModelIR.from_json(ir)).objective


def team_script(formulator: str, verifier):
    """Formulator replies ``formulator``; the verifier's reply is ``verifier(prompt)``."""

    def script(messages, tag=None, **kw):
        if tag == "formulator":
            return formulator
        if tag == "verifier":
            return json.dumps({"expression": verifier(messages[-1]["content"])})
        return json.dumps({"verdict": "correct", "problems": [], "fixes": []})

    return script


def workshop_verifier(prompt: str) -> str:
    if "with 100 hours of carpentry" in prompt:
        return "2*chairs + 3*tables <= 100"
    if "with 60 hours of painting" in prompt:
        return "chairs + 2*tables <= 60"
    return "30*chairs + 50*tables"


def truck_verifier(prompt: str) -> str:
    if "3 times as many" in prompt.split("Sentences:")[1].splitlines()[1]:
        return "wraps >= 3*platters"
    if "600 minutes" in prompt:
        return "5*wraps + 8*platters <= 600"
    return "4*wraps + 7*platters"


def verifier_requests(llm: ScriptedLLM):
    return [r for r in llm.requests if r.tag == "verifier"]


async def test_the_fix_of_a_transposed_matrix_changes_the_answer():
    right = _answer(
        TRANSPOSED,
        {
            "2*chairs + 1*tables <= 100": "2*chairs + 3*tables <= 100",
            "3*chairs + 2*tables <= 60": "chairs + 2*tables <= 60",
        },
    )
    assert right == pytest.approx(1600)
    off = await asolve(WORKSHOP, llm=ScriptedLLM(team_script(TRANSPOSED, workshop_verifier)))
    assert off.answer == pytest.approx(1500) and off.levers == []
    llm = ScriptedLLM(team_script(TRANSPOSED, workshop_verifier))
    sol = await asolve(WORKSHOP, llm=llm, samples=3, config=TeamConfig(verify=True))
    assert sol.answer == pytest.approx(right)
    assert sol.levers == ["verify"]
    # Three identical drafts: each distinct line is asked once (objective + 2 constraints).
    asked = verifier_requests(llm)
    assert len(asked) == 3 and all(r.temperature == 0.0 for r in asked)
    assert "tables: 3 hours of carpentry; 2 hours of painting" in asked[0].prompt
    # Each verified attempt got a fix attempt (plan "verify", parent = the attempt).
    records = [s for s in sol.steps if s.role == "verifier" and "attempt" in s.detail]
    assert {r.detail["attempt"] for r in records} == {0, 1, 2}
    assert all(r.detail["verified"] is False and r.detail["fix_attempt"] for r in records)
    votes = next(s for s in sol.steps if s.role == "scheduler" and "votes" in s.detail)
    fixes = [v for v in votes.detail["votes"] if v["plan"] == "verify"]
    assert len(fixes) == 3 and all(v["value"] == pytest.approx(1600) for v in fixes)
    assert "2*chairs + 3*tables <= 100" in [c.expression for c in sol.formulation.constraints]
    assert sol.calls == 6  # 3 formulations + 3 verifier calls


async def test_the_fix_of_a_reversed_ratio_changes_the_answer():
    right = _answer(REVERSED, {"3*wraps >= platters": "wraps >= 3*platters"})
    wrong = _answer(REVERSED, {})
    assert right != pytest.approx(wrong)
    llm = ScriptedLLM(team_script(REVERSED, truck_verifier))
    sol = await asolve(FOOD_TRUCK, llm=llm, samples=3, config=TeamConfig(verify=True))
    assert sol.answer == pytest.approx(right) and sol.levers == ["verify"]
    ratio = [r for r in verifier_requests(llm) if "3 times as many" in r.prompt]
    assert ratio and "names these variables in this order: wraps, platters" in ratio[0].prompt
    # The ratio line was asked first (lines the text pairs numbers against come first).
    assert verifier_requests(llm)[0] is ratio[0] or "600" in verifier_requests(llm)[0].prompt


async def test_a_verifier_that_agrees_changes_nothing():
    good = _draft(
        ["wraps", "platters"],
        "4*wraps + 7*platters",
        [
            ("the truck has 600 minutes available", "5*wraps + 8*platters <= 600"),
            ("at least 3 times as many wraps as platters", "wraps >= 3*platters"),
        ],
    )
    base = await asolve(FOOD_TRUCK, llm=ScriptedLLM(team_script(good, truck_verifier)))
    llm = ScriptedLLM(team_script(good, truck_verifier))
    sol = await asolve(FOOD_TRUCK, llm=llm, samples=3, config=TeamConfig(verify=True))
    assert sol.answer == pytest.approx(base.answer) and sol.levers == []
    records = [s for s in sol.steps if s.role == "verifier" and "attempt" in s.detail]
    assert records and all(r.detail["verified"] is True for r in records)
    assert all("pass" in r.summary for r in records)
    votes = next(s for s in sol.steps if s.role == "scheduler" and "votes" in s.detail)
    assert all(v["plan"] != "verify" for v in votes.detail["votes"])


async def test_an_unusable_verifier_line_is_not_a_fix():
    # It drops a variable and the number 60 sits with painting, not with tables alone.
    def garbage(prompt: str) -> str:
        return "60*tables <= 60" if "painting available" in prompt else "chairs <=> 3"

    llm = ScriptedLLM(team_script(TRANSPOSED, garbage))
    sol = await asolve(WORKSHOP, llm=llm, samples=3, config=TeamConfig(verify=True))
    assert sol.answer == pytest.approx(1500) and sol.levers == []
    records = [s for s in sol.steps if s.role == "verifier" and "attempt" in s.detail]
    assert records and all(r.detail["verified"] is None for r in records)
    assert all(r.detail["unusable"] for r in records)


async def test_budget_and_call_cap_are_respected():
    llm = ScriptedLLM(team_script(TRANSPOSED, workshop_verifier))
    sol = await asolve(WORKSHOP, llm=llm, samples=3, budget=4, config=TeamConfig(verify=True))
    assert len(llm.requests) <= 4 and len(verifier_requests(llm)) == 1
    assert sol.answer is not None
    llm = ScriptedLLM(team_script(TRANSPOSED, workshop_verifier))
    await asolve(
        WORKSHOP, llm=llm, samples=3, budget=20, config=TeamConfig(verify=True, verify_calls=2)
    )
    assert len(verifier_requests(llm)) == 2
    # The lines paired against the text's numbers were asked first, the objective not at all.
    assert all("objective" not in r.prompt for r in verifier_requests(llm))


async def test_no_verifier_call_starts_when_its_time_does_not_fit():
    async def slow(messages, tag=None, **kw):
        if tag == "formulator":
            await asyncio.sleep(0.6)
            return TRANSPOSED
        return json.dumps({"expression": workshop_verifier(messages[-1]["content"])})

    llm = ScriptedLLM(slow)
    sol = await asolve(WORKSHOP, llm=llm, samples=3, time_limit=1.0, config=TeamConfig(verify=True))
    assert verifier_requests(llm) == [] and sol.answer == pytest.approx(1500)


async def test_the_deadline_cancels_a_verifier_call_in_flight():
    async def hangs(messages, tag=None, **kw):
        if tag == "formulator":
            return TRANSPOSED
        await asyncio.sleep(30)
        return json.dumps({"expression": "x"})

    llm = ScriptedLLM(hangs)
    t0 = time.monotonic()
    sol = await asolve(WORKSHOP, llm=llm, samples=3, time_limit=2.0, config=TeamConfig(verify=True))
    assert time.monotonic() - t0 < 6
    assert sol.stopped == "deadline" and sol.answer == pytest.approx(1500)
    cancelled = [s for s in sol.steps if s.role == "verifier" and s.detail.get("cancelled")]
    assert cancelled


async def test_the_recorded_run_has_verify_ops_and_a_trainable_verifier_prompt(tmp_path):
    from optiforge.trace import load_graph, save_graph

    llm = ScriptedLLM(team_script(TRANSPOSED, workshop_verifier))
    out = await asolve_graph(WORKSHOP, llm=llm, samples=3, config=TeamConfig(verify=True))
    doc = load_graph(save_graph(out, tmp_path / "g.json"))
    ops = [n.get("op") for n in doc["nodes"]]
    assert ops.count("verify") == 3 and ops.count("apply_fix") == 3
    params = {n["name"] for n in doc["nodes"] if n["kind"] == "parameter" and n["trainable"]}
    assert "verifier_system" in params
    assert "verifier_system" in used_prompts("team", TeamConfig(verify=True))
    assert "verifier_system" not in used_prompts("team", TeamConfig())


def _workshop_ir():
    from optiforge.agents.team.formulation import normalize_draft
    from optiforge.agents.team.schemas import FormulationDraft

    return normalize_draft(FormulationDraft.model_validate_json(TRANSPOSED), WORKSHOP).ir


def test_misaligned_numbers_are_found_from_the_sentences():
    ir = _workshop_ir()
    assert misaligned(WORKSHOP, ir, "2*chairs + 1*tables <= 100") == ["1*tables"]
    assert misaligned(WORKSHOP, ir, "3*chairs + 2*tables <= 60") == ["3*chairs"]
    assert misaligned(WORKSHOP, ir, "2*chairs + 3*tables <= 100") == []
    assert misaligned(WORKSHOP, ir, "chairs + 2*tables <= 60") == []


def test_lines_compare_up_to_a_positive_factor_and_judge_reads_them():
    ir = _workshop_ir()
    items = {it.name: it for it in items_of(WORKSHOP, ir)}
    assert set(items) == {"objective", "c1", "c2"}
    c1 = items["c1"]
    assert c1.request.endswith("the one with 100 hours of carpentry")
    assert same_line(ir, c1, "2*chairs + 1*tables <= 100", "4*chairs + 2*tables <= 200")
    assert same_line(ir, c1, "2*chairs + 1*tables <= 100", "-2*chairs - tables >= -100")
    assert same_line(ir, c1, "2*chairs + 1*tables <= 100", "2*chairs + 3*tables <= 100") is False
    obj = items["objective"]
    assert same_line(ir, obj, "30*chairs + 50*tables", "60*chairs + 100*tables") is False
    v = judge(c1, "2 chairs + 3 tables <= 100", ir, WORKSHOP)
    assert v.correct == "no" and v.fixed == "2*chairs + 3*tables <= 100"
    # A verifier that repeats a misaligned line does not pass it.
    assert judge(c1, "2*chairs + 1*tables <= 100", ir, WORKSHOP).correct == "unclear"
    # Numbers the text does not state are refused.
    assert judge(c1, "2*chairs + 7*tables <= 100", ir, WORKSHOP).correct == "unclear"


def test_lines_without_numbers_or_ratio_words_are_not_verified():
    ir = {
        "variables": [{"name": "x", "description": "number of x"}, {"name": "y"}],
        "objective": {"sense": "maximize", "expression": "x + y"},
        "constraints": [
            {"name": "c1", "expression": "x <= y", "source": "x is limited"},
            {"name": "c2", "expression": "x + y <= 10", "source": "at most 10 in total"},
        ],
    }
    text = "We make x and y. x is limited. At most 10 in total can be made. Maximize x + y."
    assert [it.name for it in items_of(text, ir)] == ["c2"]
    assert isinstance(items_of(text, ir)[0], Item)


@pytest.mark.parametrize(
    ("pid", "names", "old", "new", "dropped"),
    [
        # readme40 failures of the first measured run: each "fix" replaced a quantity.
        (
            "nl4opt-0034",
            ["long_desks", "short_desks"],
            "6*long_desks + 2*short_desks",
            "300*long_desks + 100*short_desks",
            [2.0, 6.0],
        ),
        (
            "nl4opt-0084",
            ["four_wheelers", "three_wheelers"],
            "60*four_wheelers + 40*three_wheelers >= 1000",
            "40 * four_wheelers + 40 * three_wheelers >= 1000",
            [60.0],
        ),
        (
            "nl4opt-0092",
            ["machinea", "machineb"],
            "30*machinea + 50*machineb <= 3000",
            "machinea * 30 + machineb * 50 <= 1000",
            [3000.0],
        ),
        # ... and one that was right: it adds the minutes per patient, drops nothing.
        (
            "nl4opt-0110",
            ["automatic", "manual"],
            "automatic + manual <= 20000",
            "automatic * 10 + manual * 15 <= 20000",
            [],
        ),
    ],
)
def test_a_fix_that_drops_the_texts_numbers_is_another_model(pid, names, old, new, dropped):
    from optiforge.agents.team.verify import dropped_numbers
    from optiforge.datasets import load_dataset

    text = load_dataset("nl4opt", ids=[pid])[0].text
    ir = {"variables": [{"name": n, "description": n.replace("_", " ")} for n in names]}
    assert dropped_numbers(text, ir, old, new) == dropped
    if dropped:  # the verifier's line is refused, not taken as a fix
        kind = "constraint" if "<" in old or ">" in old else "objective"
        item = Item(kind, "c1" if kind == "constraint" else "objective", old, (), "", "")
        full = {
            **ir,
            "objective": {"sense": "maximize", "expression": old},
            "constraints": [{"name": "c1", "expression": old}],
        }
        assert judge(item, new, full, text).correct == "unclear"


def test_a_number_on_the_wrong_variable_may_be_dropped():
    from optiforge.agents.team.verify import dropped_numbers

    ir = _workshop_ir()
    assert (
        dropped_numbers(WORKSHOP, ir, "2*chairs + 1*tables <= 100", "2*chairs + 3*tables <= 100")
        == []
    )


def _meat_shop():
    """nl4opt-0160 (readme40, studied): one sentence states two requirements."""
    from optiforge.datasets import load_dataset

    text = load_dataset("nl4opt", ids=["nl4opt-0160"])[0].text
    names = [("trucks", "number of truck trips"), ("vans", "number of van trips")]
    ir = {
        "variables": [{"name": n, "description": d, "domain": "integer"} for n, d in names],
        "objective": {"sense": "minimize", "expression": "trucks + vans"},
        "constraints": [
            {"name": "c1", "expression": "1000*trucks + 500*vans >= 50000"},
            {"name": "c2", "expression": "trucks <= vans"},
            {"name": "c3", "expression": "300*trucks + 100*vans <= 12500"},
        ],
    }
    return text, ir


def test_a_fix_that_writes_another_lines_requirement_is_refused():
    # Asked about the budget line, the verifier wrote the patties line of the same sentence.
    from optiforge.agents.team.verify import duplicated

    text, ir = _meat_shop()
    c3 = Item("constraint", "c3", "300*trucks + 100*vans <= 12500", (), "", "")
    assert duplicated(ir, c3, "1000*trucks + 500*vans >= 50000")
    assert duplicated(ir, c3, "2*trucks + vans >= 100")  # the same requirement, scaled
    assert not duplicated(ir, c3, "300*trucks + 100*vans <= 12500")  # itself is no duplicate
    assert judge(c3, "1000*trucks + 500*vans >= 50000", ir, text).correct == "unclear"
    # A fix of a real error is still a fix.
    c1 = Item("constraint", "c1", "1000*trucks + 500*vans >= 5000", (), "", "")
    wrong = {**ir, "constraints": [{**ir["constraints"][0], "expression": c1.expression}]}
    assert judge(c1, "1000*trucks + 500*vans >= 50000", wrong, text).correct == "no"


def test_two_fixes_that_write_the_same_requirement_are_both_left_out():
    from optiforge.agents.team.verify import Verdict, Verifier

    _, ir = _meat_shop()
    # Two lines whose fixes (each usable alone) come out as one requirement.
    ir["constraints"][0]["expression"] = "1000*trucks + 500*vans >= 5000"
    ir["constraints"][2]["expression"] = "1000*trucks + 50*vans >= 50000"
    items = [
        Item("constraint", "c1", ir["constraints"][0]["expression"], (), "", ""),
        Item("constraint", "c3", ir["constraints"][2]["expression"], (), "", ""),
    ]

    class Reply:
        def __init__(self, fixed):
            self.value = type("V", (), {"values": [Verdict("no", fixed, fixed)]})()

    verifier = Verifier.__new__(Verifier)
    verifier.cache = {it.key: Reply("1000*trucks + 500*vans >= 50000") for it in items}
    att = type("A", (), {"ir": ir})()
    out = verifier._outcome(att, items)
    assert out.fixes == [] and not out.others_passed
    assert [it.name for it, _ in out.unusable] == ["c1", "c3"]
