"""What an agent returns for one word problem: the answer and how it was reached."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from optiforge.solvers.result import SolveResult


class StepRecord(BaseModel):
    """One step of an agent run (an LLM call, a solver run, a critique)."""

    role: str  # "formulator", "planner", "coder", "critic", "solver", "direct", ...
    plan_id: str | None = None
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    elapsed_s: float = 0.0
    ok: bool = True
    summary: str = ""  # one line for people: what happened
    detail: dict[str, Any] = Field(default_factory=dict)


class Solution(BaseModel):
    """The outcome of solving one problem text.

    ``answer`` is the objective value the agent settles on (None when it found none, or
    judged the problem infeasible/unbounded: see ``result.status``).
    """

    problem_text: str
    agent: str  # "team" or "direct"
    answer: float | None = None
    result: SolveResult | None = None
    #: The chosen formulation as model IR (a dict produced by ``ModelIR.model_dump()``).
    formulation: dict[str, Any] | None = None
    formulation_markdown: str | None = None
    code: str | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    elapsed_s: float = 0.0
    error: str | None = None
    #: Why it failed, when it did: "formulation", "code_error", "timeout", "infeasible",
    #: "no_answer", "budget", "llm_error"; None on success.
    failure_class: str | None = None
