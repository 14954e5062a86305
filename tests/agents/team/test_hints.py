"""Lever ``hints`` (issue #12): error-class hints chosen from cues, in the formulator's
system message. Scripted models, the real solver; the real-model run is in
test_hints_vote_slow.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from optiforge.agents.team import TeamConfig, asolve, asolve_graph
from optiforge.agents.team.hints import (
    HINT_HEADING,
    MAX_HINTS,
    HintError,
    classify,
    load_hints,
    parse_hint,
    planner_classes,
    select_hints,
)
from optiforge.agents.team.prompts import PromptSet, load_prompt_values
from optiforge.agents.team.roles import formulator_messages
from optiforge.agents.team.schemas import PlanChoice
from optiforge.evals.sample import load_sample
from optiforge.llm.testing import ScriptedLLM
from optiforge.trace import graph_to_dict

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_team import INFEASIBLE, PRINTERS, router

ROOT = Path(__file__).resolve().parents[3]

# An invented problem (not from any benchmark) with a ratio, a percentage, per-item amounts
# of two resources and totals.
DELI = (
    "A deli makes wraps and platters. Each wrap needs 5 units of meat and 3 units of rice. "
    "Each platter needs 7 units of meat and 5 units of rice. At most 300 units of meat and "
    "250 units of rice are available. At least 3 times as many wraps as platters must be "
    "made, and at most 40% of the items can be platters. A wrap gives $4 profit and a "
    "platter $6. How many of each should be made to maximize profit?"
)


def deli_draft(ratio="wraps >= 3*platters"):
    return json.dumps(
        {
            "variables": [
                {
                    "name": "wraps",
                    "description": "wraps made",
                    "units": "wraps",
                    "domain": "integer",
                },
                {
                    "name": "platters",
                    "description": "platters made",
                    "units": "platters",
                    "domain": "integer",
                },
            ],
            "objective": {"sense": "maximize", "expression": "4*wraps + 6*platters"},
            "constraints": [
                {"source": "meat", "expression": "5*wraps + 7*platters <= 300"},
                {"source": "rice", "expression": "3*wraps + 5*platters <= 250"},
                {"source": "ratio", "expression": ratio},
                {"source": "share", "expression": "platters <= 0.4*(wraps + platters)"},
            ],
        }
    )


def _systems(llm, tag="formulator"):
    return [r.messages[0]["content"] for r in llm.requests if r.tag == tag]


# -- the library ------------------------------------------------------------------------------
def test_every_hint_file_is_short_concrete_and_seen_only_where_looking_is_allowed():
    hints = load_hints()
    assert len(hints) >= 10
    assert len({h.id for h in hints}) == len(hints)
    allowed = set()
    for name in (
        "nl4opt-readme40",
        "optibench-readme40",
        "nl4opt-tune-train",
        "optibench-tune-train",
        "nl4opt-tune-val",
        "optibench-tune-val",
        "nl4opt-complex-train",
        "optibench-complex-train",
    ):
        allowed |= set(load_sample(name))
    for h in hints:
        lines = h.text.splitlines()
        assert lines[-1].startswith("Example:"), h.id  # one-line example last
        assert len(h.text) <= 400, h.id
        assert h.seen and set(h.seen) <= allowed, (h.id, set(h.seen) - allowed)
    # the library's order: priority first, then id
    assert [h.priority for h in hints] == sorted((h.priority for h in hints), reverse=True)
    classes = {c for h in hints for c in h.classes}
    assert {"ratio", "percent", "per_item_total", "coefficient_grouping", "integrality"} <= classes


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("no front matter\n", "front matter"),
        ("---\nid: x\ncolor: red\n---\ntext\n", "not one of"),
        ("---\nid: x\nclasses: a\npriority: high\n---\ntext\n", "priority must be an integer"),
        ("---\nid: x\nclasses: a\n---\n\n", "text"),
        ("---\nid: Bad Id\nclasses: a\n---\ntext\n", "id"),
    ],
)
def test_a_malformed_hint_file_says_why(raw, message):
    with pytest.raises(HintError, match=message):
        parse_hint(raw, "bad.md")


def test_a_hint_file_parses_its_front_matter():
    h = parse_hint(
        "---\nid: a_b\nclasses: x, y\npriority: 3\nseen: p-1, p-2\n---\nDo.\nExample: e\n"
    )
    assert (h.id, h.classes, h.priority, h.seen) == ("a_b", ["x", "y"], 3, ["p-1", "p-2"])
    assert h.text == "Do.\nExample: e"


# -- classification from cues ----------------------------------------------------------------
def test_cues_classify_the_error_classes_of_a_problem():
    got = classify(DELI)
    assert got["ratio"] == "3 times"
    assert got["percent"] == "% of"
    assert {"per_item_total", "coefficient_grouping", "at_least_at_most"} <= set(got)
    assert "strict" not in got and "nonlinear" not in got and "table" not in got


@pytest.mark.parametrize(
    ("text", "cls", "present"),
    [
        ("The number of vans must exceed the number of minibuses.", "strict", True),
        ("The cost must not exceed the budget of $500.", "strict", False),
        ("Pies must be at least twice the number of cakes.", "ratio", True),
        ("There can be at most thrice the oil as lavender.", "ratio", True),
        ("Make at most 30 percent of the feed corn.", "percent", True),
        ("At least 75% implemented lights must be lamps.", "percent", True),
        ("The first mix contains 20% cat paw snacks and 80% nuts.", "percent", False),
        ("Investments in telecom earn 3% a year.", "percent", False),
        ("How many chairs should be made?", "integrality", True),
        ("Cut squares from the corners and fold up the sides to make a box.", "nonlinear", True),
        ("Each ad is seen by 5 million people.", "units_scale", True),
        ("Each cake sells for $5 and costs $2 to make.", "net_profit", True),
        ("Each cake gives a profit of $5.", "net_profit", False),
        ("| item | cost |\n|---|---|\n| a | 3 |", "table", True),
    ],
)
def test_single_cues(text, cls, present):
    assert (cls in classify(text)) is present


def test_the_planner_models_classification_adds_classes():
    assert planner_classes(None) == {}
    got = planner_classes(PlanChoice(integer_variables="yes", nonlinear=True))
    assert set(got) == {"nonlinear", "integrality"}
    assert planner_classes(PlanChoice(integer_variables="unclear")) == {}


def test_selection_is_capped_ordered_and_the_same_for_the_same_classes():
    chosen = select_hints(classify(DELI))
    assert len(chosen) == MAX_HINTS
    assert [h.id for h in chosen][:2] == ["percent", "ratio"]  # priority 10, then id
    assert select_hints(["ratio", "percent", "table"]) == select_hints(
        ["table", "percent", "ratio"]
    )
    assert select_hints([]) == [] and select_hints(["no such class"]) == []
    assert len(select_hints(list(classify(DELI)), limit=2)) == 2


# -- the formulator's messages ----------------------------------------------------------------
def test_hints_go_at_the_end_of_the_system_message_and_the_problem_last():
    ps = PromptSet(load_prompt_values(None))
    block = "Watch out for:\n- a hint"
    plain = formulator_messages(ps, DELI)
    hinted = formulator_messages(ps, DELI, hints=block)
    base = ps.text("formulator_system")
    assert plain[0]["content"] == base  # nothing changes without hints
    assert hinted[0]["content"].startswith(base.rstrip())  # the cached prefix is kept
    assert hinted[0]["content"].endswith(block)
    assert hinted[1:] == plain[1:] and DELI in hinted[-1]["content"]
    assert DELI not in hinted[0]["content"]
    # a repair keeps the same system message
    repair = formulator_messages(ps, DELI, previous="{}", issues="- x", hints=block)
    assert repair[0] == hinted[0] and repair[-1]["role"] == "user"


def test_problems_of_one_class_share_the_system_message():
    other = DELI.replace("deli", "cafe").replace("300", "310").replace("wraps", "rolls")
    ps = PromptSet(load_prompt_values(None))
    a = select_hints(classify(DELI))
    b = select_hints(classify(other))
    assert [h.id for h in a] == [h.id for h in b]
    from optiforge.agents.team.hints import hint_block

    ma = formulator_messages(ps, DELI, hints=hint_block(a))
    mb = formulator_messages(ps, other, hints=hint_block(b))
    assert ma[0] == mb[0] and ma[1] != mb[1]


# -- the lever in a run ------------------------------------------------------------------------
async def test_the_lever_injects_hints_and_fires():
    llm = ScriptedLLM(router([deli_draft()]))
    sol = await asolve(DELI, llm=llm, samples=3, config=TeamConfig(hints=True))
    assert sol.answer is not None
    systems = _systems(llm)
    assert len(systems) == 3 and len(set(systems)) == 1  # one prefix for the whole run
    assert HINT_HEADING in systems[0]
    assert "wraps >= 3*platters" in systems[0]  # the ratio hint's example
    assert "0.3*(seasonal + fulltime)" in systems[0]  # the percent hint's example
    assert sol.levers == ["hints"]
    step = next(s for s in sol.steps if "hints" in s.detail)
    assert step.detail["hints"][:2] == ["percent", "ratio"]
    assert step.detail["classes"]["ratio"] == "3 times"
    assert "hints for the formulator: percent, ratio" in step.summary


async def test_off_by_default_nothing_changes():
    assert TeamConfig().hints is False
    llm = ScriptedLLM(router([deli_draft()]))
    sol = await asolve(DELI, llm=llm, samples=3)
    assert all(HINT_HEADING not in s for s in _systems(llm))
    assert sol.levers == [] and not any("hints" in s.detail for s in sol.steps)


async def test_no_hint_applies_no_fire():
    text = "Maximize 3 apples plus 2 pears; we have 4 apples and 5 pears."
    llm = ScriptedLLM(
        router(
            [
                json.dumps(
                    {
                        "variables": [{"name": "a"}, {"name": "p"}],
                        "objective": {"sense": "maximize", "expression": "3*a + 2*p"},
                        "constraints": [{"expression": "a <= 4"}, {"expression": "p <= 5"}],
                    }
                )
            ]
        )
    )
    sol = await asolve(text, llm=llm, samples=1, budget=1, config=TeamConfig(hints=True))
    assert classify(text) == {}
    assert all(HINT_HEADING not in s for s in _systems(llm))
    assert "hints" not in sol.levers
    assert any(s.detail.get("hints") == [] for s in sol.steps)


async def test_a_repair_keeps_the_hinted_system_message():
    llm = ScriptedLLM(router([INFEASIBLE, deli_draft()]))
    sol = await asolve(PRINTERS, llm=llm, samples=1, budget=6, config=TeamConfig(hints=True))
    systems = _systems(llm)
    repairs = [r for r in llm.requests if r.tag == "formulator" and len(r.messages) == 4]
    assert len(systems) >= 2 and len(set(systems)) == 1 and HINT_HEADING in systems[0]
    assert repairs and repairs[0].messages[2]["role"] == "assistant"  # a repair conversation
    assert "hints" in sol.levers


async def test_the_planner_models_classification_chooses_hints():
    plan = json.dumps({"integer_variables": "no", "nonlinear": True, "reason": "a box"})
    inner = router([deli_draft()])

    def script(messages, tag=None, **kw):
        return plan if tag == "planner" else inner(messages, tag=tag, **kw)

    text = "A farmer has 100 m of fence and wants the largest field."
    llm = ScriptedLLM(script)
    cfg = TeamConfig(hints=True, llm_planner=True)
    sol = await asolve(text, llm=llm, samples=1, budget=3, config=cfg)
    step = next(s for s in sol.steps if "hints" in s.detail)
    assert set(step.detail["hints"]) == {"nonlinear", "integrality"}
    assert step.detail["classes"]["nonlinear"] == "planner: nonlinear"
    assert "x*(50 - 2*x)" in _systems(llm)[0]


async def test_the_hints_are_a_node_of_the_graph_that_feeds_the_formulator():
    cfg = TeamConfig(hints=True)
    plain_llm, graph_llm = ScriptedLLM(router([deli_draft()])), ScriptedLLM(router([deli_draft()]))
    await asolve(DELI, llm=plain_llm, samples=2, config=cfg)
    out = await asolve_graph(DELI, llm=graph_llm, samples=2, config=cfg)
    # recording changes no call
    assert [(r.tag, r.messages) for r in plain_llm.requests] == [
        (r.tag, r.messages) for r in graph_llm.requests
    ]
    doc = graph_to_dict(out)
    by_id = {n["id"]: n for n in doc["nodes"]}
    hints = [n for n in doc["nodes"] if n.get("op") == "hints"]
    assert len(hints) == 1 and "Watch out for" in hints[0]["value"]
    assert any(by_id[p]["name"] == "problem" for p in hints[0]["parents"])
    formulates = [n for n in doc["nodes"] if n.get("op") == "formulate"]
    assert len(formulates) == 2
    assert all(hints[0]["id"] in n["parents"] for n in formulates)
    assert out.value.levers == ["hints"]
