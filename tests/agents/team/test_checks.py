"""The critic's deterministic checks."""

from __future__ import annotations

from optiforge.agents.team.checks import check_solution, implied_sense, verdict
from optiforge.solvers.result import SolveResult, SolveStatus

TEXT = (
    "A shop sells chairs for $20 and tables for $50. It has 100 hours; a chair takes 2 hours "
    "and a table 5 hours. How many of each should it make to maximize profit?"
)
IR = {
    "variables": [{"name": "c", "domain": "integer"}, {"name": "t", "domain": "integer"}],
    "objective": {"sense": "maximize", "expression": "20*c + 50*t"},
    "constraints": [{"name": "c1", "expression": "2*c + 5*t <= 100"}],
}


def _ok(obj=1000.0, **vals):
    return SolveResult(
        status=SolveStatus.OPTIMAL, objective=obj, variables=vals or {"c": 50, "t": 0}
    )


def test_clean_model_passes():
    issues = check_solution(TEXT, IR, _ok())
    assert issues == [] and verdict(issues) == "ok"


def test_sense_contradicting_text_is_an_error_with_an_action():
    ir = {**IR, "objective": {"sense": "minimize", "expression": "20*c + 50*t"}}
    issues = check_solution(TEXT, ir, _ok())
    assert [i.check for i in issues] == ["sense"]
    assert issues[0].action == "flip_sense" and verdict(issues) == "wrong"


def test_implied_sense():
    assert implied_sense(TEXT) == "maximize"
    assert implied_sense("Minimize the total cost of the plan.") == "minimize"
    assert implied_sense("Maximize profit while you minimize waste.") is None


def test_infeasible_and_unbounded_are_errors():
    for st in (SolveStatus.INFEASIBLE, SolveStatus.UNBOUNDED):
        issues = check_solution(TEXT, IR, SolveResult(status=st))
        assert verdict(issues) == "wrong"
        assert issues[-1].fix


def test_fractional_integer_values_are_flagged_unless_relaxed_on_purpose():
    res = _ok(1010.0, c=50.5, t=0)
    assert any(i.check == "integrality" for i in check_solution(TEXT, IR, res))
    assert not any(i.check == "integrality" for i in check_solution(TEXT, IR, res, relaxed=True))


def test_invented_numbers_and_unused_variables_are_warnings():
    ir = {
        **IR,
        "variables": [*IR["variables"], {"name": "z", "domain": "continuous"}],
        "constraints": [{"name": "c1", "expression": "2*c + 5*t <= 777"}],
    }
    issues = check_solution(TEXT, ir, _ok())
    checks = {i.check for i in issues}
    assert {"numbers", "unused_variable"} <= checks
    assert verdict(issues) == "suspicious"


def test_build_error_short_circuits():
    issues = check_solution(TEXT, IR, None, error="constraint 'c1': unknown variable 'q'")
    assert [i.check for i in issues] == ["build"] and "unknown variable" in issues[0].message


def test_zero_solution_in_a_maximization_is_suspicious():
    issues = check_solution(TEXT, IR, _ok(0.0, c=0.0, t=0.0))
    assert {"zero_solution", "zero_objective"} <= {i.check for i in issues}


def test_doing_nothing_in_a_minimization_is_suspicious():
    text = "A farm must feed at least 40 cows. Hay costs $3 a bale. Minimize the cost."
    ir = {
        "variables": [{"name": "h", "domain": "continuous"}],
        "objective": {"sense": "minimize", "expression": "3*h"},
        "constraints": [{"name": "c1", "expression": "h >= 0"}],
    }
    issues = check_solution(text, ir, _ok(0.0, h=0.0))
    assert "zero_solution" in {i.check for i in issues}
    assert verdict(issues) == "suspicious"
    ok = check_solution(text, ir, _ok(120.0, h=40.0))
    assert "zero_solution" not in {i.check for i in ok}
