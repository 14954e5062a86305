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

Every step is a bundled trace op (:mod:`.attempt`), and the run's output is a node whose
value is the :class:`Solution`: :func:`asolve_graph` / :func:`solve_graph` return it with
the whole run recorded (``--save-graph``), :func:`asolve` / :func:`solve` record nothing.
This module holds the entry points; run state and plans are in :mod:`.state`, the steps
and attempts in :mod:`.attempt`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

from optiforge.agents.solution import Solution, StepRecord
from optiforge.agents.team import roles
from optiforge.agents.team.attempt import TeamRun
from optiforge.agents.team.hints import choose_hints
from optiforge.agents.team.prompts import PromptSet, load_prompt_values, prompt_parameter
from optiforge.agents.team.scheduler import UCBScheduler, confident, same_value, split, vote
from optiforge.agents.team.state import (
    DEFAULT_SAMPLES,
    ROLES,
    STOPPED_DEADLINE,
    STOPPED_TIME_LEFT,
    Attempt,
    Findings,
    TeamBudget,
    TeamConfig,
    TeamError,
    coerce_budget,
    plan_features,
    used_prompts,
)
from optiforge.agents.team.template_route import TemplateRoute
from optiforge.agents.team.verify import Verifier
from optiforge.llm import run_sync
from optiforge.llm.protocol import ChatClient
from optiforge.solvers.result import SolveStatus
from optiforge.trace import bundle, no_trace, node, tracing

__all__ = [
    "DEFAULT_SAMPLES",
    "ROLES",
    "TeamBudget",
    "TeamConfig",
    "TeamError",
    "asolve",
    "asolve_graph",
    "plan_features",
    "solve",
    "solve_graph",
]

_VOTE_DOC = (
    "The scheduler's self-consistency vote over the checked attempts: solved answers that "
    "pass the critic's checks vote (weight 1, 0.6 when suspicious, x0.8 for programs; with "
    "weighted voting by the critic's and the verifier's verdicts); the heaviest agreeing "
    "cluster wins."
)
_DECIDE_DOC = (
    "The team's answer: the objective of the winning cluster with its formulation, code and "
    "solver result (or the most informative failure when nothing won)."
)


class _Decision:
    """The vote and the decision of one run, as ops bound to it."""

    def __init__(self, run: TeamRun, sched: UCBScheduler) -> None:
        self.run = run
        self.sched = sched

    @bundle(name="vote", doc=_VOTE_DOC)
    def vote(self, *findings: Findings) -> Any:
        """The vote over every attempt's checked result."""
        return _vote(self.run)

    @bundle(name="decide", doc=_DECIDE_DOC)
    def decide(self, problem: str, v: Any) -> Solution:
        """Build the :class:`Solution` from the vote."""
        from optiforge.solvers.render import ir_code, ir_markdown

        run = self.run
        sol = Solution(problem_text=problem, agent="team")
        sol.steps = run.steps
        chosen: Attempt | None = None
        if v.value is not None:
            members = sorted(
                v.members, key=lambda c: (run.attempts[c.index].source != "ir", c.index)
            )
            chosen = run.attempts[members[0].index]
            sol.answer = v.value
        else:
            chosen = _best_failure(run.attempts)
        if chosen is not None:
            sol.result = chosen.result
            if chosen.ir is not None:
                sol.formulation = chosen.model
                sol.formulation_markdown = ir_markdown(chosen.ir)
                sol.code = ir_code(chosen.ir)
            if chosen.code:
                sol.code = chosen.code
        if sol.answer is None:
            sol.failure_class, sol.error = _failure(run.attempts)
            if run.stopped is not None:
                sol.failure_class, sol.error = "timeout", _stopped_error(run, sol.error)
        sol.stopped = run.stopped
        sol.time_limit_s = run.time_limit
        sol.levers = list(run.levers)
        sol.steps.append(
            StepRecord(
                role="scheduler",
                summary=(
                    f"vote: {v.value if v.value is not None else 'none'} with weight "
                    f"{v.weight:.2f}/{v.total:.2f} over {len(run.attempts)} attempts; "
                    f"{run.llm_samples} LLM samples, {run.solver_runs} solver runs"
                    + (f"; stopped: {run.stopped}" if run.stopped else "")
                ),
                detail={
                    "arms": self.sched.snapshot(),
                    "votes": [
                        {"attempt": a.index, "plan": a.plan, "value": a.value, "verdict": a.verdict}
                        for a in run.attempts
                    ],
                },
            )
        )
        sol.elapsed_s = round(run.elapsed(), 3)
        return _summarize(sol)


def _resolve_llms(
    llm: ChatClient | None, roles_map: dict[str, Any] | None
) -> tuple[dict[str, Any], list[Any]]:
    """Per-role clients; returns (clients, clients this run created and must close)."""
    owned: list[Any] = []
    unknown = sorted(set(roles_map or {}) - set(ROLES))
    if unknown:
        raise TeamError(f"unknown role(s) {unknown}; roles are {', '.join(ROLES)}")
    if llm is None and not (roles_map and all(r in roles_map for r in ROLES)):
        from optiforge.config import load_settings
        from optiforge.llm.serving import connect

        llm = connect(load_settings())  # no base_url: starts the embedded server on first use
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


async def _run_team(run: TeamRun) -> Any:
    """The scheduler loop of one run under its deadline; returns the output node (value:
    the Solution). At the deadline the work in flight is cancelled and the run decides on
    the attempts it has checked so far."""
    sched = UCBScheduler(exploration=run.config.exploration)
    expired = await _before_deadline(run, _plan_and_pull(run, sched))
    if expired:
        run.stopped = STOPPED_DEADLINE
        run.steps.append(
            StepRecord(
                role="scheduler",
                ok=False,
                summary=f"stopped at the deadline ({run.time_limit:g} s): cancelled the "
                f"work in flight; deciding on the {len(run.candidates())} checked answer(s) "
                "so far",
                detail={"stopped": STOPPED_DEADLINE, "elapsed_s": round(run.elapsed(), 3)},
            )
        )
    # Decide.
    d = _Decision(run, sched)
    final = d.vote(*(a.findings_node for a in run.attempts if a.findings_node is not None))
    return d.decide(run.problem_node, final)


async def _before_deadline(run: Any, work: Any) -> bool:
    """Await ``work`` until ``run.deadline``; True when the deadline cancelled it.

    (``asyncio.wait_for``, not ``asyncio.timeout``, which needs Python 3.11: a timeout the
    work itself raises is told apart from the deadline's and raised again.)"""
    left = run.time_left()
    if left is None:
        await work
        return False
    own: list[BaseException] = []

    async def guarded() -> None:
        try:
            await work
        except asyncio.TimeoutError as exc:
            own.append(exc)

    try:
        await asyncio.wait_for(guarded(), max(0.0, left))
    except asyncio.TimeoutError:
        return True
    if own:
        raise own[0]
    return False


def _next_plan(run: TeamRun, sched: UCBScheduler) -> tuple[str | None, int]:
    """The plan to pull next and the LLM samples it takes; (None, 0) to stop.

    The bandit's choice, unless the budget cannot pay for it (stop rather than spin) or
    its measured cost does not fit the time left: then the best plan that fits, and when
    none does, the run stops starting work (``run.stopped = "time_left"``), unless no
    attempt has an answer yet: then the plan measured cheapest is tried anyway (one
    sample), since the deadline cancels it if it runs late."""
    config = run.config
    skipped: dict[str, float] = {}
    while True:
        arm = sched.choose(exclude=skipped)
        if arm is None:
            break
        need = {"sample": config.samples_per_pull, "repair": 1, "code": 1}[arm]
        if not run.can_sample(need):
            if arm == "sample" and run.can_sample(1):
                need = 1
            else:
                # Not enough budget left for this plan: stop rather than spin.
                return None, 0
        est, left = run.estimate_pull(arm), run.time_left()
        if est is not None and left is not None and est > left:
            skipped[arm] = est
            continue
        return arm, need
    if not skipped:
        return None, 0
    left = run.time_left() or 0.0
    measured = {
        "time_left_s": round(left, 3),
        "estimates_s": {a: round(t, 3) for a, t in skipped.items()},
    }
    if not run.candidates() and run.can_sample(1):
        # Nothing answered yet: a step that may not finish costs only the time until the
        # deadline cancels it, and stopping now leaves the problem without an answer. The
        # estimate comes from calls that shared the server (the first round's run side by
        # side), so a lone call is often faster than it says.
        arm = min(skipped, key=lambda a: skipped[a])
        run.steps.append(
            StepRecord(
                role="scheduler",
                summary=f"no answer yet: trying {arm} (~{skipped[arm]:.1f} s measured) in "
                f"the {max(left, 0):.1f} s left, though it may not finish",
                detail={"gamble": arm, **measured},
            )
        )
        return arm, 1
    run.stopped = STOPPED_TIME_LEFT
    costs = ", ".join(f"{a} ~{t:.1f} s" for a, t in skipped.items())
    run.steps.append(
        StepRecord(
            role="scheduler",
            summary=f"stopped early: no next step fits the {max(left, 0):.1f} s left "
            f"before the deadline (measured: {costs})",
            detail={"stopped": STOPPED_TIME_LEFT, **measured},
        )
    )
    return None, 0


async def _plan_and_pull(run: TeamRun, sched: UCBScheduler) -> None:
    """Plan, write the first round, then pull plans until the vote is confident, the
    budget is spent or no step fits the time left."""
    config, budget, samples = run.config, run.budget, run.samples
    feats = plan_features(run.problem)
    run.nonlinear_hint = feats["nonlinear"]
    # Planner: register plans with priors from the cues.
    reply = None
    if config.llm_planner and run.can_sample():
        reply = await run.plan(run.problem_node, run.param("planner_system"))
        run.record(reply.value)
        if reply.value.values:
            run.nonlinear_hint = run.nonlinear_hint or reply.value.values[0].nonlinear
    if config.hints:
        _choose_hints(run, reply)
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
    # First round: one greedy formulation plus samples-1 sampled ones. Its time is the
    # first measure of what a "sample" pull costs.
    # With the templates lever, a problem-class template is classified, extracted and
    # solved alongside (it counts against the same budget, so the first round leaves it one
    # sample when it may fire).
    route = TemplateRoute(run) if config.templates else None
    fits = route is not None and route.classify_step().template is not None
    first = max(1, min(samples, budget.llm_samples - run.llm_samples - fits))
    temps = [0.0] + [config.temperature] * (first - 1)

    async def first_round() -> None:
        t0 = time.monotonic()
        await run.formulate_batch("sample", temps)
        run.note_pull("sample", time.monotonic() - t0)

    if route is not None and fits:
        await asyncio.gather(first_round(), route.attempt(reserved=len(temps)))
    else:
        await first_round()
    # The verify lever: check the leading answers line by line; fixes join the vote.
    verifier = Verifier(run) if config.verify else None
    if verifier is not None:
        await verifier.verify_leading()
    v = _vote(run)
    while not confident(v, config.min_votes, config.min_share) and run.can_sample(1):
        if run.repair_target() is None:
            sched.disable("repair")
        else:
            sched.enable("repair")
        arm, need = _split_pull(run, v) or _next_plan(run, sched)
        if arm is None:
            break
        before = vote(run.candidates())
        t0 = time.monotonic()
        if arm == "sample":
            new = await run.formulate_batch("sample", [config.temperature] * need)
        elif arm == "repair":
            target = run.repair_target()
            assert target is not None
            new = [await run.repair(target)]
        else:
            new = [await run.code_pull()]
        run.note_pull(arm, time.monotonic() - t0)
        v = _vote(run)
        sched.update(arm, _reward(new, before))
    if verifier is not None:  # the leading answer may have changed since the first round
        await verifier.verify_leading()


def _choose_hints(run: TeamRun, advice: Any) -> None:
    """The hints step (lever ``hints``): choose the error-class hints for the formulator
    from the problem's cues and the planner model's reply, and record what was chosen."""
    kw = {} if advice is None else {"advice": advice}
    run.hints_node = choose_hints(run.problem_node, **kw)
    choice = run.hints_node.value
    run.steps.append(
        StepRecord(
            role="planner",
            summary=(
                f"hints for the formulator: {', '.join(choice.ids)}"
                if choice.hints
                else "hints for the formulator: none apply"
            )
            + f" (classes: {', '.join(sorted(choice.classes)) or 'none'})",
            detail={"hints": choice.ids, "classes": dict(choice.classes)},
        )
    )


def _vote(run: TeamRun) -> Any:
    """The vote over the checked attempts. With ``weighted_vote`` the weights come from the
    verdicts; when that changes the winner against the plain weights, the lever fires and
    a step says so (once per change)."""
    v = vote(run.candidates())
    if not run.config.weighted_vote or v.value is None:
        return v
    plain = vote(run.candidates(weigh=False))
    if plain.value is not None and not same_value(v.value, plain.value):
        run.fired("weighted_vote")
        change = (plain.value, v.value)
        if run.weight_change != change:
            run.weight_change = change
            run.steps.append(
                StepRecord(
                    role="scheduler",
                    summary=f"weighted vote: {v.value:g} ({v.weight:.2f}/{v.total:.2f}) "
                    f"wins where the plain weights give {plain.value:g} "
                    f"({plain.weight:.2f}/{plain.total:.2f})",
                    detail={
                        "weighted_vote": {
                            "winner": v.value,
                            "plain_winner": plain.value,
                            "members": [c.index for c in v.members],
                            "plain_members": [c.index for c in plain.members],
                        }
                    },
                )
            )
    return v


def _split_pull(run: TeamRun, v: Any) -> tuple[str, int] | None:
    """With ``weighted_vote``, a split vote (answers disagree, no cluster has a clear
    share) buys a ``sample`` pull instead of the bandit's choice: at most
    ``config.split_pulls`` per run, within the budget and when its measured cost fits the
    time left. None when the vote is not split or nothing can be bought."""
    config = run.config
    if not config.weighted_vote or not split(v, config.min_share):
        return None
    if run.split_pulls >= config.split_pulls:
        return None
    need = config.samples_per_pull if run.can_sample(config.samples_per_pull) else 1
    if not run.can_sample(need):
        return None
    est, left = run.estimate_pull("sample"), run.time_left()
    if est is not None and left is not None and est > left:
        return None
    run.split_pulls += 1
    run.fired("weighted_vote")
    run.steps.append(
        StepRecord(
            role="scheduler",
            plan_id="sample",
            summary=f"split vote ({v.clusters} answers, the best {v.value:g} has "
            f"{v.share:.0%} of the weight): buying {need} more sample(s) "
            f"({run.split_pulls}/{config.split_pulls})",
            detail={
                "split_vote": {
                    "clusters": v.clusters,
                    "share": round(v.share, 3),
                    "samples": need,
                    "pull": run.split_pulls,
                }
            },
        )
    )
    return "sample", need


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


def _stopped_error(run: TeamRun, why: str | None) -> str:
    """What a run that its time limit stopped without an answer says about itself."""
    how = (
        "the deadline cancelled the work in flight"
        if run.stopped == STOPPED_DEADLINE
        else "no next step fitted the time left"
    )
    out = (
        f"no answer within the time limit of {run.time_limit:g} s ({how}) after "
        f"{len(run.attempts)} attempt(s) and {run.llm_samples} LLM sample(s)"
    )
    return f"{out}; last: {why}" if run.attempts and why else out


def _best_failure(attempts: list[Attempt]) -> Attempt | None:
    order = {"infeasible": 0, "unbounded": 1}
    solved = [a for a in attempts if a.result is not None]
    if solved:
        return sorted(
            solved,
            key=lambda a: (order.get(a.result.status.value, 2), a.index),  # type: ignore[union-attr]
        )[0]
    return attempts[-1] if attempts else None


def _failure(attempts: list[Attempt]) -> tuple[str, str]:
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


class _Direct:
    """The baseline as ops: one prompt -> Pyomo code -> one sandbox run, under the same
    deadline as the team (at the deadline the request or the program is stopped)."""

    def __init__(
        self,
        llm: ChatClient,
        prompts: PromptSet,
        config: TeamConfig,
        *,
        time_limit: float | None = None,
        deadline: float | None = None,
    ) -> None:
        self.llm = llm
        self.prompts = prompts
        self.config = config
        self.started = time.perf_counter()
        self.time_limit = time_limit
        self.deadline = deadline
        self.stopped: str | None = None
        #: Steps of work the deadline cancelled (the request, or the program's run).
        self.cancelled: list[StepRecord] = []
        self.sandbox: Any = None
        self.sandbox_s = 0.0
        self.error: str | None = None

    def time_left(self) -> float | None:
        """Seconds until the deadline (None without one)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    @bundle(
        name="code",
        doc="The coder model writes a Pyomo program for the problem in one "
        "shot, following the coder_system prompt.",
    )
    async def code(self, problem: str, coder_system: str) -> roles.RoleReply:
        """Ask for the program."""
        ps = self.prompts.with_values(coder_system=coder_system)
        started = time.perf_counter()
        try:
            return await roles.write_code(
                self.llm, ps, problem, role="direct", user_template="direct_user", plan="direct"
            )
        except asyncio.CancelledError:
            self.cancelled.append(
                StepRecord(
                    role="direct",
                    plan_id="direct",
                    elapsed_s=round(time.perf_counter() - started, 3),
                    ok=False,
                    summary="direct request cancelled in flight at the deadline (no reply)",
                    detail={"cancelled": True},
                )
            )
            raise

    @bundle(name="run_code", doc="Runs the program in the sandbox and reads its result.")
    async def run_code(self, reply: roles.RoleReply) -> Any:
        """Run the program; the SolveResult it reported, or None."""
        from optiforge.config import load_settings
        from optiforge.solvers import arun_sandboxed, sandbox_outcome

        t0 = time.perf_counter()
        limit = self.config.sandbox_timeout
        left = self.time_left()
        if left is not None:  # the sandbox kills the program by the deadline
            limit = max(1.0, min(limit, left))
        try:
            self.sandbox = await arun_sandboxed(
                reply.values[0], timeout=limit, settings=load_settings
            )
        except asyncio.CancelledError:
            self.cancelled.append(
                StepRecord(
                    role="sandbox",
                    plan_id="direct",
                    elapsed_s=round(time.perf_counter() - t0, 3),
                    ok=False,
                    summary="program run stopped at the deadline",
                    detail={"cancelled": True},
                )
            )
            raise
        self.sandbox_s = time.perf_counter() - t0
        result, self.error = sandbox_outcome(self.sandbox)
        return result

    @bundle(name="decide", doc="The direct agent's answer: the program's objective.")
    def decide(self, problem: str, reply: roles.RoleReply | None, result: Any) -> Solution:
        """Build the :class:`Solution` from the reply and the program's result."""
        sol = Solution(problem_text=problem, agent="direct")
        sol.stopped, sol.time_limit_s = self.stopped, self.time_limit
        if reply is not None:
            sol.steps.append(reply.step)
        code = reply.values[0] if reply is not None and reply.values else None
        sol.code = code
        if reply is None or (code is not None and self.sandbox is None):
            # The deadline came first: the request or the program's run was cancelled.
            sol.steps.extend(self.cancelled)
            sol.failure_class = "timeout"
            what = "the model had not replied" if reply is None else "the program had not finished"
            sol.error = f"no answer within the time limit of {self.time_limit:g} s ({what})"
        elif code is None:
            sol.error = reply.error or "the reply contained no Python code block"
            sol.failure_class = "llm_error" if reply.error else "code_error"
        else:
            sb = self.sandbox
            sol.steps.append(
                StepRecord(
                    role="sandbox",
                    plan_id="direct",
                    elapsed_s=round(self.sandbox_s, 3),
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
                sol.error = self.error
                left = self.time_left()
                if sol.failure_class == "timeout" and left is not None and left < 1.0:
                    # The sandbox's timeout was cut to the deadline, and that is what hit.
                    sol.stopped = self.stopped = STOPPED_DEADLINE
        sol.elapsed_s = round(time.perf_counter() - self.started, 3)
        return _summarize(sol)


async def _run_direct(d: _Direct, problem_node: Any, coder_system: Any) -> Any:
    got: dict[str, Any] = {}

    async def work() -> None:
        got["reply"] = reply = await d.code(problem_node, coder_system)
        if reply.value.values and reply.value.values[0] is not None:
            got["result"] = await d.run_code(reply)

    if await _before_deadline(d, work()):
        d.stopped = STOPPED_DEADLINE
    reply = got["reply"] if "reply" in got else node(None, name="no_reply")
    result = got["result"] if "result" in got else node(None, name="result")
    return d.decide(problem_node, reply, result)


def _check_args(
    problem_text: Any, agent: str, samples: int | None, budget: Any, config: TeamConfig | None
) -> tuple[str, int, TeamBudget, TeamConfig]:
    text = _check_problem(problem_text)
    if agent not in ("team", "direct"):
        raise TeamError(f"unknown agent {agent!r}; use 'team' or 'direct'")
    if samples is None:
        samples = DEFAULT_SAMPLES
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise TeamError(f"samples must be a positive integer, got {samples!r}")
    return text, samples, coerce_budget(budget), config or TeamConfig()


async def run_graph(
    problem: Any,
    *,
    params: dict[str, Any] | None = None,
    llm: ChatClient | None = None,
    agent: str = "team",
    budget: int | dict[str, Any] | TeamBudget | None = None,
    samples: int | None = None,
    prompts: str | Path | dict[str, str] | None = None,
    roles: dict[str, Any] | None = None,
    config: TeamConfig | None = None,
    time_limit: float | None = None,
) -> Any:
    """Run the team (or the direct agent) as trace ops; returns the output node.

    ``problem`` is the text or a node holding it; ``params`` maps prompt names to the
    ParameterNodes the steps read (e.g. a :class:`TeamModule`'s), the rest are made from
    ``prompts``. Whether a graph is kept is up to the caller's trace context
    (:func:`optiforge.trace.no_trace` / :func:`~optiforge.trace.tracing`).
    """
    text, n_samples, tb, cfg = _check_args(
        problem.value if hasattr(problem, "backward") else problem, agent, samples, budget, config
    )
    if time_limit is not None:
        if isinstance(time_limit, bool) or not isinstance(time_limit, (int, float)):
            raise TeamError(f"time_limit must be a number of seconds, got {time_limit!r}")
        if not time_limit > 0:
            raise TeamError(f"time_limit must be > 0 seconds, got {time_limit!r}")
        if tb.seconds is None or time_limit < tb.seconds:
            tb = tb.model_copy(update={"seconds": float(time_limit)})
    # The clock starts now: the deadline is the caller's time limit from this call on.
    deadline = time.monotonic() + tb.seconds if tb.seconds is not None else None
    ps = PromptSet(load_prompt_values(prompts))
    # A problem node is used as it is when it holds the text the run reads (stripped).
    given = hasattr(problem, "backward") and problem.value == text
    problem_node = problem if given else node(text, name="problem")
    pmap = dict(params or {})
    for name in used_prompts(agent, cfg):
        if name not in pmap:
            pmap[name] = prompt_parameter(name, ps.text(name))
    llms, owned = _resolve_llms(llm, roles)
    try:
        if agent == "direct":
            d = _Direct(llms["coder"], ps, cfg, time_limit=tb.seconds, deadline=deadline)
            return await _run_direct(d, problem_node, pmap["coder_system"])
        run = TeamRun(
            text,
            llms,
            ps,
            tb,
            cfg,
            max(n_samples, 1),
            deadline=deadline,
            problem_node=problem_node,
            params=pmap,
        )
        return await _run_team(run)
    finally:
        for c in owned:
            with contextlib.suppress(Exception):
                c.close()


async def asolve(
    problem_text: str,
    *,
    llm: ChatClient | None = None,
    agent: str = "team",
    budget: int | dict[str, Any] | TeamBudget | None = None,
    samples: int | None = None,
    prompts: str | Path | dict[str, str] | None = None,
    roles: dict[str, Any] | None = None,
    config: TeamConfig | None = None,
    time_limit: float | None = None,
) -> Solution:
    """Solve a word problem without recording a graph; see :func:`solve`."""
    with no_trace():
        out = await run_graph(
            problem_text,
            llm=llm,
            agent=agent,
            budget=budget,
            samples=samples,
            prompts=prompts,
            roles=roles,
            config=config,
            time_limit=time_limit,
        )
    return out.value


async def asolve_graph(
    problem_text: str,
    *,
    llm: ChatClient | None = None,
    agent: str = "team",
    budget: int | dict[str, Any] | TeamBudget | None = None,
    samples: int | None = None,
    prompts: str | Path | dict[str, str] | None = None,
    roles: dict[str, Any] | None = None,
    config: TeamConfig | None = None,
    time_limit: float | None = None,
) -> Any:
    """Solve and record the run: returns the output node (its value is the Solution).

    The graph has a node per role call (plan, formulate, critique, repair, code), per
    deterministic step (build_model, solve, run_code, check), the vote and the decision; the
    prompts the steps use are trainable parameters. Save it with
    :func:`optiforge.trace.save_graph`; ``output.backward(feedback)`` reaches each prompt.
    """
    with tracing(True):
        return await run_graph(
            problem_text,
            llm=llm,
            agent=agent,
            budget=budget,
            samples=samples,
            prompts=prompts,
            roles=roles,
            config=config,
            time_limit=time_limit,
        )


def solve(
    problem_text: str,
    *,
    llm: ChatClient | None = None,
    agent: str = "team",
    budget: int | dict[str, Any] | TeamBudget | None = None,
    samples: int | None = None,
    prompts: str | Path | dict[str, str] | None = None,
    roles: dict[str, Any] | None = None,
    config: TeamConfig | None = None,
    time_limit: float | None = None,
) -> Solution:
    """Turn a word problem into a solved optimization model.

    ``agent="team"`` runs the modelling team (formulator, planner, coder, critic under a
    UCB scheduler, with self-consistency voting); ``agent="direct"`` is the single-shot
    baseline (one prompt -> Pyomo code -> one sandbox run).

    ``llm``: an :class:`optiforge.llm.LLM` (or any client with ``achat``); None builds one
    from :func:`optiforge.config.load_settings` with :func:`optiforge.llm.serving.connect`,
    which (no base_url set) starts the embedded llama.cpp server for the model on first
    use and keeps it until the process exits. ``roles`` maps role names (formulator,
    planner, coder, critic) to their own clients. ``budget``: LLM samples per problem
    (int), a dict or :class:`TeamBudget`. ``samples``: formulations in the first round (1 greedy + the rest
    sampled at T=0.7). ``prompts``: tuned prompt values (a JSON file from ``optiforge
    tune`` or a dict). ``time_limit``: seconds from this call (also ``TeamBudget.seconds``;
    the smaller wins): the run starts no step whose measured cost does not fit the time
    left, and at the limit cancels the requests in flight and returns its best answer so
    far; ``Solution.stopped`` says when either happened (``"time_left"``, ``"deadline"``).
    The direct agent keeps the same limit. Returns a
    :class:`~optiforge.agents.solution.Solution`; failures are
    reported in ``failure_class``/``error``, bad arguments raise :class:`TeamError`.
    No graph is recorded (see :func:`solve_graph`).
    """
    return run_sync(
        asolve(
            problem_text,
            llm=llm,
            agent=agent,
            budget=budget,
            samples=samples,
            prompts=prompts,
            roles=roles,
            config=config,
            time_limit=time_limit,
        )
    )


def solve_graph(
    problem_text: str,
    *,
    llm: ChatClient | None = None,
    agent: str = "team",
    budget: int | dict[str, Any] | TeamBudget | None = None,
    samples: int | None = None,
    prompts: str | Path | dict[str, str] | None = None,
    roles: dict[str, Any] | None = None,
    config: TeamConfig | None = None,
    time_limit: float | None = None,
) -> Any:
    """:func:`solve` that records the run; returns the output node (see :func:`asolve_graph`)."""
    return run_sync(
        asolve_graph(
            problem_text,
            llm=llm,
            agent=agent,
            budget=budget,
            samples=samples,
            prompts=prompts,
            roles=roles,
            config=config,
            time_limit=time_limit,
        )
    )
