"""Records an eval run writes to disk: one journal line per problem, and the run metadata."""

from __future__ import annotations

import os
import sys
import sysconfig
from functools import lru_cache
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


@lru_cache(maxsize=1)
def _machine_prefixes() -> tuple[tuple[str, str], ...]:
    """(prefix, placeholder) pairs, longest first: site-packages, the standard library,
    the interpreter prefix and the user's home, as this machine spells them."""
    pairs: dict[str, str] = {}
    paths = sysconfig.get_paths()
    for key in ("purelib", "platlib"):
        if paths.get(key):
            pairs[paths[key]] = "<site-packages>"
    try:
        import site

        for sp in [*site.getsitepackages(), site.getusersitepackages()]:
            pairs.setdefault(sp, "<site-packages>")
    except (AttributeError, ImportError):  # pragma: no cover - virtualenv without site
        pass
    for key in ("stdlib", "platstdlib"):
        if paths.get(key):
            pairs.setdefault(paths[key], "<stdlib>")
    pairs.setdefault(sys.prefix, "<python>")
    home = os.path.expanduser("~")
    if home not in ("", "/", "~"):
        pairs.setdefault(home, "~")
    out = [(p.rstrip("/"), v) for p, v in pairs.items() if p and len(p.rstrip("/")) > 1]
    return tuple(sorted(out, key=lambda pv: -len(pv[0])))


def portable_text(text: str | None) -> str | None:
    """``text`` with this machine's install and home paths replaced by placeholders
    (``<site-packages>/pyomo/...``, ``~/...``), so that tracebacks and solver logs in a
    journal name no path of the machine that ran it and results can be committed as is."""
    if not text:
        return text
    for prefix, placeholder in _machine_prefixes():
        if prefix in text:
            text = text.replace(prefix + "/", placeholder + "/").replace(prefix, placeholder)
    return text


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
    #: The plan the step served (``sample``, ``repair``, ``verify``, ``template``...), if any.
    plan_id: str | None = None
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
    #: Requests the server answered, and their tokens (every choice and re-ask included).
    #: Counted by the LLM client for this problem alone (``usage_source="client"``); an
    #: agent that uses no optiforge client reports its own (``"agent"``).
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: Requests that got no reply (errors, timeouts, cancelled in flight); tokens unknown.
    failed_calls: int = 0
    #: Requests answered from the response cache, replies taken from it, and what those
    #: replies cost when they were first produced (not included in the live counters).
    cached_calls: int = 0
    cache_hits: int = 0
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0
    usage_source: str = "agent"
    #: The client's counters per tag (role) for this problem.
    usage_by_tag: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: Every reply this problem received, in arrival order: tag, response-cache key,
    #: sha256 of the text, cached, finish_reason, completion_tokens. With the cache on,
    #: the key finds the model's text; the hash proves it.
    replies: list[dict[str, Any]] = Field(default_factory=list)
    elapsed_s: float = 0.0
    #: The per-problem time limit (``--timeout``), in seconds; None without one.
    time_limit_s: float | None = None
    #: Why the problem stopped before the agent was done, if it did: ``deadline`` (the
    #: agent's time limit came while it worked; it cancelled that work and answered with
    #: its best so far), ``time_left`` (the agent started no step that would not fit the
    #: time left), ``cancelled`` (the agent did not stop by its deadline and the runner
    #: cancelled it a few seconds later: no answer). None: the agent finished on its own.
    stopped: str | None = None
    #: The team's accuracy levers that fired on this problem (``Solution.levers``).
    levers: list[str] = Field(default_factory=list)
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
    def cached_tokens(self) -> int:
        """Tokens of the replies served from the cache."""
        return self.cached_prompt_tokens + self.cached_completion_tokens

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
    #: The per-problem time limit (``--timeout``) and how long after it the runner cancels
    #: a problem whose agent has not stopped, in seconds (None: no limit).
    time_limit_s: float | None = None
    cancel_grace_s: float | None = None
    #: The LLM client's own counters at the end of the session (one client per session).
    usage: dict[str, Any] | None = None
    #: What problems that were started but not journalled (the run was interrupted) used,
    #: so that journal + this = ``usage``.
    usage_unjournalled: dict[str, Any] | None = None
    #: What produced this session: code (version, git commit, dirty tree), Python and
    #: package versions, and (from the CLI) the server, model file sha256 and settings.
    #: See :mod:`optiforge.evals.provenance`.
    provenance: dict[str, Any] = Field(default_factory=dict)


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
    #: The team's accuracy levers: every lever's on/off (the CLI records the defaults too
    #: for a team run without ``--levers``); None: not recorded (older runs and other
    #: agents; a resume takes it as no lever on, which is what every older run had).
    levers: dict[str, bool] | None = None
    #: The tuned prompts (``--prompts``): file, sha256 of its parameters and their names;
    #: None: the shipped prompts.
    prompts: dict[str, Any] | None = None
    #: The experience lever's library (``--experience-library``): file, sha256, entries;
    #: None: the lever is off.
    experience: dict[str, Any] | None = None
    filters: dict[str, Any] = Field(default_factory=dict)
    planned_ids: list[str] = Field(default_factory=list)
    command: str | None = None
    optiforge_version: str = ""
    created_at: float = 0.0
    sessions: list[Session] = Field(default_factory=list)

    #: Fields that must agree between a run and its resume.
    IDENTITY: ClassVar[tuple[str, ...]] = (
        "dataset",
        "answer_field",
        "agent",
        "model",
        "samples",
        "levers",
        "prompts",
        "experience",
    )

    @property
    def wall_s(self) -> float:
        """Wall time over all sessions, in seconds."""
        return sum(
            (s.ended_at or s.started_at) - s.started_at for s in self.sessions if s.started_at
        )
