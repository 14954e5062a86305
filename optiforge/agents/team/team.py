"""The modelling team: formulator, planner, coder and critic under a UCB scheduler.

One run (:func:`asolve`):

1. **Planner** reads the text: integrality cues, nonlinearity cues, tables; it registers
   the plans (arms) the scheduler may spend budget on: ``sample`` (more IR formulations at
   T≈0.7), ``repair`` (critic feedback -> formulator repair), ``code`` (Pyomo program in the
   sandbox, for what the IR cannot express). With ``llm_planner`` it also asks a model.
2. **Formulator** writes ``samples`` formulations as grammar-constrained JSON (one greedy,
   the rest sampled). Each is normalised into a :class:`ModelIR`, integrality is decided
   from units, and ``solve_ir`` solves it deterministically (no code execution).
3. **Critic** runs deterministic checks on each result (sense, integrality, infeasible or
   unbounded where the text implies a solution, invented numbers, unused variables); cheap
   fixes (objective sense) are applied at once, the rest become repair feedback, with an LLM
   critique on top.
4. **Scheduler** votes on solved objectives (self-consistency). Until the vote is confident
   or the budget is spent, UCB1 picks the next plan and rewards plans whose pulls produce
   clean, agreeing answers.

The answer is the objective of the heaviest agreeing cluster; the solution carries that
formulation, its Pyomo code, the solver result and every step's calls, tokens and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from optiforge.agents.solution import Solution, StepRecord
from optiforge.agents.team import checks as chk
from optiforge.agents.team import roles
from optiforge.agents.team.directions import count_flips
from optiforge.agents.team.formulation import Normalized, ir_signature, normalize_draft
from optiforge.agents.team.prompts import PromptSet, load_prompt_values
from optiforge.agents.team.scheduler import Candidate, UCBScheduler, confident, vote
from optiforge.errors import OptiforgeError
from optiforge.solvers.result import SolveResult, SolveStatus

ROLES = ("formulator", "planner", "coder", "critic")
#: Formulations in the first round when ``samples`` is not given (1 greedy + 2 sampled).
DEFAULT_SAMPLES = 3


class TeamError(OptiforgeError):
    """Bad arguments to the team (empty problem, unknown agent, bad budget)."""


class TeamBudget(BaseModel):
    """What one problem may spend. LLM samples count every generated reply (a cached reply
    is free); solver runs count IR solves and sandboxed programs."""

    llm_samples: int = Field(default=8, ge=1, le=200)
    solver_runs: int = Field(default=40, ge=1, le=1000)
    #: Wall-clock limit in seconds for starting new work (None: no limit).
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


def _coerce_budget(budget: Any) -> TeamBudget:
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


@dataclass
class Attempt:
    """One formulation or program and what became of it."""

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
        return base * (0.8 if self.source == "code" else 1.0)


class _Run:
    """State of one team run (one problem)."""

    def __init__(
        self,
        problem: str,
        llms: dict[str, Any],
        prompts: PromptSet,
        budget: TeamBudget,
        config: TeamConfig,
        samples: int,
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
        self.seed = 0
        self.signatures: set[str] = set()
        self.code_attempt: Attempt | None = None
        self.nonlinear_hint = False

    # -- budget -----------------------------------------------------------------------
    def can_sample(self, k: int = 1) -> bool:
        if self.budget.seconds is not None and self.elapsed() > self.budget.seconds:
            return False
        return self.llm_samples + k <= self.budget.llm_samples

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def next_seed(self) -> int:
        self.seed += 1
        return self.seed

    def record(self, reply: roles.RoleReply) -> None:
        self.steps.append(reply.step)
        self.llm_samples += 1

    # -- solving ----------------------------------------------------------------------
    async def solve_ir_attempt(self, att: Attempt) -> None:
        """Validate, solve and check one IR attempt (with deterministic fixes)."""
        from optiforge.solvers import ModelIR, solve_ir
        from optiforge.solvers.errors import IRValidationError, SolverError

        started = time.perf_counter()
        ir = att.ir
        assert ir is not None
        try:
            model = ModelIR.from_json(ir)
        except IRValidationError as exc:
            att.error = str(exc)
        if att.error is None:
            try:
                self.solver_runs += 1
                att.result = await asyncio.to_thread(
                    solve_ir, model, time_limit=self.config.solver_time_limit
                )
            except (SolverError, IRValidationError) as exc:
                att.error = str(exc)
            except Exception as exc:  # a solver crash must not end the run
                att.error = f"{type(exc).__name__}: {exc}"
        att.issues = chk.check_solution(self.problem, ir, att.result, error=att.error)
        # Deterministic fix: objective sense contradicting the text.
        if any(i.action == "flip_sense" for i in att.issues) and self.solver_runs < (
            self.budget.solver_runs
        ):
            flipped = json.loads(json.dumps(ir))
            want = flipped["objective"]["sense"]
            flipped["objective"]["sense"] = "minimize" if want == "maximize" else "maximize"
            try:
                self.solver_runs += 1
                res = await asyncio.to_thread(
                    solve_ir, ModelIR.from_json(flipped), time_limit=self.config.solver_time_limit
                )
                att.ir, ir, att.result = flipped, flipped, res
                if att.normalized is not None:
                    att.normalized.notes.append(
                        "critic flipped the objective sense to match the text"
                    )
                att.issues = chk.check_solution(self.problem, ir, res)
            except Exception:
                pass
        # Integrality that rests on the model's word alone: note what relaxing would give.
        if (
            att.result is not None
            and att.result.ok
            and att.normalized is not None
            and att.normalized.integrality_unclear
            and any(v.get("domain") == "integer" for v in ir["variables"])
            and self.solver_runs < self.budget.solver_runs
        ):
            try:
                self.solver_runs += 1
                relaxed = await asyncio.to_thread(
                    solve_ir,
                    ModelIR.from_json(ir),
                    relax_integrality=True,
                    time_limit=self.config.solver_time_limit,
                )
                if relaxed.ok:
                    att.alt_relaxed = relaxed.objective
            except Exception:
                pass
        att.verdict = chk.verdict(att.issues)
        status = att.result.status.value if att.result is not None else "not built"
        self.steps.append(
            StepRecord(
                role="solver",
                plan_id=att.plan,
                elapsed_s=round(time.perf_counter() - started, 3),
                ok=att.value is not None,
                summary=(
                    f"attempt {att.index}: {status}"
                    + (f", objective {att.result.objective:g}" if att.value is not None else "")
                    + f", critic checks: {att.verdict}"
                    + (f" ({att.issues[0].check})" if att.issues else "")
                    + _fix_summary(att)
                ),
                detail={
                    "attempt": att.index,
                    "notes": att.normalized.notes if att.normalized else [],
                    "issues": [i.model_dump() for i in att.issues],
                    "alt_relaxed_objective": att.alt_relaxed,
                },
            )
        )

    def add_draft(self, reply: roles.RoleReply, plan: str, parent: int | None = None) -> Attempt:
        att = Attempt(index=len(self.attempts), plan=plan, source="ir", parent=parent)
        self.attempts.append(att)
        if reply.error or not reply.values:
            att.error = reply.error or "no formulation"
            att.issues = chk.check_solution(self.problem, {}, None, error=att.error)
            att.verdict = "wrong"
            return att
        draft = reply.values[0]
        att.draft_text = roles.draft_json(draft)
        att.normalized = normalize_draft(draft, self.problem)
        att.ir = att.normalized.ir
        return att

    async def formulate_batch(self, plan: str, temps: list[float]) -> list[Attempt]:
        """Ask for ``len(temps)`` formulations at once, solve and check them."""
        llm = self.llms["formulator"]
        calls = [
            roles.formulate(
                llm,
                self.prompts,
                self.problem,
                temperature=t,
                seed=None if t == 0 else self.next_seed(),
                plan=plan,
            )
            for t in temps
        ]
        replies = await asyncio.gather(*calls)
        new = []
        for r in replies:
            self.record(r)
            att = self.add_draft(r, plan)
            new.append(att)
        await asyncio.gather(*(self.solve_ir_attempt(a) for a in new if a.ir is not None))
        for a in new:
            if a.ir is not None:
                self.signatures.add(ir_signature(a.ir))
        return new

    def repair_target(self) -> Attempt | None:
        """The most promising attempt to repair: built or solved with errors, not yet tried."""
        for a in self.attempts:
            if a.source == "ir" and not a.repaired and a.draft_text and a.verdict == "wrong":
                return a
        for a in self.attempts:
            if a.source == "ir" and not a.repaired and a.draft_text and a.verdict == "suspicious":
                return a
        return None

    async def repair(self, target: Attempt) -> Attempt:
        """Critic feedback (deterministic checks + LLM critique) -> formulator repair."""
        target.repaired = True
        issues_text = chk.format_issues(target.issues)
        if self.config.llm_critic and self.can_sample(2):
            model_text = _model_text(target)
            result_text = _result_text(target)
            reply = await roles.critique(
                self.llms["critic"],
                self.prompts,
                self.problem,
                model_text,
                result_text,
                issues_text,
                plan="repair",
            )
            self.record(reply)
            if reply.values:
                c = reply.values[0]
                extra = [f"- {p}" for p in c.problems] + [f"- Fix: {f}" for f in c.fixes]
                if c.verdict == "wrong" and extra:
                    issues_text = (issues_text + "\n" + "\n".join(extra)).strip()
        reply = await roles.formulate(
            self.llms["formulator"],
            self.prompts,
            self.problem,
            temperature=self.config.temperature,
            seed=self.next_seed(),
            previous=target.draft_text,
            issues=issues_text or "- check every constraint against the text",
            plan="repair",
        )
        self.record(reply)
        att = self.add_draft(reply, "repair", parent=target.index)
        if att.ir is not None:
            await self.solve_ir_attempt(att)
        return att

    async def code_pull(self) -> Attempt:
        """Write (or repair) a Pyomo program and run it in the sandbox."""
        from optiforge.solvers.sandbox import arun_sandboxed

        prev = self.code_attempt
        hint = ""
        if self.nonlinear_hint:
            hint = "(The model may be nonlinear: products or powers of variables are allowed.)\n"
        repairing = prev is not None and prev.code is not None and prev.value is None
        reply = await roles.write_code(
            self.llms["coder"],
            self.prompts,
            self.problem,
            temperature=self.config.temperature if prev is not None else 0.0,
            seed=self.next_seed() if prev is not None else None,
            hint=hint,
            previous=prev.code if repairing else None,
            error=(prev.error or _result_text(prev)) if repairing else None,
            plan="code",
        )
        self.record(reply)
        att = Attempt(
            index=len(self.attempts),
            plan="code",
            source="code",
            parent=prev.index if repairing and prev is not None else None,
        )
        self.attempts.append(att)
        self.code_attempt = att
        code = reply.values[0] if reply.values else None
        att.code = code
        if not code:
            att.error = reply.error or "the reply contained no Python code block"
            att.verdict = "wrong"
            return att
        started = time.perf_counter()
        self.solver_runs += 1
        sb = await arun_sandboxed(code, timeout=self.config.sandbox_timeout)
        att.result, att.error = sandbox_outcome(sb)
        ir_like = {"objective": {"sense": chk.implied_sense(self.problem) or ""}, "variables": []}
        att.issues = (
            chk.check_solution(self.problem, ir_like, att.result, error=att.error)
            if att.error is None
            else chk.check_solution(self.problem, {}, None, error=att.error)
        )
        att.issues = [i for i in att.issues if i.check not in ("no_constraints", "sense")]
        att.verdict = chk.verdict(att.issues)
        self.steps.append(
            StepRecord(
                role="sandbox",
                plan_id="code",
                elapsed_s=round(time.perf_counter() - started, 3),
                ok=att.value is not None,
                summary=f"attempt {att.index}: {sb.message[:200]}",
                detail={"attempt": att.index, "exit_reason": sb.exit_reason.value},
            )
        )
        return att

    def candidates(self) -> list[Candidate]:
        return [
            Candidate(value=a.value, weight=a.weight, plan=a.plan, index=a.index)
            for a in self.attempts
            if a.value is not None
        ]


def _fix_summary(att: Attempt) -> str:
    """The deterministic fixes of an attempt, in a few words for the step summary."""
    flipped = count_flips(att.normalized.notes) if att.normalized else 0
    return f"; flipped {flipped} constraint(s) to match the text" if flipped else ""


def sandbox_outcome(sb: Any) -> tuple[SolveResult | None, str | None]:
    """A sandbox run as (result, error text for the repair prompt)."""
    if sb.result is not None:
        return sb.result, None
    tail = (sb.stderr or "").strip().splitlines()[-12:]
    err = sb.message or sb.exit_reason.value
    if tail:
        err = f"{err}\n" + "\n".join(tail)
    if sb.report_error:
        err = f"{err}\n{sb.report_error}"
    if sb.exit_reason.value == "ok":
        err = (
            f"{err}\nThe program ran but reported no result: end it with "
            "report(model=m, results=res)."
        )
    return None, err[-2000:]


def _model_text(att: Attempt) -> str:
    if att.ir is None:
        return att.draft_text or "(none)"
    return ir_markdown(att.ir)


def _result_text(att: Attempt | None) -> str:
    if att is None:
        return "(none)"
    if att.error:
        return f"error: {att.error[:800]}"
    r = att.result
    if r is None:
        return "(not solved)"
    if r.ok:
        vals = ", ".join(f"{k} = {v:g}" for k, v in list(r.variables.items())[:12])
        return f"{r.status.value}, objective {r.objective:g}; {vals}"
    return f"{r.status.value}: {r.message or ''}".strip()


def ir_markdown(ir: dict[str, Any]) -> str:
    """Readable math for an IR dict (the solvers package's renderer when available)."""
    try:
        from optiforge.solvers import ModelIR, ir_to_markdown

        return ir_to_markdown(ModelIR.model_validate(ir))
    except Exception:
        pass
    lines = [f"{ir['objective']['sense']} {ir['objective']['expression']}", "subject to"]
    for c in ir.get("constraints", []):
        lines.append(f"  {c['name']}: {c['expression']}")
    for v in ir.get("variables", []):
        desc = f"  # {v.get('description')}" if v.get("description") else ""
        lines.append(f"  {v['name']} >= 0, {v.get('domain', 'continuous')}{desc}")
    return "\n".join(lines)


def ir_plaintext(ir: dict[str, Any]) -> str:
    """The formulation as plain-text math for a terminal."""
    obj = ir["objective"]
    lines = [f"{obj['sense']}  {obj['expression']}", "subject to"]
    width = max((len(c["name"]) for c in ir.get("constraints", [])), default=2)
    for c in ir.get("constraints", []):
        src = f"    [{c['source'][:70]}]" if c.get("source") else ""
        lines.append(f"  {c['name']:<{width}}  {c['expression']}{src}")
    lines.append("variables")
    for v in ir.get("variables", []):
        lb = v.get("lb", 0.0)
        ub = v.get("ub")
        rng = f"{'-inf' if lb is None else f'{lb:g}'} <= {v['name']}" + (
            f" <= {ub:g}" if ub is not None else ""
        )
        desc = f"  ({v['description']}" + (f", {v['units']}" if v.get("units") else "") + ")"
        lines.append(
            f"  {rng}, {v.get('domain', 'continuous')}{desc if v.get('description') else ''}"
        )
    return "\n".join(lines)


def ir_code(ir: dict[str, Any]) -> str | None:
    """Pyomo code for an IR dict, from the solvers package's renderer (None if unavailable)."""
    try:
        from optiforge.solvers import ModelIR, ir_to_pyomo_code

        return ir_to_pyomo_code(ModelIR.model_validate(ir))
    except Exception:
        return None


# -- planner (deterministic part) --------------------------------------------------------


def plan_features(problem: str) -> dict[str, Any]:
    """Cues the planner reads from the text without a model."""
    import re

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


# -- entry points ------------------------------------------------------------------------


def _resolve_llms(llm: Any, roles_map: dict[str, Any] | None) -> tuple[dict[str, Any], list[Any]]:
    """Per-role clients; returns (clients, clients this run created and must close)."""
    owned: list[Any] = []
    unknown = sorted(set(roles_map or {}) - set(ROLES))
    if unknown:
        raise TeamError(f"unknown role(s) {unknown}; roles are {', '.join(ROLES)}")
    if llm is None and not (roles_map and all(r in roles_map for r in ROLES)):
        from optiforge.llm import LLM

        llm = LLM()
        owned.append(llm)
    out = {r: (roles_map or {}).get(r) or llm for r in ROLES}
    return out, owned


def _check_problem(problem_text: Any) -> str:
    if not isinstance(problem_text, str):
        raise TeamError(f"problem_text must be a string, got {type(problem_text).__name__}")
    text = problem_text.strip()
    if not text:
        raise TeamError("the problem text is empty; give the word problem to solve")
    return text


def _summarize(sol: Solution) -> Solution:
    sol.calls = sum(s.calls for s in sol.steps)
    sol.prompt_tokens = sum(s.prompt_tokens for s in sol.steps)
    sol.completion_tokens = sum(s.completion_tokens for s in sol.steps)
    return sol


async def _run_team(
    problem: str,
    llms: dict[str, Any],
    prompts: PromptSet,
    budget: TeamBudget,
    config: TeamConfig,
    samples: int,
) -> Solution:
    run = _Run(problem, llms, prompts, budget, config, samples)
    sched = UCBScheduler(exploration=config.exploration)
    feats = plan_features(problem)
    run.nonlinear_hint = feats["nonlinear"]
    # Planner: register plans with priors from the cues.
    if config.llm_planner and run.can_sample():
        reply = await roles.plan_advice(llms["planner"], prompts, problem)
        run.record(reply)
        if reply.values:
            run.nonlinear_hint = run.nonlinear_hint or reply.values[0].nonlinear
    # Repair from solver/validation errors is the cheapest fix that works, so it is tried
    # first when something is wrong; fresh samples feed the vote.
    sched.add("repair", prior=0.6)
    sched.add("sample", prior=0.55)
    if config.code_route:
        sched.add("code", prior=0.45 if run.nonlinear_hint else 0.25)
    run.steps.append(
        StepRecord(
            role="planner",
            summary="plans: " + ", ".join(sched.arms) + f"; cues {feats}",
            detail={"features": feats, "arms": list(sched.arms)},
        )
    )
    # First round: one greedy formulation plus samples-1 sampled ones.
    first = max(1, min(samples, budget.llm_samples))
    temps = [0.0] + [config.temperature] * (first - 1)
    await run.formulate_batch("sample", temps)
    v = vote(run.candidates())
    while not confident(v, config.min_votes, config.min_share) and run.can_sample(1):
        if run.repair_target() is None:
            sched.disable("repair")
        else:
            sched.enable("repair")
        arm = sched.choose()
        if arm is None:
            break
        need = {"sample": config.samples_per_pull, "repair": 1, "code": 1}[arm]
        if not run.can_sample(need):
            if arm == "sample" and run.can_sample(1):
                need = 1
            else:
                # Not enough budget left for this plan: stop rather than spin.
                break
        before = vote(run.candidates())
        if arm == "sample":
            new = await run.formulate_batch("sample", [config.temperature] * need)
        elif arm == "repair":
            target = run.repair_target()
            assert target is not None
            new = [await run.repair(target)]
        else:
            new = [await run.code_pull()]
        v = vote(run.candidates())
        sched.update(arm, _reward(new, before))
    # Decide.
    sol = Solution(problem_text=problem, agent="team")
    sol.steps = run.steps
    v = vote(run.candidates())
    chosen: Attempt | None = None
    if v.value is not None:
        members = sorted(v.members, key=lambda c: (run.attempts[c.index].source != "ir", c.index))
        chosen = run.attempts[members[0].index]
        sol.answer = v.value
    else:
        chosen = _best_failure(run.attempts)
    if chosen is not None:
        sol.result = chosen.result
        if chosen.ir is not None:
            sol.formulation = chosen.ir
            sol.formulation_markdown = ir_markdown(chosen.ir)
            sol.code = ir_code(chosen.ir)
        if chosen.code:
            sol.code = chosen.code
    if sol.answer is None:
        sol.failure_class, sol.error = _failure(run.attempts, run)
    sol.steps.append(
        StepRecord(
            role="scheduler",
            summary=(
                f"vote: {v.value if v.value is not None else 'none'} with weight "
                f"{v.weight:.2f}/{v.total:.2f} over {len(run.attempts)} attempts; "
                f"{run.llm_samples} LLM samples, {run.solver_runs} solver runs"
            ),
            detail={
                "arms": sched.snapshot(),
                "votes": [
                    {"attempt": a.index, "plan": a.plan, "value": a.value, "verdict": a.verdict}
                    for a in run.attempts
                ],
            },
        )
    )
    sol.elapsed_s = round(run.elapsed(), 3)
    return _summarize(sol)


def _reward(new: list[Attempt], before: Any) -> float:
    best = 0.0
    for a in new:
        if a.value is None:
            continue
        if before.value is not None and any(
            abs(a.value - c.value) / (abs(c.value) + 1) < 1e-6 for c in before.members
        ):
            r = 1.0 if a.verdict == "ok" else 0.6
        else:
            r = 0.5 if a.verdict == "ok" else 0.2
        best = max(best, r)
    return best


def _best_failure(attempts: list[Attempt]) -> Attempt | None:
    order = {"infeasible": 0, "unbounded": 1}
    solved = [a for a in attempts if a.result is not None]
    if solved:
        return sorted(
            solved,
            key=lambda a: (order.get(a.result.status.value, 2), a.index),  # type: ignore[union-attr]
        )[0]
    return attempts[-1] if attempts else None


def _failure(attempts: list[Attempt], run: _Run) -> tuple[str, str]:
    if not attempts:
        return "budget", "the budget allowed no formulation"
    if all(
        a.error and ("LLM" in a.error or "Error:" in a.error.split("\n")[0]) for a in attempts
    ) and all(a.ir is None and a.code is None for a in attempts):
        return "llm_error", attempts[-1].error or "every model call failed"
    statuses = [a.result.status for a in attempts if a.result is not None]
    if statuses and all(
        s in (SolveStatus.INFEASIBLE, SolveStatus.INFEASIBLE_OR_UNBOUNDED, SolveStatus.UNBOUNDED)
        for s in statuses
    ):
        return "infeasible", "every formulation was infeasible or unbounded"
    if any(a.result is not None and a.result.status == SolveStatus.TIME_LIMIT for a in attempts):
        return "timeout", "the solver stopped at its time limit"
    if all(a.source == "code" for a in attempts if a.error):
        return "code_error", attempts[-1].error or "the programs failed"
    if any(a.result is not None and a.result.ok for a in attempts):
        return "no_answer", "solved formulations failed the critic's checks"
    return "formulation", (attempts[-1].error or "no formulation could be solved")[:2000]


async def _run_direct(problem: str, llm: Any, prompts: PromptSet, config: TeamConfig) -> Solution:
    """The baseline: one prompt -> Pyomo code -> one sandbox run (no repair, no voting)."""
    from optiforge.solvers.sandbox import arun_sandboxed

    started = time.perf_counter()
    sol = Solution(problem_text=problem, agent="direct")
    reply = await roles.write_code(
        llm, prompts, problem, role="direct", user_template="direct_user", plan="direct"
    )
    sol.steps.append(reply.step)
    code = reply.values[0] if reply.values else None
    sol.code = code
    if code is None:
        sol.error = reply.error or "the reply contained no Python code block"
        sol.failure_class = "llm_error" if reply.error else "code_error"
    else:
        t0 = time.perf_counter()
        sb = await arun_sandboxed(code, timeout=config.sandbox_timeout)
        result, err = sandbox_outcome(sb)
        sol.steps.append(
            StepRecord(
                role="sandbox",
                plan_id="direct",
                elapsed_s=round(time.perf_counter() - t0, 3),
                ok=result is not None and result.ok,
                summary=sb.message[:200],
                detail={"exit_reason": sb.exit_reason.value},
            )
        )
        sol.result = result
        if result is not None and result.ok:
            sol.answer = result.objective
        elif result is not None:
            sol.failure_class = {
                SolveStatus.INFEASIBLE: "infeasible",
                SolveStatus.UNBOUNDED: "infeasible",
                SolveStatus.INFEASIBLE_OR_UNBOUNDED: "infeasible",
                SolveStatus.TIME_LIMIT: "timeout",
            }.get(result.status, "no_answer")
            sol.error = result.message or result.status.value
        else:
            sol.failure_class = "timeout" if sb.exit_reason.value == "timeout" else "code_error"
            sol.error = err
    sol.elapsed_s = round(time.perf_counter() - started, 3)
    return _summarize(sol)


async def asolve(
    problem_text: str,
    *,
    llm: Any = None,
    agent: str = "team",
    budget: int | dict[str, Any] | TeamBudget | None = None,
    samples: int | None = None,
    prompts: str | Path | dict[str, str] | None = None,
    roles: dict[str, Any] | None = None,
    config: TeamConfig | None = None,
) -> Solution:
    """Solve a word problem; see :func:`solve`."""
    text = _check_problem(problem_text)
    if agent not in ("team", "direct"):
        raise TeamError(f"unknown agent {agent!r}; use 'team' or 'direct'")
    if samples is None:
        samples = DEFAULT_SAMPLES
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise TeamError(f"samples must be a positive integer, got {samples!r}")
    tb = _coerce_budget(budget)
    cfg = config or TeamConfig()
    ps = PromptSet(load_prompt_values(prompts))
    llms, owned = _resolve_llms(llm, roles)
    try:
        if agent == "direct":
            return await _run_direct(text, llms["coder"], ps, cfg)
        return await _run_team(text, llms, ps, tb, cfg, max(samples, 1))
    finally:
        for c in owned:
            with contextlib.suppress(Exception):
                c.close()


def solve(
    problem_text: str,
    *,
    llm: Any = None,
    agent: str = "team",
    budget: int | dict[str, Any] | TeamBudget | None = None,
    samples: int | None = None,
    prompts: str | Path | dict[str, str] | None = None,
    roles: dict[str, Any] | None = None,
    config: TeamConfig | None = None,
) -> Solution:
    """Turn a word problem into a solved optimization model.

    ``agent="team"`` runs the modelling team (formulator, planner, coder, critic under a
    UCB scheduler, with self-consistency voting); ``agent="direct"`` is the single-shot
    baseline (one prompt -> Pyomo code -> one sandbox run).

    ``llm``: an :class:`optiforge.llm.LLM` (or any client with ``achat``); None starts the
    default local model. ``roles`` maps role names (formulator, planner, coder, critic) to
    their own clients. ``budget``: LLM samples per problem (int), a dict or
    :class:`TeamBudget`. ``samples``: formulations in the first round (1 greedy + the rest
    sampled at T=0.7). ``prompts``: tuned prompt values (a JSON file from ``optiforge
    tune`` or a dict). Returns a :class:`~optiforge.agents.solution.Solution`; failures are
    reported in ``failure_class``/``error``, bad arguments raise :class:`TeamError`.
    """
    coro = asolve(
        problem_text,
        llm=llm,
        agent=agent,
        budget=budget,
        samples=samples,
        prompts=prompts,
        roles=roles,
        config=config,
    )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Called from inside a running loop (e.g. a notebook): run in a helper thread.
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
