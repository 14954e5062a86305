"""What a solver result shows an optimizer: everything but the wall time."""

from optiforge.solvers.result import SolveResult, SolveStatus
from optiforge.trace.render import format_value


def test_the_repr_leaves_out_the_wall_time_and_keeps_the_field():
    fast = SolveResult(status=SolveStatus.OPTIMAL, objective=5050.0, solve_time_s=0.01)
    slow = fast.model_copy(update={"solve_time_s": 2.5})
    # The same result twice gives the same prompt text (a cache hit, a replayable tune)...
    assert format_value(fast) == format_value(slow)
    assert "5050" in format_value(fast) and "solve_time_s" not in format_value(fast)
    # ... and the time is still there for reports and journals.
    assert slow.solve_time_s == 2.5 and slow.model_dump()["solve_time_s"] == 2.5


def test_a_model_shows_as_one_compact_line():
    from optiforge.solvers import ModelIR

    ir = ModelIR.from_json(
        {
            "sets": [{"name": "T", "elements": [str(t) for t in range(1, 31)]}],
            "parameters": [{"name": "d", "index_sets": ["T"], "values": list(range(30))}],
            "variables": [
                {"name": "x", "domain": "integer", "description": "trucks"},
                {"name": "y", "index_sets": ["T"], "lb": None, "ub": 5},
            ],
            "objective": {"sense": "max", "expression": "3*x + sum(y[t] for t in T)"},
            "constraints": [
                {"name": "c1", "expression": "x <= 4", "source": "at most 4 trucks"},
                {"name": "c2", "expression": "y[t] <= d[t]", "for_all": "t in T"},
            ],
        }
    )
    text = format_value(ir)
    assert text.startswith("ModelIR(maximize 3*x + sum(y[t] for t in T); c1: x <= 4; ")
    assert "c2: y[t] <= d[t] for all t in T" in text
    assert "var x integer; var y[T] continuous in [-inf, 5]" in text
    assert "set T = [1, 2, " in text and "(30 in all)" in text
    assert "param d[T] = [0, 1, " in text
    # The pydantic repr of the same model is several times longer.
    assert len(text) * 3 < len(super(ModelIR, ir).__repr__())
