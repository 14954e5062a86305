"""Draft -> ModelIR normalisation and the integrality decision."""

from __future__ import annotations

from optiforge.agents.team.formulation import (
    clean_expression,
    decide_domain,
    normalize_draft,
    split_constraint,
    with_domains,
)
from optiforge.agents.team.schemas import FormulationDraft
from optiforge.solvers import ModelIR, solve_ir


def _draft(constraints, variables=None, objective=("maximize", "200*x + 70*y")):
    return FormulationDraft.model_validate(
        {
            "variables": variables
            or [
                {
                    "name": "x",
                    "description": "number of color printers",
                    "units": "printers",
                    "domain": "integer",
                },
                {
                    "name": "y",
                    "description": "number of bw printers",
                    "units": "printers",
                    "domain": "integer",
                },
            ],
            "objective": {"sense": objective[0], "expression": objective[1]},
            "constraints": [{"source": "", "expression": c} for c in constraints],
        }
    )


def test_people_notation_is_rewritten_and_solves():
    d = _draft(["x <= 20 && y <= 30", "x + y = 35", "1,000 >= 10x", "x >= 10% * (x + y)"])
    n = normalize_draft(d)
    exprs = [c["expression"] for c in n.ir["constraints"]]
    assert exprs[:2] == ["x <= 20", "y <= 30"]
    assert "x + y == 35" in exprs
    assert "1000 >= 10*x" in exprs
    assert any("(10/100)" in e for e in exprs)
    assert any("split" in note for note in n.notes)
    res = solve_ir(ModelIR.from_json(n.ir))
    assert res.ok and abs(res.objective - (20 * 200 + 15 * 70)) < 1e-6


def test_names_are_sanitized_and_renamed_in_expressions():
    d = _draft(
        ["Color Printers <= 20", "sum <= 30"],
        variables=[
            {
                "name": "Color Printers",
                "description": "number of color printers",
                "units": "",
                "domain": "integer",
            },
            {
                "name": "sum",
                "description": "number of bw printers",
                "units": "",
                "domain": "integer",
            },
        ],
        objective=("maximize", "200*Color Printers + 70*sum"),
    )
    n = normalize_draft(d)
    names = [v["name"] for v in n.ir["variables"]]
    assert names == ["color_printers", "sum_"]
    assert n.ir["objective"]["expression"] == "200*color_printers + 70*sum_"
    ModelIR.from_json(n.ir)


def test_constraint_without_comparison_is_dropped_with_a_note():
    n = normalize_draft(_draft(["x + y", "x <= 3"]))
    assert [c["expression"] for c in n.ir["constraints"]] == ["x <= 3"]
    assert any("compares nothing" in note for note in n.notes)


def test_split_keeps_sum_arguments_together():
    assert split_constraint("sum(x[i] for i in S) <= 5") == ["sum(x[i] for i in S) <= 5"]
    assert split_constraint("a >= 1, b <= 2") == ["a >= 1", "b <= 2"]


def test_clean_expression_keeps_scientific_notation():
    assert clean_expression("1e5 * x <= 2", {"x": "x"}) == "1e5 * x <= 2"


def test_domain_from_units_and_counts():
    assert decide_domain("a", "acres of apples", "acres", "integer")[0] == "continuous"
    assert decide_domain("kg_a", "amount of fertilizer A", "kg", "integer")[0] == "continuous"
    assert decide_domain("inv", "amount invested in telecom", "$", "integer")[0] == "continuous"
    assert decide_domain("t", "number of trucks", "trucks", "continuous")[0] == "integer"
    assert decide_domain("b", "open the plant", "", "binary")[0] == "binary"
    dom, _, unclear = decide_domain("q", "quux", "", "integer")
    assert dom == "integer" and unclear


def test_text_statements_override_units():
    text = "The amounts can be fractional."
    assert decide_domain("t", "number of trucks", "trucks", "integer", text)[0] == "continuous"
    text = "Answers must be whole numbers."
    assert decide_domain("k", "kg of corn", "kg", "continuous", text)[0] == "integer"


def test_with_domains_keeps_binaries():
    ir = {"variables": [{"name": "a", "domain": "integer"}, {"name": "b", "domain": "binary"}]}
    out = with_domains(ir, "continuous")
    assert [v["domain"] for v in out["variables"]] == ["continuous", "binary"]


def test_a_bound_written_as_its_own_coefficient_is_read_as_the_bound():
    """readme40's nl4opt-0174: "at most 10 minibuses" became ``10*minibuses <= 10``."""
    n = normalize_draft(_draft(["10*x <= 10", "2.5 * y >= 2.5", "3*x + 3*y <= 3", "1*x <= 1"]))
    exprs = [c["expression"] for c in n.ir["constraints"]]
    assert exprs == ["x <= 10", "y >= 2.5", "3*x + 3*y <= 3", "1*x <= 1"]
    assert sum("also written as the coefficient" in note for note in n.notes) == 2
