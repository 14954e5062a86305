"""Records an eval run writes to disk: one journal line per problem, and the run metadata."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field, field_validator

from optiforge.errors import OptiforgeError

JOURNAL_VERSION = 1

#: Failure classes that say the infrastructure failed, not the agent's modelling.
INFRA_FAILURES = frozenset({"llm_error", "agent_crash"})

#: What each failure class means, for reports.
FAILURE_LABELS: dict[str, str] = {
    "formulation": "formulation wrong (ran, wrong value)",
    "code_error": "code error (program did not run)",
    "timeout": "timeout",
    "infeasible": "predicted infeasible, ground truth has a value",
    "no_answer": "no answer produced",
    "budget": "budget exhausted",
    "llm_error": "LLM/server error",
    "agent_crash": "agent raised an exception",
}


class EvalError(OptiforgeError):
    """An eval run cannot start or continue (bad output dir, config mismatch, server down)."""


class EvalInterrupted(OptiforgeError):
    """The run stopped early (Ctrl-C). Finished problems are saved; resume continues."""

    def __init__(self, message: str, *, finished: int, total: int, out_dir: str) -> None:
        super().__init__(message)
        self.finished = finished
        self.total = total
        self.out_dir = out_dir


class StepSummary(BaseModel):
    """One agent step, as shown in the report."""

    role: str
    ok: bool = True
    summary: str = ""
    calls: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0


class ResultRecord(BaseModel):
    """One line of ``results.jsonl``: everything known about one finished problem."""

    v: int = JOURNAL_VERSION
    id: str
    dataset: str = ""
    category: str = ""
    text: str = ""
    #: Ground truth and which answer variant it came from.
    answer_field: str = "answer"
    gt: float | None = None
    gt_kind: str = "missing"
    #: The agent's prediction.
    prediction: float | None = None
    prediction_kind: str = "none"  # "value" | "infeasible" | "none"
    solve_status: str | None = None
    correct: dict[str, bool | None] = Field(default_factory=dict)
    #: True when a model was built and solved (the program ran), whatever the answer.
    executed: bool = False
    #: Why a scored problem is wrong (see FAILURE_LABELS); None when correct or unscored.
    failure_class: str | None = None
    #: The agent's own failure class, verbatim.
    agent_failure_class: str | None = None
    error: str | None = None
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    elapsed_s: float = 0.0
    agent: str = ""
    samples: int | None = None
    session: int = 1
    started_at: float = 0.0
    finished_at: float = 0.0
    formulation: dict[str, Any] | None = None
    formulation_markdown: str | None = None
    code: str | None = None
    solver_log: str | None = None
    solver_message: str | None = None
    steps: list[StepSummary] = Field(default_factory=list)

    @field_validator("formulation", mode="before")
    @classmethod
    def _formulation_as_dict(cls, v: Any) -> Any:
        # An agent's Solution holds the formulation as a ModelIR; the journal keeps its dict.
        return v.model_dump() if isinstance(v, BaseModel) else v

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def scored(self) -> bool:
        """True when the ground truth is usable."""
        return self.gt_kind != "missing"


class Session(BaseModel):
    """One invocation of the runner on an output directory."""

    index: int
    started_at: float
    ended_at: float | None = None
    planned: int = 0
    skipped_done: int = 0
    finished: int = 0
    status: str = "running"  # running | completed | interrupted | aborted | crashed | killed
    usage: dict[str, Any] | None = None


class RunMeta(BaseModel):
    """``run.json``: what was run, so a resume can check it continues the same run."""

    v: int = JOURNAL_VERSION
    dataset: str
    answer_field: str = "answer"
    agent: str = ""
    model: str | None = None
    base_url: str | None = None
    #: Samples per problem passed to the agent (None: the agent's default).
    samples: int | None = None
    budget: dict[str, Any] | None = None
    filters: dict[str, Any] = Field(default_factory=dict)
    planned_ids: list[str] = Field(default_factory=list)
    command: str | None = None
    optiforge_version: str = ""
    created_at: float = 0.0
    sessions: list[Session] = Field(default_factory=list)

    #: Fields that must agree between a run and its resume.
    IDENTITY: ClassVar[tuple[str, ...]] = ("dataset", "answer_field", "agent", "model", "samples")

    @property
    def wall_s(self) -> float:
        """Wall time over all sessions, in seconds."""
        return sum(
            (s.ended_at or s.started_at) - s.started_at for s in self.sessions if s.started_at
        )
