"""The steps of one team run as bundled trace operations, and the attempts they make.

Every role call is its own ``@bundle`` op whose parents are the values it reads, among them
the role's system prompt (a :class:`~optiforge.trace.ParameterNode`):

- ``plan(problem, planner_system, ...)``: the planner model's advice (only with
  ``llm_planner``);
- ``recall(problem)``: the solved training problems of the experience library that the
  formulator sees as few-shot examples (only with ``experience``; then ``formulate`` and
  ``repair`` read it too, as ``examples``);
- ``formulate(problem, formulator_system, settings)``: a draft formulation (with the
  ``hints`` lever, also ``hints``: the error-class hints chosen for the problem, the value
  of the ``hints`` op in :mod:`.hints`; ``repair`` reads them too);
- ``critique(problem, critic_system, findings)``: the critic model's review of an attempt;
- ``repair(problem, formulator_system, settings, draft, findings, critique)``: a draft that
  fixes an earlier one;
- ``code(problem, coder_system, settings, previous, findings)``: a Pyomo program (or a
  repair of the previous one).

Their values are :class:`~optiforge.agents.team.roles.RoleReply` objects. The deterministic
steps are ops too: ``build_model(draft, problem)`` -> the :class:`ModelIR` (or why it could
not be built), ``solve(model)`` / ``run_code(code)`` -> the :class:`SolveResult`, and
``check(problem, model, result)`` -> the critic's :class:`Findings`; ``flip_sense`` is the
critic's fix of an objective sense that contradicts the text. So feedback given to
the run's output reaches each prompt through the steps it produced.

Ops are methods of :class:`TeamRun` and :class:`AttemptSteps` (the instance is not a graph
node); when nothing is recording (``optiforge.trace.no_trace``), the ops still run but
return parentless nodes, so no graph is kept.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from optiforge.agents.solution import StepRecord
from optiforge.agents.team import checks as chk
from optiforge.agents.team import roles
from optiforge.agents.team.directions import count_flips
from optiforge.agents.team.formulation import ir_signature, normalize_draft
from optiforge.agents.team.grounded import grounded_issues
from optiforge.agents.team.state import Attempt, Findings, RunState
from optiforge.trace import bundle, node

_DOCS = {
    "plan": "The planner model reads the problem with the planner_system prompt and says "
    "whether the decisions are integer and the model nonlinear.",
    "formulate": "The formulator model turns the problem into a JSON formulation (variables "
    "with domains, objective, constraints) following the formulator_system prompt.",
    "repair": "The formulator model rewrites an earlier draft, following the "
    "formulator_system prompt, given the critic's findings and critique of it.",
    "critique": "The critic model reviews a checked formulation and its solver result "
    "following the critic_system prompt: verdict, problems, fixes.",
    "code": "The coder model writes a Pyomo program that ends with report(model=m, "
    "results=res), following the coder_system prompt (or repairs its previous program "
    "given what went wrong).",
    "build_model": "Normalizes a draft into a model IR (units decide integrality, constraint "
    "directions are matched to the text) and validates it.",
    "solve": "Solves the model IR with HiGHS (SCIP for nonlinear models).",
    "flip_sense": "The critic's deterministic fix when the objective sense contradicts the "
    "text: the model is solved again with the other sense.",
    "run_code": "Runs the program in the sandbox and reads the solver result it reported.",
    "recall": "Retrieves the solved training problems most similar to this one (BM25 over "
    "the texts of the experience library) whose worked formulations and insights fit the "
    "formulator's prompt; they become its few-shot examples.",
    "check": "The critic's deterministic checks of a solved (or failed) attempt: sense, "
    "integrality, infeasible or unbounded, invented numbers, unused variables.",
}


class AttemptSteps:
    """The deterministic steps of one attempt, as ops bound to it."""

    def __init__(self, run: TeamRun, att: Attempt) -> None:
        self.run = run
        self.att = att

    @bundle(name="build_model", doc=_DOCS["build_model"])
    def build_model(self, draft: roles.RoleReply, problem: str) -> Any:
        """The draft as a validated ModelIR, or the reason it could not be built."""
        from optiforge.solvers import ModelIR
        from optiforge.solvers.errors import IRValidationError

        att = self.att
        if draft.error or not draft.values:
            att.error = draft.error or "no formulation"
            return f"no formulation: {att.error}"
        att.draft_text = roles.draft_json(draft.values[0])
        att.normalized = normalize_draft(draft.values[0], problem)
        att.ir = att.normalized.ir
        try:
            att.model = ModelIR.from_json(att.ir)
            return att.model
        except IRValidationError as exc:
            att.error = str(exc)
            return f"not built: {att.error}"

    @bundle(name="solve", doc=_DOCS["solve"])
    async def solve(self, model: Any) -> Any:
        """Solve the model; the SolveResult, or None when it could not be built or solved."""
        from optiforge.solvers import solve_ir
        from optiforge.solvers.errors import IRValidationError, SolverError

        att, run = self.att, self.run
        if att.error is None:
            try:
                run.solver_runs += 1
                att.result = await asyncio.to_thread(solve_ir, model, time_limit=run.solver_limit())
            except (SolverError, IRValidationError) as exc:
                att.error = str(exc)
            except Exception as exc:  # a solver crash must not end the run
                att.error = f"{type(exc).__name__}: {exc}"
        return att.result

    @bundle(name="flip_sense", doc=_DOCS["flip_sense"])
    async def flip_sense(self, model: Any, findings: Findings) -> Any:
        """Solve the model with the other objective sense; its SolveResult, or None."""
        from optiforge.solvers import ModelIR, solve_ir

        att, run = self.att, self.run
        flipped = json.loads(json.dumps(att.ir))
        want = flipped["objective"]["sense"]
        flipped["objective"]["sense"] = "minimize" if want == "maximize" else "maximize"
        try:
            run.solver_runs += 1
            new_model = ModelIR.from_json(flipped)
            res = await asyncio.to_thread(solve_ir, new_model, time_limit=run.solver_limit())
        except Exception:
            return None
        att.ir, att.model, att.result, att.flipped = flipped, new_model, res, True
        if att.normalized is not None:
            att.normalized.notes.append("critic flipped the objective sense to match the text")
        return res

    async def relaxed_objective(self) -> None:
        """Integrality that rests on the model's word alone: note what relaxing would give."""
        from optiforge.solvers import ModelIR, solve_ir

        att, run = self.att, self.run
        if (
            att.result is not None
            and att.result.ok
            and att.normalized is not None
            and att.normalized.integrality_unclear
            and any(v.get("domain") == "integer" for v in att.ir["variables"])
            and run.solver_runs < run.budget.solver_runs
        ):
            try:
                run.solver_runs += 1
                relaxed = await asyncio.to_thread(
                    solve_ir,
                    ModelIR.from_json(att.ir),
                    relax_integrality=True,
                    time_limit=run.solver_limit(),
                )
                if relaxed.ok:
                    att.alt_relaxed = relaxed.objective
            except Exception:
                pass

    @bundle(name="check", doc=_DOCS["check"])
    def check(self, problem: str, model: Any, result: Any) -> Findings:
        """The critic's deterministic checks of the attempt as it stands."""
        att = self.att
        if att.ir is None:  # the draft itself failed
            att.issues = chk.check_solution(problem, {}, None, error=att.error)
            att.verdict = "wrong"
            return att.findings()
        att.issues = chk.check_solution(
            problem, att.ir, att.result, error=None if att.flipped else att.error
        )
        if self.run.config.grounded_critique:
            att.issues += grounded_issues(problem, att.ir, att.result)
        att.issues += att.extra_issues
        att.verdict = chk.verdict(att.issues)
        return att.findings()

    @bundle(name="run_code", doc=_DOCS["run_code"])
    async def run_code(self, code: roles.RoleReply) -> Any:
        """Run the program in the sandbox; the SolveResult it reported, or None."""
        from optiforge.config import load_settings
        from optiforge.solvers import arun_sandboxed, sandbox_outcome

        att, run = self.att, self.run
        run.solver_runs += 1
        sb = await arun_sandboxed(att.code, timeout=run.sandbox_limit(), settings=load_settings)
        att.sandbox = sb
        att.result, att.error = sandbox_outcome(sb)
        return att.result

    @bundle(name="check", doc=_DOCS["check"])
    def check_code(self, problem: str, code: Any, result: Any) -> Findings:
        """The deterministic checks that apply to a program's result."""
        att = self.att
        if att.sandbox is None:  # no program in the reply
            att.verdict = "wrong"
            return att.findings()
        ir_like = {"objective": {"sense": chk.implied_sense(problem) or ""}, "variables": []}
        issues = (
            chk.check_solution(problem, ir_like, att.result, error=att.error)
            if att.error is None
            else chk.check_solution(problem, {}, None, error=att.error)
        )
        att.issues = [i for i in issues if i.check not in ("no_constraints", "sense")]
        att.verdict = chk.verdict(att.issues)
        return att.findings()


class TeamRun(RunState):
    """One team run: the role ops, and the attempts they make (IR formulations, programs)."""

    def __init__(self, *args: Any, problem_node: Any, params: dict[str, Any], **kw: Any):
        super().__init__(*args, **kw)
        #: The problem text as the graph's input node.
        self.problem_node = problem_node
        #: Prompt name -> ParameterNode (the prompts the run's steps may use).
        self.params = params
        #: The experience library (lever "experience"), loaded before any model call so a
        #: missing or malformed one fails at once; and the run's ``recall`` node.
        self.library: Any = None
        self.recall_node: Any = None
        if self.config.experience:
            from optiforge.agents.team.experience import load_library

            self.library = load_library(self.config.experience_library)

    def param(self, name: str) -> Any:
        """The prompt parameter ``name`` (a node holding the text the role uses)."""
        p = self.params.get(name)
        if p is None:  # a prompt that is not trainable in this run: a plain input
            p = self.params[name] = node(self.prompts.text(name), name=name)
        return p

    async def ask(self, role: str, plan: str | None, call: Any) -> roles.RoleReply:
        """Await one role call; a call cancelled in flight (the deadline) leaves a step that
        says so, with the time it ran (the client counts the request as failed; the server
        reports no tokens for it)."""
        started = time.perf_counter()
        try:
            return await call
        except asyncio.CancelledError:
            self.steps.append(
                StepRecord(
                    role=role,
                    plan_id=plan,
                    elapsed_s=round(time.perf_counter() - started, 3),
                    ok=False,
                    summary=f"{role} request cancelled in flight at the deadline (no reply)",
                    detail={"cancelled": True},
                )
            )
            raise

    # -- role calls -------------------------------------------------------------------------
    @bundle(name="plan", doc=_DOCS["plan"])
    async def plan(self, problem: str, planner_system: str) -> roles.RoleReply:
        """Ask the planner model for integrality/nonlinearity advice."""
        ps = self.prompts.with_values(planner_system=planner_system)
        return await self.ask("planner", None, roles.plan_advice(self.llms["planner"], ps, problem))

    @bundle(name="recall", doc=_DOCS["recall"])
    def recall(self, problem: str) -> Any:
        """The library's examples for ``problem`` that fit the formulator's prompt."""
        from optiforge.agents.team.experience import example_budget, fit_examples

        hits = self.library.retrieve(problem, self.config.experience_k)
        system = len(self.param("formulator_system").value)
        if self.hints_node is not None:  # the hints lever lengthens the system message
            system += len(self.hints_node.value.text or "")
        return fit_examples(hits, example_budget(system, len(problem)))

    def examples(self) -> Any:
        """The run's ``recall`` node (retrieved once, on first use), or None with the
        experience lever off. Records what was retrieved; the lever fires when at least one
        example goes into the formulator's prompt."""
        if self.library is None:
            return None
        if self.recall_node is None:
            started = time.perf_counter()
            self.recall_node = self.recall(self.problem_node)
            got = self.recall_node.value
            if got.examples:
                self.fired("experience")
            self.steps.append(
                StepRecord(
                    role="experience",
                    elapsed_s=round(time.perf_counter() - started, 3),
                    ok=bool(got.examples),
                    summary=(
                        f"{len(got.examples)} solved example(s) for the formulator: "
                        + (", ".join(got.ids) or "none similar")
                        + (
                            f"; left out as too long: {', '.join(got.left_out)}"
                            if got.left_out
                            else ""
                        )
                    ),
                    detail={
                        "ids": got.ids,
                        "scores": got.scores,
                        "insights": got.insights,
                        "left_out": got.left_out,
                        "budget_chars": got.budget_chars,
                    },
                )
            )
        return self.recall_node

    @bundle(name="formulate", doc=_DOCS["formulate"])
    async def formulate(
        self,
        problem: str,
        formulator_system: str,
        settings: dict[str, Any],
        hints: Any = None,
        examples: Any = None,
    ) -> roles.RoleReply:
        """Ask the formulator for one draft (``hints``: the hints step's ``HintChoice``;
        ``examples``: the recalled few-shot examples)."""
        ps = self.prompts.with_values(formulator_system=formulator_system)
        return await self.ask(
            "formulator",
            settings["plan"],
            roles.formulate(
                self.llms["formulator"],
                ps,
                problem,
                temperature=settings["temperature"],
                seed=settings["seed"],
                plan=settings["plan"],
                hints=self.use_hints(hints),
                examples=examples.examples if examples is not None else None,
                insights=examples.insights if examples is not None else None,
            ),
        )

    @bundle(name="critique", doc=_DOCS["critique"])
    async def critique(
        self, problem: str, critic_system: str, findings: Findings
    ) -> roles.RoleReply:
        """Ask the critic model to review one checked attempt."""
        ps = self.prompts.with_values(critic_system=critic_system)
        return await self.ask(
            "critic",
            "repair",
            roles.critique(
                self.llms["critic"],
                ps,
                problem,
                findings.model_text(),
                findings.result_text(),
                chk.format_issues(findings.issues),
                plan="repair",
            ),
        )

    @bundle(name="repair", doc=_DOCS["repair"])
    async def repair_draft(
        self,
        problem: str,
        formulator_system: str,
        settings: dict[str, Any],
        draft: roles.RoleReply,
        findings: Findings,
        critique: roles.RoleReply | None,
        hints: Any = None,
        examples: Any = None,
    ) -> roles.RoleReply:
        """Ask the formulator to fix ``draft`` given the findings and the critique (with the
        draft's ``hints`` and the recalled ``examples``, so the conversation keeps its
        cached prefix)."""
        issues_text = chk.format_issues(findings.issues)
        if critique is not None and critique.values:
            c = critique.values[0]
            extra = [f"- {p}" for p in c.problems] + [f"- Fix: {f}" for f in c.fixes]
            if c.verdict == "wrong" and extra:
                issues_text = (issues_text + "\n" + "\n".join(extra)).strip()
        ps = self.prompts.with_values(formulator_system=formulator_system)
        return await self.ask(
            "formulator",
            "repair",
            roles.formulate(
                self.llms["formulator"],
                ps,
                problem,
                temperature=settings["temperature"],
                seed=settings["seed"],
                previous=roles.draft_json(draft.values[0]),
                issues=issues_text or "- check every constraint against the text",
                plan="repair",
                hints=self.use_hints(hints),
                examples=examples.examples if examples is not None else None,
                insights=examples.insights if examples is not None else None,
            ),
        )

    @bundle(name="code", doc=_DOCS["code"])
    async def code(
        self,
        problem: str,
        coder_system: str,
        settings: dict[str, Any],
        previous: roles.RoleReply | None,
        findings: Findings | None,
    ) -> roles.RoleReply:
        """Ask the coder for a program (a repair of ``previous`` when given)."""
        ps = self.prompts.with_values(coder_system=coder_system)
        repairing = previous is not None and findings is not None
        return await self.ask(
            "coder",
            "code",
            roles.write_code(
                self.llms["coder"],
                ps,
                problem,
                temperature=settings["temperature"],
                seed=settings["seed"],
                hint=settings["hint"],
                previous=previous.values[0] if repairing else None,
                error=(findings.error or findings.result_text()) if repairing else None,
                plan="code",
            ),
        )

    def use_hints(self, hints: Any) -> str | None:
        """The hints block for a formulator call (None without hints); the ``hints`` lever
        fires when a call gets at least one hint."""
        text = hints.text if hints is not None else ""
        if not text:
            return None
        self.fired("hints")
        return text

    def hint_kw(self) -> dict[str, Any]:
        """The hints step's node as the formulator ops' ``hints`` parent (none without)."""
        return {} if self.hints_node is None else {"hints": self.hints_node}

    def example_kw(self) -> dict[str, Any]:
        """The ``recall`` node as the formulator ops' ``examples`` parent (none without the
        experience lever); retrieves on first use (:meth:`examples`)."""
        shots = self.examples()
        return {} if shots is None else {"examples": shots}

    # -- attempts ---------------------------------------------------------------------------
    def add_draft(self, reply_node: Any, plan: str, parent: int | None = None) -> Attempt:
        """A new IR attempt from a formulator reply node (its model is built at once)."""
        att = self.new_attempt(plan, parent)
        self.set_draft(att, reply_node)
        return att

    def new_attempt(self, plan: str, parent: int | None = None) -> Attempt:
        """A new IR attempt, waiting for its draft (:meth:`set_draft`)."""
        att = Attempt(index=len(self.attempts), plan=plan, source="ir", parent=parent)
        self.attempts.append(att)
        return att

    def set_draft(self, att: Attempt, reply_node: Any) -> None:
        """Give ``att`` its formulator reply node and build its model at once."""
        att.draft_node = reply_node
        att.model_node = AttemptSteps(self, att).build_model(reply_node, self.problem_node)

    async def solve_and_check(self, att: Attempt) -> None:
        """Solve an IR attempt, run the critic's checks and record the solver step."""
        steps = AttemptSteps(self, att)
        started = time.perf_counter()
        if att.ir is None:  # the draft failed: only the checks (no solver step)
            att.result_node = node(None, name="result")
            att.findings_node = steps.check(self.problem_node, att.model_node, att.result_node)
            return
        att.result_node = await steps.solve(att.model_node)
        att.findings_node = steps.check(self.problem_node, att.model_node, att.result_node)
        if any(i.action == "flip_sense" for i in att.issues) and (
            self.solver_runs < self.budget.solver_runs
        ):
            flip = await steps.flip_sense(att.model_node, att.findings_node)
            if att.flipped:
                att.result_node = flip
                att.findings_node = steps.check(self.problem_node, flip, flip)
        await steps.relaxed_objective()
        _note_grounded(self, att)
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

    def _settings(self, temperature: float, seed: int | None, plan: str, **more: Any) -> Any:
        """The sampling settings of one call, as an input node named ``settings``."""
        return node({"temperature": temperature, "seed": seed, "plan": plan, **more}, "settings")

    async def formulate_batch(self, plan: str, temps: list[float]) -> list[Attempt]:
        """Ask for ``len(temps)`` formulations at once, solve and check them."""
        system = self.param("formulator_system")
        calls = [
            self.formulate(
                self.problem_node,
                system,
                self._settings(t, None if t == 0 else self.next_seed(), plan),
                **self.hint_kw(),
                **self.example_kw(),
            )
            for t in temps
        ]
        # The attempts take their places (and indices, which break vote ties) in the order
        # asked, greedy first; each is solved and checked as soon as its reply arrives, so
        # a deadline that cancels the slower replies keeps the answers already checked.
        new = [self.new_attempt(plan) for _ in calls]

        async def one(att: Attempt, call: Any) -> None:
            try:
                reply = await call
            except asyncio.CancelledError:
                att.error = "cancelled at the deadline before its reply arrived"
                raise
            self.record(reply.value)
            self.set_draft(att, reply)
            await self.solve_and_check(att)
            if att.ir is not None:
                self.signatures.add(ir_signature(att.ir))

        await asyncio.gather(*(one(a, c) for a, c in zip(new, calls, strict=True)))
        return new

    async def repair(self, target: Attempt) -> Attempt:
        """Critic feedback (deterministic checks + LLM critique) -> formulator repair."""
        target.repaired = True
        critique = None
        if self.config.llm_critic and self.can_sample(2):
            critique = await self.critique(
                self.problem_node, self.param("critic_system"), target.findings_node
            )
            self.record(critique.value)
        reply = await self.repair_draft(
            self.problem_node,
            self.param("formulator_system"),
            self._settings(self.config.temperature, self.next_seed(), "repair"),
            target.draft_node,
            target.findings_node,
            critique if critique is not None else node(None, name="no_critique"),
            **self.hint_kw(),
            **self.example_kw(),
        )
        self.record(reply.value)
        att = self.add_draft(reply, "repair", parent=target.index)
        await self.solve_and_check(att)
        return att

    async def code_pull(self) -> Attempt:
        """Write (or repair) a Pyomo program and run it in the sandbox."""
        prev = self.code_attempt
        hint = ""
        if self.nonlinear_hint:
            hint = "(The model may be nonlinear: products or powers of variables are allowed.)\n"
        repairing = prev is not None and prev.code is not None and prev.value is None
        settings = self._settings(
            self.config.temperature if prev is not None else 0.0,
            self.next_seed() if prev is not None else None,
            "code",
            hint=hint,
        )
        reply = await self.code(
            self.problem_node,
            self.param("coder_system"),
            settings,
            prev.draft_node if repairing and prev is not None else node(None, "no_program"),
            prev.findings_node if repairing and prev is not None else node(None, "no_findings"),
        )
        self.record(reply.value)
        att = Attempt(
            index=len(self.attempts),
            plan="code",
            source="code",
            parent=prev.index if repairing and prev is not None else None,
        )
        self.attempts.append(att)
        self.code_attempt = att
        att.draft_node = reply
        code = reply.value.values[0] if reply.value.values else None
        att.code = code
        steps = AttemptSteps(self, att)
        if not code:
            att.error = reply.value.error or "the reply contained no Python code block"
            att.result_node = node(None, name="result")
            att.findings_node = steps.check_code(self.problem_node, reply, att.result_node)
            return att
        started = time.perf_counter()
        att.result_node = await steps.run_code(reply)
        att.findings_node = steps.check_code(self.problem_node, reply, att.result_node)
        sb = att.sandbox
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


def _fix_summary(att: Attempt) -> str:
    """The deterministic fixes of an attempt, in a few words for the step summary."""
    flipped = count_flips(att.normalized.notes) if att.normalized else 0
    return f"; flipped {flipped} constraint(s) to match the text" if flipped else ""


def _note_grounded(run: TeamRun, att: Attempt) -> None:
    """Record the solver-grounded findings of ``att`` (``grounded_critique``): a critic
    step that lists them, and the lever as fired (it added a finding)."""
    found = [i for i in att.issues if i.check.startswith("grounded_")]
    if not found:
        return
    run.fired("grounded_critique")
    run.steps.append(
        StepRecord(
            role="critic",
            plan_id=att.plan,
            summary=f"grounded critique of attempt {att.index}: {found[0].message[:200]}"
            + (f" (+{len(found) - 1} more)" if len(found) > 1 else ""),
            detail={"attempt": att.index, "grounded": [i.model_dump() for i in found]},
        )
    )
