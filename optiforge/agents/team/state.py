"""Run state and plans: what one team run may spend, how it behaves, and what it has done.

- :class:`TeamBudget`, :class:`TeamConfig`: the budget and the knobs of a run.
- :class:`Attempt`: one formulation or program and what became of it, with the trace nodes
  of its steps (draft, model, result, findings).
- :class:`Findings`: what the critic's deterministic checks found in one attempt (the value
  of an attempt's ``check`` node; the critic and the repair read it).
- :class:`RunState`: budget accounting, step records, attempts and seeds of one run.
- :func:`plan_features`: the cues the planner reads from the text without a model.
- :func:`used_prompts`: which trainable prompts a run with given settings can use.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from optiforge.agents.solution import StepRecord
from optiforge.agents.team import checks as chk
from optiforge.agents.team.formulation import Normalized
from optiforge.agents.team.scheduler import Candidate, weighted
from optiforge.errors import OptiforgeError
from optiforge.solvers.result import SolveResult

ROLES = ("formulator", "planner", "coder", "critic")
#: Formulations in the first round when ``samples`` is not given (1 greedy + 2 sampled).
DEFAULT_SAMPLES = 3
#: The LLM calls a pull of each plan makes one after another (calls made in parallel count
#: once): what its time is estimated from before the plan has been pulled.
PLAN_CALLS = {
    "sample": ("formulator",),
    "repair": ("critic", "formulator"),
    "code": ("coder",),
}
#: Why a run stopped before it was done (``Solution.stopped``).
STOPPED_DEADLINE = "deadline"
STOPPED_TIME_LEFT = "time_left"


class TeamError(OptiforgeError):
    """Bad arguments to the team (empty problem, unknown agent, bad budget)."""


class TeamBudget(BaseModel):
    """What one problem may spend. LLM samples count every generated reply (a cached reply
    is free); solver runs count IR solves and sandboxed programs."""

    llm_samples: int = Field(default=8, ge=1, le=200)
    solver_runs: int = Field(default=40, ge=1, le=1000)
    #: Time limit in seconds (None: none). The run plans within it: it starts no step whose
    #: measured cost does not fit the time left, and at the limit it cancels the requests
    #: in flight and returns its best answer so far (``Solution.stopped``).
    seconds: float | None = Field(default=None, gt=0)


class TeamConfig(BaseModel):
    """Knobs of the team; defaults are tuned for Qwen2.5-Coder-1.5B on CPU."""

    temperature: float = 0.7
    #: Formulations per ``sample`` pull.
    samples_per_pull: int = 2
    #: Agreeing weight needed to stop early, and the share of all weight it must have.
    min_votes: float = 2.0
    min_share: float = 0.6
    #: Ask the critic model for a critique before each repair (deterministic checks always run).
    llm_critic: bool = True
    #: Ask the planner model for integrality/nonlinearity advice (useful with larger models).
    llm_planner: bool = False
    #: Offer the code route as a plan.
    code_route: bool = True
    solver_time_limit: float = 30.0
    sandbox_timeout: float = 60.0
    exploration: float = 0.8
    #: Accuracy lever (#12): ask a small verifier prompt, per constraint and for the
    #: objective of the leading answers, whether each says what its sentences say; a fix
    #: is solved as a new attempt (plan "verify"). See :mod:`.verify`.
    verify: bool = False
    #: The most verifier calls one run may make (each is a short LLM call).
    verify_calls: int = Field(default=4, ge=1, le=50)
    #: Accuracy lever (#12): findings from the solution (a stated requirement whose variable
    #: is 0, a stated limit no constraint uses) for the critic and repair. See :mod:`.grounded`.
    grounded_critique: bool = False
    #: Accuracy lever (issue #12): error-class hints chosen from the problem's cues (and
    #: the planner model's classification with ``llm_planner``) are appended to the
    #: formulator's system message (:mod:`.hints`).
    hints: bool = False
    #: Accuracy lever (issue #12): votes weigh by the critic's and the verifier's verdicts
    #: (:func:`~optiforge.agents.team.scheduler.vote_weight`), and a split vote buys more
    #: ``sample`` pulls (at most ``split_pulls``) instead of spending on other plans.
    weighted_vote: bool = False
    #: Sample pulls a split vote may buy in one run (with ``weighted_vote``).
    split_pulls: int = Field(default=2, ge=0, le=20)
    #: Accuracy lever "experience" (issue #12): give the formulator the ``experience_k``
    #: most similar solved training problems of an experience library (BM25 over the
    #: texts) as few-shot examples with their insights (:mod:`.experience`). The library is
    #: ``experience_library`` (a file from ``optiforge experience build``), or the shipped
    #: one when None; turning the lever on without a library is an error at the run's start.
    experience: bool = False
    experience_k: int = Field(default=2, ge=1, le=8)
    experience_library: str | None = None
    #: Lever "templates" (issue #18): a problem-class template (transportation, assignment,
    #: flows, production planning, ...) chosen from the text's cues, filled from one
    #: extraction call and solved as one more attempt (:mod:`.template_route`).
    templates: bool = False
    #: Cue points a template needs to be chosen (:func:`~.templates.match_cues`).
    template_min_score: float = Field(default=2.0, ge=0.0)
    #: The vote of a clean template attempt (a suspicious one votes with its usual fraction
    #: of it): 2 lets it alone make the vote confident, so a long problem stops early.
    template_weight: float = Field(default=2.0, ge=0.0, le=10.0)


def used_prompts(agent: str = "team", config: TeamConfig | None = None) -> tuple[str, ...]:
    """The trainable prompts some step of a run with these settings may use.

    The direct agent uses only ``coder_system``. The team always uses the formulator's; the
    critic's only with ``llm_critic``, the coder's only with ``code_route``, the
    planner's only with ``llm_planner`` (off by default), the verifier's only with
    ``verify`` and the extractor's only with ``templates`` (levers, off by default), so an
    optimizer is never offered a prompt that no step reads.
    """
    if agent == "direct":
        return ("coder_system",)
    cfg = config or TeamConfig()
    names = ["formulator_system"]
    if cfg.llm_critic:
        names.append("critic_system")
    if cfg.code_route:
        names.append("coder_system")
    if cfg.llm_planner:
        names.append("planner_system")
    if cfg.verify:
        names.append("verifier_system")
    if cfg.templates:
        names.append("extractor_system")
    return tuple(names)


def coerce_budget(budget: Any) -> TeamBudget:
    """A :class:`TeamBudget` from None, an int (LLM samples), a dict or a TeamBudget."""
    if budget is None:
        return TeamBudget()
    if isinstance(budget, TeamBudget):
        return budget
    if isinstance(budget, bool):
        raise TeamError("budget must be a number of LLM samples, a dict or TeamBudget")
    if isinstance(budget, int):
        if budget < 1:
            raise TeamError(f"budget must be at least 1 LLM sample, got {budget}")
        return TeamBudget(llm_samples=budget)
    if isinstance(budget, dict):
        try:
            return TeamBudget(**budget)
        except Exception as exc:
            raise TeamError(f"invalid budget {budget!r}: {exc}") from None
    raise TeamError(f"budget must be an int, a dict or TeamBudget, got {type(budget).__name__}")


@dataclass(eq=False)
class Findings:
    """The critic's deterministic findings on one attempt, and what they were found on.

    ``ir`` (the formulation as checked, after deterministic fixes), ``draft_text``,
    ``code``, ``result`` and ``error`` are kept so the critic and a repair can show the
    model what was checked without re-running anything.
    """

    issues: list[chk.Issue]
    verdict: str
    ir: dict[str, Any] | None = None
    draft_text: str | None = None
    code: str | None = None
    result: SolveResult | None = None
    error: str | None = None

    def model_text(self) -> str:
        """The checked formulation as math (or the raw draft when it did not parse)."""
        from optiforge.solvers.render import ir_markdown

        if self.ir is None:
            return self.draft_text or "(none)"
        return ir_markdown(self.ir)

    def result_text(self) -> str:
        """The solver outcome in one line (error, status and objective with values)."""
        return result_text(self.result, self.error)

    def __repr__(self) -> str:
        found = "; ".join(f"{i.check}: {i.message}" for i in self.issues) or "no issues"
        return f"Findings(verdict={self.verdict!r}, {found})"


def result_text(result: SolveResult | None, error: str | None) -> str:
    """A solver outcome as the critic and the coder's repair prompt see it."""
    if error:
        return f"error: {error[:800]}"
    if result is None:
        return "(not solved)"
    if result.ok:
        vals = ", ".join(f"{k} = {v:g}" for k, v in list(result.variables.items())[:12])
        return f"{result.status.value}, objective {result.objective:g}; {vals}"
    return f"{result.status.value}: {result.message or ''}".strip()


@dataclass(eq=False)
class Attempt:
    """One formulation or program and what became of it.

    The ``*_node`` fields are the attempt's steps in the run's trace graph (plain nodes
    without parents when nothing is recording).
    """

    index: int
    plan: str
    source: str  # "ir" | "code"
    draft_text: str | None = None
    normalized: Normalized | None = None
    ir: dict[str, Any] | None = None
    code: str | None = None
    result: SolveResult | None = None
    error: str | None = None
    issues: list[chk.Issue] = field(default_factory=list)
    verdict: str = "wrong"
    repaired: bool = False
    parent: int | None = None
    alt_relaxed: float | None = None
    #: The sense flip the critic applied (the final ``issues`` are checked on the flipped IR).
    flipped: bool = False
    #: The formulation as a validated ModelIR (None until built, or when it does not validate).
    model: Any = None
    #: The sandbox run of a program (for its step record).
    sandbox: Any = None
    #: The sentence-level verifier's verdict (``verify`` lever): None not checked, True
    #: every check passed, False a fix was proposed (solved as its own "verify" attempt).
    verified: bool | None = None
    #: The attempt's vote is multiplied by this (``template_weight`` for a template attempt).
    vote_factor: float = 1.0
    #: Findings from the steps before the model (a template's extraction checks); the
    #: critic's check adds them to its own.
    extra_issues: list[chk.Issue] = field(default_factory=list)
    draft_node: Any = field(default=None, repr=False)
    model_node: Any = field(default=None, repr=False)
    result_node: Any = field(default=None, repr=False)
    findings_node: Any = field(default=None, repr=False)

    @property
    def value(self) -> float | None:
        if self.result is not None and self.result.ok and self.verdict != "wrong":
            return self.result.objective
        return None

    @property
    def weight(self) -> float:
        if self.value is None:
            return 0.0
        base = 1.0 if self.verdict == "ok" else 0.6
        if self.verified is False:  # the verifier proposed a fix: its attempt votes instead
            base *= 0.5
        return base * self.vote_factor * (0.8 if self.source == "code" else 1.0)

    def findings(self) -> Findings:
        """The attempt's current findings (the value of its ``check`` node)."""
        return Findings(
            issues=list(self.issues),
            verdict=self.verdict,
            ir=self.ir,
            draft_text=self.draft_text,
            code=self.code,
            result=self.result,
            error=self.error,
        )


class RunState:
    """Budget accounting, step records, attempts and seeds of one team run (one problem)."""

    def __init__(
        self,
        problem: str,
        llms: dict[str, Any],
        prompts: Any,
        budget: TeamBudget,
        config: TeamConfig,
        samples: int,
        deadline: float | None = None,
    ) -> None:
        self.problem = problem
        self.llms = llms
        self.prompts = prompts
        self.budget = budget
        self.config = config
        self.samples = samples
        self.steps: list[StepRecord] = []
        self.attempts: list[Attempt] = []
        self.llm_samples = 0
        self.solver_runs = 0
        self.started = time.perf_counter()
        #: When the run must be over (``time.monotonic()`` clock; None: no time limit).
        self.deadline: float | None = (
            deadline
            if deadline is not None
            else (time.monotonic() + budget.seconds if budget.seconds is not None else None)
        )
        #: The time limit in seconds, as the run reports it (None: none).
        self.time_limit: float | None = (
            budget.seconds
            if budget.seconds is not None or self.deadline is None
            else round(self.deadline - time.monotonic(), 3)
        )
        #: Why the run stopped early: None, STOPPED_TIME_LEFT or STOPPED_DEADLINE.
        self.stopped: str | None = None
        #: The accuracy levers that fired in this run (``Solution.levers``); see fired().
        self.levers: list[str] = []
        #: Measured wall time of each pull, per plan (the first round counts as "sample").
        self.pull_times: dict[str, list[float]] = {}
        self.seed = 0
        self.signatures: set[str] = set()
        self.code_attempt: Attempt | None = None
        self.nonlinear_hint = False
        #: The hints step's node (its value a ``HintChoice``; None without ``hints``).
        self.hints_node: Any = None
        #: Sample pulls a split vote bought (``weighted_vote``).
        self.split_pulls = 0
        #: The last (plain winner, weighted winner) the weighted vote changed (``weighted_vote``).
        self.weight_change: tuple[float, float] | None = None

    def fired(self, lever: str) -> None:
        """Record that the accuracy lever ``lever`` changed something in this run (once)."""
        if lever not in self.levers:
            self.levers.append(lever)

    def can_sample(self, k: int = 1) -> bool:
        """True when ``k`` more LLM samples fit the budget (and time is left)."""
        left = self.time_left()
        if left is not None and left <= 0:
            return False
        return self.llm_samples + k <= self.budget.llm_samples

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def time_left(self) -> float | None:
        """Seconds until the deadline (negative once past it; None without one)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def call_seconds(self, role: str) -> float | None:
        """The mean measured time of this role's answered LLM calls (cancelled ones and
        cache hits left out); of every role's when this one has none; None before any."""

        def times(r: str | None) -> list[float]:
            return [
                s.elapsed_s
                for s in self.steps
                if ((r is None and s.role in ROLES) or s.role == r)
                and s.calls > 0
                and not s.detail.get("cached")
            ]

        got = times(role) or times(None)
        return statistics.fmean(got) if got else None

    def check_seconds(self, source: str = "ir") -> float:
        """The mean measured time of solving and checking one attempt (0 before any)."""
        role = "sandbox" if source == "code" else "solver"
        got = [s.elapsed_s for s in self.steps if s.role == role]
        if not got and source == "code":
            got = [s.elapsed_s for s in self.steps if s.role == "solver"]
        return statistics.fmean(got) if got else 0.0

    def estimate_pull(self, plan: str) -> float | None:
        """Seconds one pull of ``plan`` is expected to take, from what this run measured:
        the mean of its earlier pulls, else the mean time of the LLM calls it makes (one
        after another) plus one solve and check. None when nothing was measured yet."""
        done = self.pull_times.get(plan)
        if done:
            return statistics.fmean(done)
        total = 0.0
        for role in PLAN_CALLS.get(plan, ("formulator",)):
            if role == "critic" and not self.config.llm_critic:
                continue
            t = self.call_seconds(role)
            if t is None:
                return None
            total += t
        return total + self.check_seconds("code" if plan == "code" else "ir")

    def solver_limit(self) -> float:
        """The solver's time limit for the next solve: the configured one, cut to the time
        left (a solve runs in a thread that cancellation cannot stop)."""
        return _cut(self.config.solver_time_limit, self.time_left())

    def sandbox_limit(self) -> float:
        """The sandbox timeout for the next program, cut to the time left (the sandbox
        kills the program at its timeout, so it does not outlive the deadline)."""
        return _cut(self.config.sandbox_timeout, self.time_left())

    def note_pull(self, plan: str, seconds: float) -> None:
        """Keep the measured wall time of one pull of ``plan``."""
        self.pull_times.setdefault(plan, []).append(seconds)

    def next_seed(self) -> int:
        self.seed += 1
        return self.seed

    def record(self, reply: Any) -> None:
        """Count one role reply against the budget and keep its step record."""
        self.steps.append(reply.step)
        self.llm_samples += 1

    def candidates(self, weigh: bool | None = None) -> list[Candidate]:
        """The solved, not-wrong attempts as weighted votes.

        With ``weigh`` (default: ``config.weighted_vote``) the weights come from the critic's
        and the verifier's verdicts (:func:`~optiforge.agents.team.scheduler.weighted`);
        otherwise they are the attempts' plain weights."""
        out = [
            Candidate(
                value=a.value,
                weight=a.weight,
                plan=a.plan,
                index=a.index,
                verdict=a.verdict,
                source=a.source,
                verified=a.verified,
                factor=a.vote_factor,
            )
            for a in self.attempts
            if a.value is not None
        ]
        if self.config.weighted_vote if weigh is None else weigh:
            out = weighted(out)
        return out

    def repair_target(self) -> Attempt | None:
        """The most promising attempt to repair: built or solved with errors, not yet tried."""
        for a in self.attempts:
            if a.source == "ir" and not a.repaired and a.draft_text and a.verdict == "wrong":
                return a
        for a in self.attempts:
            if a.source == "ir" and not a.repaired and a.draft_text and a.verdict == "suspicious":
                return a
        return None


def _cut(limit: float, left: float | None) -> float:
    """``limit`` cut to the time ``left`` (at least one second: a limit of zero would be
    refused or mean "none")."""
    return limit if left is None else max(1.0, min(limit, left))


def plan_features(problem: str) -> dict[str, Any]:
    """Cues the planner reads from the text without a model."""
    text = problem.lower()
    return {
        "table": "|" in problem and "---" in problem,
        "nonlinear": bool(
            re.search(
                r"\b(squared|square of|product of|times the number|quadratic|"
                r"area of|volume of|radius|per (?:unit )?squared)\b",
                text,
            )
        ),
        "integer_stated": bool(re.search(r"\b(whole numbers?|integers?)\b", text)),
        "fraction_stated": bool(re.search(r"\bfractional\b|\bcontinuous\b", text)),
    }
