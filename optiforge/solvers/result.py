"""The result of solving one optimization model, from any route (IR or sandboxed code)."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, Field


class SolveStatus(str, Enum):
    """Outcome of a solve. Infeasible and unbounded are results, not exceptions."""

    OPTIMAL = "optimal"
    FEASIBLE = "feasible"  # a solution, optimality not proven (e.g. stopped at a limit)
    INFEASIBLE = "infeasible"
    UNBOUNDED = "unbounded"
    INFEASIBLE_OR_UNBOUNDED = "infeasible_or_unbounded"
    TIME_LIMIT = "time_limit"  # stopped at the limit with no feasible solution
    ERROR = "error"  # the model could not be built or the solver failed


class SolveResult(BaseModel):
    """What a solver reported: status, objective, variable values and diagnostics."""

    status: SolveStatus
    objective: float | None = None
    variables: dict[str, float] = Field(default_factory=dict)
    solver: str | None = None
    solve_time_s: float | None = None
    #: The last lines of the solver log or of the program's output, for critics and reports.
    log_tail: str = ""
    #: A human-readable explanation for non-optimal statuses.
    message: str | None = None

    def __repr_args__(self):  # type: ignore[override]
        # The wall time varies from run to run: left out of the repr, which is what a trace
        # shows an optimizer, so the same result gives the same prompt (a cache hit, and a
        # replayable tuning run). The field itself is kept.
        return [(k, v) for k, v in super().__repr_args__() if k != "solve_time_s"]

    @property
    def ok(self) -> bool:
        """True when there is a usable objective value."""
        return (
            self.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE)
            and self.objective is not None
        )
