"""What an agent returns for one word problem: the answer and how it was reached."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from optiforge.solvers.ir import ModelIR
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
    #: The chosen formulation (None when the agent wrote code only, or the chosen draft
    #: did not validate; ``formulation_markdown`` still shows such a draft).
    formulation: ModelIR | None = None
    formulation_markdown: str | None = None
    code: str | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    elapsed_s: float = 0.0
    error: str | None = None
    #: Why it failed, when it did: "formulation", "code_error", "timeout", "infeasible",
    #: "no_answer", "budget", "llm_error"; None on success. A run stopped by its time
    #: limit without an answer is a "timeout".
    failure_class: str | None = None
    #: Why the run stopped before it was done, if it did: "deadline" (the time limit came
    #: while work was in flight; that work was cancelled and the best answer so far kept)
    #: or "time_left" (the next step's measured cost did not fit the time left, so none
    #: was started). None: the run ended on its own (a confident vote, the budget spent).
    stopped: str | None = None
    #: The time limit the run was given, in seconds (None: none).
    time_limit_s: float | None = None
    #: The accuracy levers of :class:`~optiforge.agents.team.TeamConfig` that fired in this
    #: run (changed a formulation, a vote or a prompt), in first-fired order, e.g.
    #: ``["verify", "hints"]``. An ablation re-runs only the problems where a lever fired.
    levers: list[str] = Field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The outcome in a few fields for judges and feedback: answer, solver status,
        failure, error, the chosen formulation (Markdown) and the critic's findings."""
        issues = []
        for s in self.steps:
            for i in s.detail.get("issues", []) if isinstance(s.detail, dict) else []:
                issues.append(i.get("message", ""))
        return {
            "answer": self.answer,
            "status": self.result.status.value if self.result is not None else None,
            "failure": self.failure_class,
            "stopped": self.stopped,
            "error": (self.error or "")[:400] or None,
            "formulation": self.formulation_markdown,
            "critic_findings": sorted(set(issues))[:8],
        }

    def __repr__(self) -> str:
        # Shown to optimizers as the output node's value: the outcome, not every step.
        return f"Solution({self.summary()!r})"
