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
