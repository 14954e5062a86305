"""Direction words -> constraint direction, and the deterministic flip of inverted limits."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest

from optiforge.agents.team.directions import (
    _constant,
    cue_for_number,
    direction_of,
    fix_directions,
    inverted_constraints,
)
from optiforge.agents.team.formulation import normalize_draft
from optiforge.agents.team.schemas import FormulationDraft
from optiforge.solvers import ModelIR, solve_ir

_spec = importlib.util.spec_from_file_location(
    "solvers_gold", Path(__file__).parents[2] / "solvers" / "gold.py"
)
gold = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gold)


@pytest.mark.parametrize(
    ("fragment", "want"),
    [
        ("must make at least", ">="),
        ("can make at most", "<="),
        ("a minimum of", ">="),
        ("no more than", "<="),
        ("must not be less than", ">="),
        ("cannot be more than", "<="),
        ("should not exceed", "<="),
        ("must exceed", ">="),
        ("keep the weekly wage bill below $", "<="),
        ("they have available", "<="),
        ("they have a budget of $", "<="),
        ("the factory must process", ">="),
        ("at least 150 patties and use at most", "<="),  # the nearest cue decides
        ("exactly", None),
        ("a phone costs $", None),
    ],
)
def test_direction_of_fragments(fragment, want):
    assert direction_of(fragment)[0] == want


def test_cue_for_number_reads_the_clause_of_that_number():
    text = (
        "The company needs to transport at least 1500 boxes and they have a budget of $1000. "
        "A van costs $30 per trip. There is an expected demand of at least 30 desk-lamps and "
        "50 night-lamps. In total, 400 sq ft of floor space is available. A phone costs $400."
    )
    assert cue_for_number(text, 1500)[0] == ">="
    assert cue_for_number(text, 1000)[0] == "<="  # not the "at least" of the previous number
    assert cue_for_number(text, 50)[0] == ">="  # a list shares its comparative
    assert cue_for_number(text, 400)[0] == "<="  # the words after; "$400" is a coefficient
    assert cue_for_number(text, 30)[0] == ">="
    assert cue_for_number(text, 777)[0] is None  # not in the text
    assert cue_for_number("Buy 150 units or more of it.", 150)[0] == ">="
    assert cue_for_number("at least 20% of staff", 0.2)[0] == ">="


def test_mentions_that_disagree_give_no_direction():
    text = "Make at least 10 chairs. Use at most 10 hours."
    assert cue_for_number(text, 10)[0] is None


def _ir(*constraints, sources=None):
    return {
        "variables": [{"name": "x", "domain": "integer"}, {"name": "y", "domain": "integer"}],
        "objective": {"sense": "minimize", "expression": "x + y"},
        "constraints": [
            {"name": f"c{i + 1}", "expression": e, "source": (sources or {}).get(i, "")}
            for i, e in enumerate(constraints)
        ],
    }


def test_flips_only_simple_limits_against_their_words():
    text = (
        "A small branch serves 50 customers and needs 10 tellers; a large one serves 100 "
        "and needs 15 tellers. The bank has available 200 tellers and must serve at least "
        "1200 customers per day. At least 3 times as many small as large branches are built."
    )
    ir = _ir(
        "50*x + 100*y <= 1200",  # inverted: "at least 1200"
        "10*x + 15*y <= 200",  # right
        "1200 >= 50*x + 100*y",  # the same inversion, constant on the left
        "x >= 3*y",  # a ratio: never touched
        "x + y == 1200",  # equality: never touched
        "x - y <= 1200",  # negative terms: never touched
    )
    flips = inverted_constraints(text, ir)
    assert [(f.name, f.new) for f in flips] == [
        ("c1", "50*x + 100*y >= 1200"),
        ("c3", "1200 <= 50*x + 100*y"),
    ]
    assert all(f.cue == "at least" for f in flips)
    notes = fix_directions(text, ir)
    assert len(notes) == 2 and "at least" in notes[0]
    assert ir["constraints"][0]["expression"] == "50*x + 100*y >= 1200"
    assert inverted_constraints(text, ir) == []  # idempotent


def test_source_and_text_must_agree():
    text = "Produce at least 100 units. The source words say otherwise."
    ir = _ir("x + y <= 100", sources={0: "at most 100 units"})
    assert inverted_constraints(text, ir) == []  # conflicting evidence: leave it
    ir = _ir("x + y <= 100", sources={0: "produce at least 100 units"})
    assert [f.name for f in inverted_constraints(text, ir)] == ["c1"]


def test_constant_sides_are_evaluated_safely():
    assert _constant("150") == 150
    assert _constant("0.3 * 500") == 150
    assert _constant("(2 + 3) * 4") == 20
    for bad in ("9**9**9**9", "1/0", "x + 1", "__import__('os')", "", "1 if 1 else 2"):
        assert _constant(bad) is None


def test_gold_formulations_are_left_alone_and_inversions_recovered():
    """On the 20 NL4Opt gold models: no right constraint is flipped, and every simple limit
    written the wrong way round is flipped back."""
    recovered = total = 0
    for rec in gold.load_gold():
        ir = gold.gold_to_ir(rec, integer=False).model_dump()
        text = rec["question"]
        assert inverted_constraints(text, ir) == [], rec["id"]
        for c in ir["constraints"]:
            e = c["expression"]
            if "-" in e or e.endswith(" 0.0") or "==" in e:
                continue
            bad = copy.deepcopy(ir)
            target = next(b for b in bad["constraints"] if b["name"] == c["name"])
            target["expression"] = e.replace("<=", ">=") if "<=" in e else e.replace(">=", "<=")
            total += 1
            if fix_directions(text, bad):
                recovered += 1
                assert target["expression"] == e
    assert total >= 40
    assert recovered == total


def test_normalize_draft_fixes_directions_and_the_answer():
    text = (
        "A burger chain buys gas and electric grills. A gas grill cooks 20 patties per minute "
        "and an electric grill 30. A gas grill uses 20 units of oil per minute and an electric "
        "grill 25. The number of electric grills must be less than the number of gas grills. "
        "The chain wants to make at least 150 patties per minute and use at most 140 units of "
        "cooking oil per minute. How many of each grill minimize the total number of grills?"
    )
    draft = FormulationDraft.model_validate(
        {
            "variables": [
                {
                    "name": "gas",
                    "description": "number of gas grills",
                    "units": "grills",
                    "domain": "integer",
                },
                {
                    "name": "electric",
                    "description": "number of electric grills",
                    "units": "grills",
                    "domain": "integer",
                },
            ],
            "objective": {"sense": "minimize", "expression": "gas + electric"},
            "constraints": [
                {
                    "source": "make at least 150 patties per minute",
                    "expression": "20*gas + 30*electric <= 150",
                },
                {
                    "source": "use at most 140 units of cooking oil",
                    "expression": "20*gas + 25*electric <= 140",
                },
                {"source": "electric must be less than gas", "expression": "electric <= gas"},
            ],
        }
    )
    norm = normalize_draft(draft, text)
    assert any("at least" in n for n in norm.notes)
    res = solve_ir(ModelIR.from_json(norm.ir))
    assert res.ok and res.objective == pytest.approx(6)
