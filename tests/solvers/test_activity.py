"""Constraint activity at a solution: binding rows, slack, zero variables (no eval)."""

from __future__ import annotations

import pytest

from optiforge.solvers import ModelIR, solve_ir
from optiforge.solvers.activity import ActivityError, constraint_activity, zero_variables

IR = {
    "variables": [{"name": "x"}, {"name": "y"}],
    "objective": {"sense": "maximize", "expression": "3*x + 2*y"},
    "constraints": [
        {"name": "c1", "expression": "2*x + 3*y <= 100", "source": "at most 100 hours"},
        {"name": "c2", "expression": "x <= 20"},
        {"name": "c3", "expression": "y >= 5"},
    ],
}


def test_binding_rows_and_slack_at_the_optimum():
    res = solve_ir(ModelIR.from_json(IR))
    rows = {r.constraint: r for r in constraint_activity(IR, res.variables)}
    # x = 20, y = 20: c1 and c2 bind, c3 has 15 of slack
    assert rows["c1"].binding and rows["c1"].lhs == pytest.approx(100) and rows["c1"].rhs == 100
    assert rows["c2"].binding and rows["c1"].source == "at most 100 hours"
    assert not rows["c3"].binding and rows["c3"].slack == pytest.approx(15)
    assert zero_variables(IR, res.variables) == []


def test_violated_rows_have_negative_slack_and_zero_variables_are_listed():
    rows = {r.constraint: r for r in constraint_activity(IR, {"x": 0.0, "y": 40.0})}
    assert rows["c1"].slack == pytest.approx(-20) and not rows["c1"].binding
    assert rows["c3"].slack == pytest.approx(35)
    assert zero_variables(IR, {"x": 0.0, "y": 40.0}) == ["x"]


def test_indexed_rows_and_nonlinear_sides():
    ir = {
        "sets": [{"name": "P", "elements": ["a", "b"]}],
        "parameters": [{"name": "cap", "index_sets": ["P"], "values": [4, 9]}],
        "variables": [{"name": "x", "index_sets": ["P"]}, {"name": "z"}],
        "objective": {"sense": "maximize", "expression": "sum(x[p] for p in P)"},
        "constraints": [
            {"name": "cap", "expression": "x[p] <= cap[p]", "for_all": "p in P"},
            {"name": "root", "expression": "sqrt(x['b']) + z == 3"},
        ],
    }
    rows = {r.row: r for r in constraint_activity(ir, {"x[a]": 4.0, "x[b]": 4.0, "z": 1.0})}
    assert rows["cap[a]"].binding and not rows["cap[b]"].binding
    assert rows["cap[b]"].slack == pytest.approx(5)
    assert rows["root"].binding and rows["root"].lhs == pytest.approx(3)


def test_missing_values_and_bad_ir_raise_activity_error():
    with pytest.raises(ActivityError, match="no value"):
        constraint_activity(IR, {"x": 1.0})
    bad = {**IR, "constraints": [{"name": "c1", "expression": "x + w <= 3"}]}
    with pytest.raises(ActivityError, match="unknown"):
        constraint_activity(bad, {"x": 1.0, "y": 1.0})
