"""Stream problems through an agent with bounded concurrency; journal, score, resume.

The agent is any async function ``(Problem) -> Solution``; the CLI wires
:func:`optiforge.agents.asolve` with an LLM, tests inject fakes. Every finished problem
is appended to ``DIR/results.jsonl`` (fsync per line) before the next is reported, so a
kill loses at most the problems in flight; ``resume=True`` skips every finished id.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from optiforge.datasets.problem import Problem
from optiforge.evals.journal import Journal, read_journal, read_meta, write_meta
from optiforge.evals.records import (
    INFRA_FAILURES,
    EvalError,
    ResultRecord,
    RunMeta,
    Session,
    StepSummary,
    portable_text,
)
from optiforge.evals.scoring import DEFAULT_RULE, score_all

#: The per-problem counters copied from the client's usage scope into a journal line.
USAGE_FIELDS = (
    "calls",
    "prompt_tokens",
    "completion_tokens",
    "failed_calls",
    "cached_calls",
    "cache_hits",
    "cached_prompt_tokens",
    "cached_completion_tokens",
)

AgentFn = Callable[[Problem], Awaitable[Any]]


def cancel_grace(timeout: float) -> float:
    """How long after a problem's deadline the runner cancels an agent that has not
    stopped: 5% of the time limit, at least 1 s and at most 5 s. An agent that knows its
    deadline (the team and direct agents with ``AgentSpec.time_limit``) stops by itself
    and answers; this is the safety net for one that does not."""
    return min(5.0, max(1.0, 0.05 * timeout))


_INFEASIBLE_STATUSES = {"infeasible", "unbounded", "infeasible_or_unbounded"}


class ProgressSink(Protocol):
    """Receives progress events (the rich bar, or a test probe)."""

    def start(self, total: int, done: int, correct: int, scored: int) -> None: ...
    def update(self, record: ResultRecord) -> None: ...
    def stop(self) -> None: ...


@dataclass
class EvalOutcome:
    """What one call of :func:`run_eval` did."""

    out_dir: Path
    planned: int
    skipped_done: int
    finished: int
    summary: dict[str, Any]


def _status_value(result: Any) -> str | None:
    if result is None:
        return None
    status = getattr(result, "status", None)
    return getattr(status, "value", status)


def _prediction(solution: Any) -> tuple[float | None, str]:
    answer = getattr(solution, "answer", None)
    if answer is not None:
        try:
            return float(answer), "value"
        except (TypeError, ValueError):
            return None, "none"
    status = _status_value(getattr(solution, "result", None))
    if status in _INFEASIBLE_STATUSES or getattr(solution, "failure_class", None) == "infeasible":
        return None, "infeasible"
    return None, "none"


def record_from_solution(
    problem: Problem,
    solution: Any,
    *,
    elapsed_s: float,
    started_at: float,
    session: int,
    samples: int | None = None,
    time_limit_s: float | None = None,
) -> ResultRecord:
    """Score a :class:`~optiforge.agents.solution.Solution` and turn it into a journal line."""
    pred, pred_kind = _prediction(solution)
    result = getattr(solution, "result", None)
    status = _status_value(result)
    correct = score_all(pred, pred_kind, problem.answer, problem.answer_kind)  # type: ignore[arg-type]
    agent_class = getattr(solution, "failure_class", None)
    code = getattr(solution, "code", None)
    executed = result is not None and status not in (None, "error") and agent_class != "code_error"
    failure = None
    ok = correct.get(DEFAULT_RULE)
    if ok is False:
        if agent_class:
            failure = agent_class
        elif pred_kind == "infeasible":
            failure = "infeasible"
        elif pred_kind == "none":
            failure = "code_error" if (code and not executed) else "no_answer"
        else:
            failure = "formulation"
    elif ok is None and agent_class in INFRA_FAILURES | {"timeout"}:
        failure = agent_class
    stopped = getattr(solution, "stopped", None)
    steps = []
    for st in getattr(solution, "steps", None) or []:
        steps.append(
            StepSummary(
                role=str(getattr(st, "role", "")),
                plan_id=getattr(st, "plan_id", None),
                ok=bool(getattr(st, "ok", True)),
                summary=portable_text(str(getattr(st, "summary", "")))[:500],
                calls=int(getattr(st, "calls", 0) or 0),
                tokens=int(getattr(st, "prompt_tokens", 0) or 0)
                + int(getattr(st, "completion_tokens", 0) or 0),
                elapsed_s=float(getattr(st, "elapsed_s", 0.0) or 0.0),
            )
        )
    return ResultRecord(
        **_problem_fields(problem),
        prediction=pred,
        prediction_kind=pred_kind,
        solve_status=status,
        correct=correct,
        executed=executed,
        failure_class=failure,
        agent_failure_class=agent_class,
        error=portable_text(getattr(solution, "error", None)),
        calls=int(getattr(solution, "calls", 0) or 0),
        prompt_tokens=int(getattr(solution, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(solution, "completion_tokens", 0) or 0),
        elapsed_s=round(elapsed_s, 4),
        time_limit_s=time_limit_s,
        stopped=str(stopped) if stopped else None,
        levers=[str(x) for x in getattr(solution, "levers", None) or []],
        agent=str(getattr(solution, "agent", "") or ""),
        samples=samples,
        session=session,
        started_at=started_at,
        finished_at=time.time(),
        formulation=getattr(solution, "formulation", None),
        formulation_markdown=getattr(solution, "formulation_markdown", None),
        code=code,
        solver_log=portable_text(getattr(result, "log_tail", None)),
        solver_message=portable_text(getattr(result, "message", None)),
        steps=steps,
    )


def _problem_fields(problem: Problem) -> dict[str, Any]:
    """The fields every journal record copies from its problem."""
    return {
        "id": problem.id,
        "dataset": problem.dataset,
        "category": problem.category,
        "text": problem.text,
        "answer_field": problem.answer_field,
        "gt": problem.answer,
        "gt_kind": problem.answer_kind,
    }


def _failure_record(
    problem: Problem,
    failure_class: str,
    error: str,
    *,
    elapsed_s: float,
    started_at: float,
    session: int,
    agent: str,
    samples: int | None,
    time_limit_s: float | None = None,
    stopped: str | None = None,
) -> ResultRecord:
    correct = score_all(None, "none", problem.answer, problem.answer_kind)  # type: ignore[arg-type]
    return ResultRecord(
        **_problem_fields(problem),
        correct=correct,
        failure_class=failure_class,
        agent_failure_class=failure_class,
        error=portable_text(error),
        elapsed_s=round(elapsed_s, 4),
        time_limit_s=time_limit_s,
        stopped=stopped,
        agent=agent,
        samples=samples,
        session=session,
        started_at=started_at,
        finished_at=time.time(),
    )


def apply_usage(record: ResultRecord, scope: Any, *, timed_out: bool = False) -> None:
    """Put what the LLM client counted for this problem into its journal line (``scope``:
    an :class:`optiforge.llm.usage.UsageScope`).

    The client's count replaces the agent's own when the problem made any request (the
    agent cannot see failed re-asks, cached replies or calls cut off by a timeout). A
    problem the runner cancelled (``timed_out``) gets one step per tag from the scope, so
    its calls and their time stay visible."""
    used = scope.snapshot()
    if not (used.calls or used.failed_calls or used.cached_calls):
        return
    for name in USAGE_FIELDS:
        setattr(record, name, getattr(used, name))
    record.usage_source = "client"
    record.usage_by_tag = {
        tag: {k: v for k, v in u.model_dump().items() if v} for tag, u in used.by_tag.items()
    }
    record.replies = scope.replies
    if timed_out and not record.steps:
        record.steps = [
            StepSummary(
                role=tag,
                ok=False,
                summary=f"cut off by the problem timeout after {u.calls} answered and "
                f"{u.failed_calls} unanswered request(s)",
                calls=u.calls,
                tokens=u.tokens,
                elapsed_s=round(u.wall_time_s, 3),
            )
            for tag, u in used.by_tag.items()
        ]


def _classify_exception(exc: BaseException) -> str:
    mod = type(exc).__module__ or ""
    name = type(exc).__name__
    if name == "BudgetExceeded":
        return "budget"
    if mod.startswith(("optiforge.llm", "openai", "httpx", "httpcore", "litellm")):
        return "llm_error"
    if "Connection" in name or isinstance(exc, ConnectionError):
        return "llm_error"
    return "agent_crash"


def _check_identity(old: RunMeta, new: RunMeta, out_dir: Path) -> None:
    def same(k: str) -> bool:
        a, b = getattr(old, k), getattr(new, k)
        if k == "levers":  # the levers turned on (a lever added since is off in old runs)
            return {n for n, on in (a or {}).items() if on} == {
                n for n, on in (b or {}).items() if on
            }
        if k == "experience":  # the same library, wherever its file is now
            return (a or {}).get("sha256") == (b or {}).get("sha256")
        # A run.json written before the prompts were recorded does not say which it used.
        return a == b or (k == "prompts" and k not in old.model_fields_set)

    diffs = [
        f"{k}: {getattr(old, k)!r} in the run, {getattr(new, k)!r} now"
        for k in RunMeta.IDENTITY
        if not same(k)
    ]
    if diffs:
        raise EvalError(
            f"{out_dir} holds a different run ({'; '.join(diffs)}). Resume with the same "
            "settings, or choose a new --out directory."
        )


async def run_eval(
    problems: Sequence[Problem],
    agent_fn: AgentFn | None,
    out_dir: str | Path,
    *,
    meta: RunMeta | None = None,
    concurrency: int = 4,
    resume: bool = False,
    retry_failed: bool = False,
    problem_timeout: float | None = None,
    grace: float | None = None,
    max_consecutive_failures: int | None = None,
    progress: ProgressSink | bool = False,
    write_report: bool = True,
    usage: Callable[[], dict[str, Any] | None] | None = None,
    executor: Any = None,
    usage_scope: Callable[[], AbstractContextManager[Any]] | None = None,
    provenance: dict[str, Any] | None = None,
) -> EvalOutcome:
    """Run ``agent_fn`` over ``problems`` and journal each result in ``out_dir``.

    - ``concurrency``: problems in flight at once (the LLM client bounds its own requests).
    - ``resume``: continue a run in ``out_dir``, skipping finished ids; without it, an
      ``out_dir`` that already holds results is an error (nothing is overwritten).
    - ``retry_failed``: with ``resume``, also re-run problems whose last record failed for
      infrastructure reasons (``llm_error``, ``agent_crash``).
    - ``problem_timeout``: seconds per problem: the agent's deadline. Give the agent the
      same limit (``AgentSpec.time_limit``; ``optiforge eval --timeout`` does): it then
      stops by itself and answers with its best so far (the line's ``stopped`` says so;
      without an answer its failure class is ``timeout``). An agent still running
      ``grace`` seconds later (default :func:`cancel_grace`) is cancelled: failure class
      ``timeout``, ``stopped="cancelled"``; with ``usage_scope`` its calls, tokens and
      their time are still journalled.
    - ``max_consecutive_failures``: stop the run (:class:`EvalError`) after this many
      infrastructure failures in a row, e.g. a model server that went away. Default
      ``max(5, 2 * concurrency)``; 0 disables.
    - ``progress``: True for a rich progress bar on stderr, or a :class:`ProgressSink`.
    - ``usage``: called at the end of the session; its dict (e.g. ``llm.usage``) goes to
      ``run.json``.
    - ``executor``: where problems run (:mod:`optiforge.evals.executor`: local or Ray);
      when given, ``agent_fn`` may be None and each problem is ``executor.run(problem)``.
    - ``usage_scope``: :func:`optiforge.llm.usage.usage_scope` (the CLI passes it): each
      problem runs inside one, so its journal line holds what the LLM client counted for
      it alone (timeouts, failed re-asks and cached replies included) and the lines add up
      to ``usage``. Without it, lines keep the agent's own counts.
    - ``provenance``: what else produced the run (e.g.
      :func:`~optiforge.evals.provenance.llm_provenance`), stored in the session next to
      the code provenance the runner collects itself.

    Writes ``results.jsonl``, ``run.json`` and (``write_report``) ``summary.json``,
    ``report.md``, ``report.html``. Cancelling the task (Ctrl-C under ``asyncio.run``)
    leaves every finished line on disk and marks the session interrupted.
    """
    out = Path(out_dir)
    grace, agent_fn = _checked_args(
        problems, agent_fn, executor, concurrency, problem_timeout, grace
    )
    if meta is None:
        meta = RunMeta(dataset=problems[0].dataset if problems else "")
    if not meta.answer_field and problems:
        meta.answer_field = problems[0].answer_field
    journal = Journal(out)
    prior = _prior_run(out, journal, meta, problems, resume=resume, retry_failed=retry_failed)
    todo = [p for p in problems if p.id not in prior.done]
    session, meta = _new_session(meta, prior, problems, todo, problem_timeout, grace, provenance)
    journal.open()
    write_meta(out, meta)

    sink = _progress_sink(progress, meta.dataset)
    limit = max_consecutive_failures
    if limit is None:
        limit = max(5, 2 * concurrency)
    attempts = _Attempts(agent_fn, session.index, meta, problem_timeout, grace or 0.0, usage_scope)
    schedule = _Schedule(todo, attempts, journal, sink, limit)
    status = "crashed"
    try:
        if sink:
            _start_progress(sink, problems, prior.done)
        await schedule.run(min(concurrency, len(todo)))
        status = "aborted" if schedule.abort is not None else "completed"
    except asyncio.CancelledError:
        status = "interrupted"
        raise
    finally:
        journal.close()
        if sink:
            sink.stop()
        _end_session(session, status, schedule.finished, usage, attempts.in_flight)
        write_meta(out, meta)
        summary: dict[str, Any] = {}
        if write_report:
            from optiforge.evals.report import write_reports

            summary = write_reports(out)
    if schedule.abort is not None:
        raise _aborted(schedule.abort, limit, journal.path)
    return EvalOutcome(
        out_dir=out,
        planned=len(problems),
        skipped_done=len(problems) - len(todo),
        finished=schedule.finished,
        summary=summary,
    )


def _checked_args(
    problems: Sequence[Problem],
    agent_fn: AgentFn | None,
    executor: Any,
    concurrency: int,
    problem_timeout: float | None,
    grace: float | None,
) -> tuple[float | None, AgentFn]:
    """Reject bad arguments before anything touches disk; return the cancel grace (the
    default when a timeout is set) and the function each problem is dispatched to."""
    if concurrency < 1:
        raise EvalError(f"concurrency must be >= 1, got {concurrency}")
    if problem_timeout is not None and problem_timeout < 0:
        raise EvalError(
            f"the problem timeout must be >= 0 seconds (0: none), got {problem_timeout:g}"
        )
    if grace is not None and grace < 0:
        raise EvalError(f"the cancel grace must be >= 0 seconds, got {grace:g}")
    if problem_timeout and grace is None:
        grace = cancel_grace(problem_timeout)
    if executor is not None:
        agent_fn = executor.run  # the dispatch point: this process, or a Ray worker
    if agent_fn is None:
        raise EvalError("run_eval needs an agent function or an executor")
    seen: set[str] = set()
    for p in problems:
        if p.id in seen:
            raise EvalError(f"problem id {p.id!r} appears twice; ids must be unique")
        seen.add(p.id)
    return grace, agent_fn


@dataclass
class _Prior:
    """What earlier sessions in the output directory left: the latest record of every
    finished problem (minus infrastructure failures with ``retry_failed``), their
    sessions (a dead one marked killed), when the run was created and every id planned."""

    done: dict[str, ResultRecord]
    sessions: list[Session]
    created_at: float
    planned_ids: list[str]


def _prior_run(
    out: Path,
    journal: Journal,
    meta: RunMeta,
    problems: Sequence[Problem],
    *,
    resume: bool,
    retry_failed: bool,
) -> _Prior:
    """Read (and on resume, repair) the journal and ``run.json`` of ``out``; refuse to
    overwrite results without ``resume`` and to resume a run with other settings."""
    old_meta = read_meta(out)
    existing = read_journal(journal.path)
    if (existing.records or existing.torn_bytes) and not resume:
        raise EvalError(
            f"{out} already holds {len(existing.records)} results. Pass --resume to continue "
            "that run, or choose a new --out directory."
        )
    if not resume:
        return _Prior({}, [], time.time(), [p.id for p in problems])
    if old_meta is not None:
        _check_identity(old_meta, meta, out)
    done = journal.repair().latest()
    if retry_failed:
        done = {k: r for k, r in done.items() if r.failure_class not in INFRA_FAILURES}
    if old_meta is None:
        return _Prior(done, [], time.time(), [p.id for p in problems])
    sessions = list(old_meta.sessions)
    for old_s in sessions:
        if old_s.status == "running":  # that process died without finishing (kill -9)
            ends = [r.finished_at for r in done.values() if r.session == old_s.index]
            old_s.status = "killed"
            old_s.ended_at = max(ends, default=old_s.started_at)
            old_s.finished = sum(1 for r in done.values() if r.session == old_s.index)
    planned_ids = list(dict.fromkeys([*old_meta.planned_ids, *(p.id for p in problems)]))
    return _Prior(done, sessions, old_meta.created_at, planned_ids)


def _new_session(
    meta: RunMeta,
    prior: _Prior,
    problems: Sequence[Problem],
    todo: Sequence[Problem],
    problem_timeout: float | None,
    grace: float | None,
    provenance: dict[str, Any] | None,
) -> tuple[Session, RunMeta]:
    """This call's session record, and the run header that lists it after the earlier
    ones. The header holds the session object itself: what the run later sets on the
    session is what the final ``run.json`` says."""
    from optiforge import __version__
    from optiforge.evals.provenance import code_provenance

    session = Session(
        index=len(prior.sessions) + 1,
        started_at=time.time(),
        planned=len(problems),
        skipped_done=len(problems) - len(todo),
        provenance={**code_provenance(), **(provenance or {})},
    )
    if problem_timeout:
        session.time_limit_s = problem_timeout
        session.cancel_grace_s = grace
    meta = meta.model_copy(
        update={
            "sessions": [*prior.sessions, session],
            "created_at": prior.created_at,
            "planned_ids": prior.planned_ids,
            "optiforge_version": __version__,
        }
    )
    return session, meta


def _progress_sink(progress: ProgressSink | bool, dataset: str) -> ProgressSink | None:
    if progress is True:
        return RichProgress(label=f"eval {dataset}")
    if progress is False:
        return None
    return progress


def _start_progress(
    sink: ProgressSink, problems: Sequence[Problem], done: dict[str, ResultRecord]
) -> None:
    """Show the progress sink, counting what earlier sessions finished of ``problems``."""
    wanted = {p.id for p in problems}
    earlier = [r for r in done.values() if r.id in wanted]
    scored = [r for r in earlier if r.scored]
    sink.start(
        len(problems),
        len(earlier),
        sum(1 for r in scored if r.correct.get(DEFAULT_RULE)),
        len(scored),
    )


def _aborted(rec: ResultRecord, limit: int, journal_path: Path) -> EvalError:
    """The error a run stopped by ``limit`` infrastructure failures in a row raises."""
    first = (rec.error or "").strip().splitlines()[0] if rec.error else rec.failure_class
    return EvalError(
        f"stopped after {limit} problems in a row failed with {rec.failure_class}: "
        f"{first}. Check that the model server is running and reachable. Finished "
        f"problems are saved in {journal_path}; rerun with --resume --retry-failed."
    )


class _Attempts:
    """Runs one problem: the agent under its deadline and the cancel grace, turned into a
    journal line, with what the LLM client counted for it (``usage_scope``). ``in_flight``
    holds the usage scopes of problems started but not yet journalled."""

    def __init__(
        self,
        agent_fn: AgentFn,
        session: int,
        meta: RunMeta,
        problem_timeout: float | None,
        grace: float,
        usage_scope: Callable[[], AbstractContextManager[Any]] | None,
    ) -> None:
        self.agent_fn = agent_fn
        self.session = session
        self.agent = meta.agent
        self.samples = meta.samples
        self.timeout = problem_timeout
        self.grace = grace
        self.usage_scope = usage_scope
        self.in_flight: dict[str, Any] = {}

    async def run(self, problem: Problem) -> ResultRecord:
        """The journal line for ``problem`` (never raises for the agent's failures)."""
        if self.usage_scope is None:
            return (await self._attempt(problem))[0]
        # Every LLM call the agent makes for this problem (in any task it starts) is
        # counted in this scope, including calls cut off by the timeout below.
        with self.usage_scope() as scope:
            self.in_flight[problem.id] = scope
            record, timed_out = await self._attempt(problem)
        apply_usage(record, scope, timed_out=timed_out)
        return record

    def journalled(self, problem: Problem) -> None:
        """``problem``'s line is on disk: its usage is no longer in flight."""
        self.in_flight.pop(problem.id, None)

    async def _attempt(self, problem: Problem) -> tuple[ResultRecord, bool]:
        """The record, and whether the runner cancelled the agent."""
        started = time.time()
        t0 = time.perf_counter()
        timeout, grace = self.timeout, self.grace
        try:
            if timeout:
                # The agent's own deadline is problem_timeout; this is the safety net.
                solution = await asyncio.wait_for(self.agent_fn(problem), timeout + grace)
            else:
                solution = await self.agent_fn(problem)
        except asyncio.TimeoutError:
            return self._failure(
                problem,
                "timeout",
                f"no result within {timeout:g} s: the agent did not stop at its "
                f"deadline and was cancelled {grace:g} s after it",
                t0,
                started,
                stopped="cancelled",
            ), True
        except Exception as exc:
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
            return self._failure(
                problem,
                _classify_exception(exc),
                f"{type(exc).__name__}: {exc}\n{tb}"[:4000],
                t0,
                started,
            ), False
        return record_from_solution(
            problem,
            solution,
            elapsed_s=time.perf_counter() - t0,
            started_at=started,
            session=self.session,
            samples=self.samples,
            time_limit_s=timeout or None,
        ), False

    def _failure(
        self,
        problem: Problem,
        failure_class: str,
        error: str,
        t0: float,
        started: float,
        stopped: str | None = None,
    ) -> ResultRecord:
        return _failure_record(
            problem,
            failure_class,
            error,
            elapsed_s=time.perf_counter() - t0,
            started_at=started,
            session=self.session,
            agent=self.agent,
            samples=self.samples,
            time_limit_s=self.timeout or None,
            stopped=stopped,
        )


class _Schedule:
    """The scheduling loop: workers take problems from a queue, journal each record as it
    finishes and stop the run after ``limit`` infrastructure failures in a row (0: never);
    ``abort`` is then the record that tripped it."""

    def __init__(
        self,
        todo: Sequence[Problem],
        attempts: _Attempts,
        journal: Journal,
        sink: ProgressSink | None,
        limit: int,
    ) -> None:
        self.queue: asyncio.Queue[Problem] = asyncio.Queue()
        for p in todo:
            self.queue.put_nowait(p)
        self.attempts = attempts
        self.journal = journal
        self.sink = sink
        self.limit = limit
        self.consecutive = 0
        self.finished = 0
        self.abort: ResultRecord | None = None

    async def run(self, workers: int) -> None:
        """Run ``workers`` workers until the queue is empty or the run is stopped."""
        tasks = [asyncio.create_task(self._worker()) for _ in range(workers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for w in tasks:
                w.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _worker(self) -> None:
        while self.abort is None:
            try:
                problem = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            record = await self.attempts.run(problem)
            # Journalled even when the run is being stopped: the problem finished, and
            # its calls must add up. Synchronous append+fsync: no await between, so
            # cancellation cannot split it.
            self.journal.append(record)
            self.attempts.journalled(problem)
            self.finished += 1
            if self.abort is not None:
                return
            if record.failure_class in INFRA_FAILURES or record.agent_failure_class in (
                INFRA_FAILURES
            ):
                self.consecutive += 1
                if self.limit and self.consecutive >= self.limit:
                    self.abort = record
            else:
                self.consecutive = 0
            if self.sink:
                self.sink.update(record)


def _end_session(
    session: Session,
    status: str,
    finished: int,
    usage: Callable[[], dict[str, Any] | None] | None,
    in_flight: dict[str, Any],
) -> None:
    """Close the session record: status, finished count, the client's usage, and what
    problems still in flight (interrupted) had used without a journal line."""
    session.ended_at = time.time()
    session.finished = finished
    session.status = status
    if usage is not None:
        try:
            session.usage = usage()
        except Exception:  # usage is informative only; never lose the run over it
            session.usage = None
    if in_flight:
        lost: dict[str, Any] = {}
        for sc in in_flight.values():
            for k, v in sc.snapshot().model_dump().items():
                if isinstance(v, (int, float)):
                    lost[k] = lost.get(k, 0) + v
        session.usage_unjournalled = {**lost, "problems": sorted(in_flight)}


class RichProgress:
    """A rich progress bar on stderr: done/total, running accuracy and throughput."""

    def __init__(self, label: str = "eval") -> None:
        self.label = label
        self._progress: Any = None
        self._task: Any = None
        self._correct = 0
        self._scored = 0
        self._t0 = 0.0
        self._new = 0
        self._total = 0
        self._done = 0
        self._plain: Any = None
        self._last_line = 0.0

    def _fields(self) -> dict[str, str]:
        acc = (
            f"{self._correct}/{self._scored} = {100 * self._correct / self._scored:.1f}%"
            if (self._scored)
            else "-"
        )
        dt = max(time.perf_counter() - self._t0, 1e-9)
        rate = self._new / dt * 60
        return {"acc": acc, "rate": f"{rate:.1f}/min"}

    def start(self, total: int, done: int, correct: int, scored: int) -> None:
        """Show the bar; ``done`` problems were finished by earlier sessions."""
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._correct, self._scored = correct, scored
        self._t0 = time.perf_counter()
        self._total, self._done = total, done
        console = Console(stderr=True)
        if not console.is_terminal:
            # Logs (CI, nohup): a plain line now and then instead of a live bar.
            self._plain = console
            self._last_line = 0.0
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("acc {task.fields[acc]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(
            self.label, total=total, completed=done, **self._fields()
        )

    def update(self, record: ResultRecord) -> None:
        """Advance by one finished problem."""
        self._new += 1
        if record.scored:
            self._scored += 1
            if record.correct.get(DEFAULT_RULE):
                self._correct += 1
        self._done += 1
        if self._progress is not None:
            self._progress.update(self._task, advance=1, **self._fields())
        elif self._plain is not None:
            now = time.perf_counter()
            if now - self._last_line >= 30 or self._done == self._total:
                self._last_line = now
                f = self._fields()
                self._plain.print(
                    f"{self.label}: {self._done}/{self._total} acc {f['acc']} {f['rate']}",
                    highlight=False,
                )

    def stop(self) -> None:
        """Remove the live display."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
