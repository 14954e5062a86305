"""Tuning the team's prompts on training problems, graded exactly as ``optiforge eval`` grades.

- :func:`select_training` loads the training problems and keeps them apart from the shipped
  eval samples (an NL4Opt copy inside OptiBench counts as the same problem).
- :class:`TeamJudge` scores one run with :func:`optiforge.evals.runner.record_from_solution`
  (the rule, answer kinds and answer variant that ``eval`` reports) and writes the feedback
  the optimizer reads: the solver's status and objective, the critic's findings, and whether
  the answer matched together with the expected answer. It refuses any problem of a held-out
  sample (every shipped sample but the ``*-train``/``*-val`` splits: ``*-fresh60``,
  ``*-readme40``, ...): an expected answer of a test problem can never reach an optimizer.
- :func:`run_tune` is the whole ``optiforge tune`` run: split, module, optimizer
  (``gepa``, ``optoprime``, ``opro``, ``textgrad``), training with a state file that a rerun
  resumes, and the tuned prompts saved for ``--prompts``.
- With ``executor="ray"`` (GEPA only), GEPA's evaluations that record no graph (each
  child's minibatch, every validation set, merges) run as Ray tasks through
  :class:`optiforge.evals.executor.RayExecutor`, as ``optiforge eval --executor ray`` runs
  problems: a worker builds the same agent from an
  :class:`~optiforge.agents.spec.AgentSpec` and solves the problem with the candidate's
  prompts (:func:`remote_run`), and :class:`TeamJudge` grades the returned Solution as it
  grades a local one. The parent's traced minibatch, which the reflection reads, runs here.
  Ray is imported only then.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from optiforge.agents.optim.errors import OptimizerError
from optiforge.datasets import Problem, load_dataset
from optiforge.errors import OptiforgeError
from optiforge.evals.scoring import DEFAULT_RULE, RULES
from optiforge.fileio import write_text_atomic

#: Optimizers ``optiforge tune --optimizer`` accepts.
OPTIMIZERS = ("gepa", "optoprime", "opro", "textgrad")
#: Where ``optiforge tune --executor`` runs GEPA's unrecorded evaluations.
EXECUTORS = ("local", "ray")
#: Shipped samples that are training splits (``nl4opt-tune-train``, ...); every other shipped
#: sample (``*-fresh60``, ``*-readme40``, ``*-test``, ...) is held out: its expected answers
#: never reach an optimizer.
TRAINING_SAMPLE_SUFFIXES = ("-train", "-val")


class TuneError(OptiforgeError):
    """A tuning run cannot start: bad options, a leak of eval problems, too few problems."""


class HeldOutProblemError(TuneError):
    """Feedback with an expected answer was requested for a problem of a test sample."""


class TuneWorkerError(TuneError, OptimizerError):
    """An evaluation's Ray worker died on every allowed attempt. It stops the tune (an
    :class:`OptimizerError` is never turned into a score): scoring the candidate 0 there
    would mislead the search. The state file keeps every finished iteration; rerun to
    resume."""


def copy_of(problem: Problem) -> str | None:
    """The NL4Opt id an OptiBench problem copies, or None."""
    same = (problem.extra or {}).get("same_problem_as_nl4opt")
    return same.get("id") if isinstance(same, dict) else None


def held_out_samples() -> list[str]:
    """Names of the shipped samples that are not training splits (the eval samples)."""
    from optiforge.evals.sample import builtin_samples

    return [n for n in builtin_samples() if not n.endswith(TRAINING_SAMPLE_SUFFIXES)]


def eval_overlap(ids: Sequence[str]) -> dict[str, list[str]]:
    """``{sample name: ids}`` of ``ids`` that are in a shipped eval (held-out) sample."""
    from optiforge.evals.sample import load_sample

    out: dict[str, list[str]] = {}
    wanted = set(ids)
    for name in held_out_samples():
        hit = sorted(wanted & set(load_sample(name)))
        if hit:
            out[name] = hit
    return out


_TEST_IDS: frozenset[str] | None = None


def held_out_ids() -> frozenset[str]:
    """Every id in a shipped held-out sample (``*-fresh60``, ``*-readme40``, ``*-test``...)."""
    global _TEST_IDS
    if _TEST_IDS is None:
        from optiforge.evals.sample import load_sample

        _TEST_IDS = frozenset(i for name in held_out_samples() for i in load_sample(name))
    return _TEST_IDS


def is_test_problem(problem: Problem) -> bool:
    """True if ``problem`` (or the NL4Opt problem it copies) is in a shipped test sample."""
    ids = held_out_ids()
    return problem.id in ids or copy_of(problem) in ids


def _as_solution(output: Any) -> Any:
    """A Solution-like object from what the team module returns: a
    :class:`~optiforge.agents.solution.Solution`, or the summary dict of the bundled team."""
    if not isinstance(output, dict):
        return output
    status = output.get("status")
    return SimpleNamespace(
        answer=output.get("answer"),
        result=SimpleNamespace(status=status, objective=output.get("answer")) if status else None,
        failure_class=output.get("failure"),
        error=output.get("error"),
        formulation_markdown=output.get("formulation"),
        critic_findings=list(output.get("critic_findings") or []),
        steps=[],
    )


def _formulation_text(solution: Any) -> str | None:
    """The chosen formulation for the feedback: plain-text math (objective, constraints
    with the text they came from, variables), a third of the Markdown's length, so more of
    it fits the optimizer's prompt; the Markdown when there is no validated model (a draft
    that did not validate)."""
    from optiforge.solvers.render import ir_plaintext

    model = getattr(solution, "formulation", None)
    if model is not None:
        try:
            return ir_plaintext(model)
        except Exception:  # a half-built model: show what the team showed
            pass
    return getattr(solution, "formulation_markdown", None)


def _findings(solution: Any) -> list[str]:
    found = list(getattr(solution, "critic_findings", None) or [])
    for step in getattr(solution, "steps", None) or []:
        detail = getattr(step, "detail", None)
        for issue in detail.get("issues", []) if isinstance(detail, dict) else []:
            message = issue.get("message") if isinstance(issue, dict) else str(issue)
            if message:
                found.append(str(message))
    return sorted(set(found))[:8]


def _num(x: Any) -> str:
    return "none" if x is None else f"{x:g}" if isinstance(x, int | float) else str(x)


def _expected(problem: Problem) -> str:
    if problem.answer_kind == "infeasible":
        return "that the problem is infeasible (no optimal value)"
    return f"the optimal objective {_num(problem.answer)}"


@dataclass
class TeamJudge:
    """``judge(output, problem) -> (score, feedback)`` for the trainer and GEPA.

    ``output`` is what the team module returned; ``problem`` the training
    :class:`~optiforge.datasets.Problem` (its answer, kind and variant). The score is 1 when
    ``eval`` would count the answer correct under ``rule``, else 0.
    """

    agent: str = "team"
    rule: str = DEFAULT_RULE
    formulation_chars: int = 1500
    #: Problems judged so far, by id (so a caller can check what the optimizer saw).
    seen: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise TuneError(f"unknown scoring rule {self.rule!r}; known: {sorted(RULES)}")

    def __call__(self, output: Any, problem: Problem) -> tuple[float, str]:
        return self.grade(problem, output)

    def grade(self, problem: Problem, output: Any) -> tuple[float, str]:
        """Score ``output`` on ``problem`` and write the feedback for a training problem."""
        from optiforge.prompts import render_prompt

        if not isinstance(problem, Problem):
            raise TuneError(
                f"the tuning judge needs the training Problem as target, got {type(problem).__name__}"
            )
        if is_test_problem(problem):
            # Checked before anything is read: no expected answer of a test problem can ever
            # end up in feedback, whatever the caller does.
            raise HeldOutProblemError(
                f"{problem.id} is in a held-out test sample ({', '.join(held_out_samples())}): "
                "tuning never gives feedback on test problems"
            )
        from optiforge.evals.runner import record_from_solution

        self.seen.append(problem.id)
        solution = _as_solution(output)
        record = record_from_solution(
            problem, solution, elapsed_s=0.0, started_at=time.time(), session=0
        )
        ok = bool(record.correct.get(self.rule))
        result = getattr(solution, "result", None)
        findings = _findings(solution)
        values = {
            "agent": self.agent,
            "rule": self.rule,
            "answer": "infeasible"
            if record.prediction_kind == "infeasible"
            else _num(record.prediction),
            "status": record.solve_status or "no solver result",
            "objective": _num(getattr(result, "objective", None)),
            "findings": ("The critic noted: " + "; ".join(findings)) if findings else "",
        }
        if ok:
            return 1.0, render_prompt("tune/feedback_correct", **values).strip()
        failure = record.failure_class
        error = (getattr(solution, "error", None) or "")[:400]
        formulation = _formulation_text(solution)
        text = render_prompt(
            "tune/feedback_wrong",
            **values,
            expected=_expected(problem),
            failure=f"\nFailure: {failure}{': ' + error if error else ''}" if failure else "",
            formulation=(
                "\nThe chosen formulation was:\n" + str(formulation)[: self.formulation_chars]
            )
            if formulation
            else "",
        )
        return 0.0, text.strip()


def select_training(
    dataset: str,
    *,
    ids: Sequence[str] | None = None,
    limit: int | None = None,
    answer_field: str | None = None,
    drop_overlap: bool = False,
    note: Callable[[str], None] = lambda _msg: None,
) -> list[Problem]:
    """Training problems with a usable answer, none of them in a shipped eval sample.

    Overlap with a sample (``nl4opt-readme40``, ``*-fresh60``, ...; copies count) raises
    :class:`TuneError`, or with ``drop_overlap`` leaves those problems out. With ``ids`` the
    problems come in that order (so ``--ids TRAIN...,VAL...`` with ``--val-fraction``
    validates on the ids listed last), else in the dataset's.
    """
    problems = [
        p
        for p in load_dataset(dataset, ids=list(ids) if ids else None, answer_field=answer_field)
        if p.answer_kind in ("value", "infeasible")
    ]
    if ids:
        order = {pid: k for k, pid in enumerate(dict.fromkeys(ids))}
        problems.sort(key=lambda p: order.get(p.id, len(order)))
    if limit is not None:
        problems = problems[:limit]
    all_ids = [p.id for p in problems] + [c for p in problems if (c := copy_of(p))]
    overlap = eval_overlap(all_ids)
    if overlap:
        listed = "; ".join(
            f"{k}: {', '.join(v[:8])}{' ...' if len(v) > 8 else ''}" for k, v in overlap.items()
        )
        if not drop_overlap:
            raise TuneError(
                f"the training set overlaps the fixed eval samples ({listed}). Training on eval "
                "problems inflates the reported accuracy; pick other ids or pass --drop-overlap "
                "to leave them out."
            )
        bad = {i for v in overlap.values() for i in v}
        problems = [p for p in problems if p.id not in bad and copy_of(p) not in bad]
        note(f"left out {len(bad)} problem(s) of the eval samples")
    if len(problems) < 2:
        raise TuneError("need at least 2 training problems with answers after filtering")
    return problems


def split(problems: Sequence[Problem], val_fraction: float) -> tuple[list[Problem], list[Problem]]:
    """(train, validation): the last ``round(n * val_fraction)`` problems validate."""
    n_val = round(len(problems) * val_fraction)
    cut = len(problems) - n_val
    return list(problems[:cut]), list(problems[cut:])


@dataclass
class TuneConfig:
    """What ``optiforge tune`` was asked to do (see ``optiforge tune --help``)."""

    dataset: str
    out: Path
    agent: str = "team"
    optimizer: str = "optoprime"
    params: Sequence[str] = ("formulator_system",)
    ids: Sequence[str] | None = None
    limit: int | None = None
    val_fraction: float = 0.25
    epochs: int = 1
    batch_size: int = 4
    drop_overlap: bool = False
    init_prompts: dict[str, str] | None = None
    #: The team's accuracy levers (``--levers``, parsed: every lever's on/off); None: defaults.
    levers: dict[str, bool] | None = None
    #: The experience lever's library file (None: the shipped one), and what the tuned
    #: prompts file records of it (file, sha256, entries).
    experience_library: str | None = None
    experience: dict[str, Any] | None = None
    budget: int | None = None
    samples: int | None = None
    #: Seconds each problem may take (the team works to this deadline, as under ``eval
    #: --timeout``); None: no limit.
    time_limit: float | None = None
    workers: int = 2
    seed: int = 0
    rule: str = DEFAULT_RULE
    answer_field: str | None = None
    max_metric_calls: int | None = None
    minibatch: int = 3
    merge: bool = False
    #: gepa and optoprime: the optimizer prompt's length cap in characters (the traces
    #: shown are shortened to fit the model's context); None: no cap.
    max_prompt_chars: int | None = 9000
    restart: bool = False
    model: str | None = None
    progress: bool = True
    #: ``local`` or ``ray`` (GEPA's unrecorded evaluations as Ray tasks; GEPA only).
    executor: str = "local"
    #: With ``executor="ray"``: a running cluster (``auto``, ``HOST:6379``); None starts a
    #: private local Ray instance.
    ray_address: str | None = None
    #: With ``executor="ray"``: worker processes (default: one per CPU, at most ``workers``).
    ray_workers: int | None = None
    #: The client was built without the response cache (the Ray workers' clients follow).
    no_cache: bool = False

    def __post_init__(self) -> None:
        # Checked before any server or Ray is started.
        _check_executor(self)
        if self.time_limit is not None and not self.time_limit > 0:
            raise TuneError(f"--time-limit must be > 0 seconds, got {self.time_limit!r}")


@dataclass
class TuneOutcome:
    """What :func:`run_tune` did."""

    out: Path
    state_path: Path
    train_ids: list[str]
    val_ids: list[str]
    tuned: list[str]
    initial_val_score: float | None
    best_val_score: float | None
    resumed: bool
    #: LLM calls and tokens of this session: the driver's client and the Ray workers'.
    calls: int
    tokens: int
    executor: str = "local"
    #: The executor's usage (the workers' summed LLM usage, deaths, retries), if one ran.
    executor_usage: dict[str, Any] | None = None
    #: Of ``calls``: those the Ray workers' clients made; and how many workers died.
    remote_calls: int = 0
    worker_deaths: int = 0


def state_path_for(out: Path) -> Path:
    """The state file a tune writing ``out`` keeps beside it (``prompts.state.json``)."""
    return out.with_suffix(".state.json")


def settings_path_for(out: Path) -> Path:
    """The settings a tune writing ``out`` keeps beside its state (``prompts.tune.json``):
    what a resume must share with the run that wrote the state."""
    return out.with_suffix(".tune.json")


def _resume_settings(
    cfg: TuneConfig, chosen: list[str], train_ids: list[str], val_ids: list[str]
) -> dict[str, Any]:
    """What decides the scores a tune's state holds. Left out on purpose: the budget
    (``--max-metric-calls``, raised to continue a finished tune), ``--workers``, the executor
    and the cache, which change how fast the same search runs, not what it scores."""
    init = None
    if cfg.init_prompts:
        blob = json.dumps(cfg.init_prompts, sort_keys=True).encode("utf-8")
        init = hashlib.sha256(blob).hexdigest()
    record = {
        "dataset": cfg.dataset,
        "agent": cfg.agent,
        "optimizer": cfg.optimizer,
        "params": chosen,
        "train_ids": train_ids,
        "val_ids": val_ids,
        "rule": cfg.rule,
        "answer_field": cfg.answer_field,
        "budget": cfg.budget,
        "samples": cfg.samples,
        "time_limit_s": cfg.time_limit,
        "levers": cfg.levers,
        "experience": cfg.experience,
        "init_prompts_sha256": init,
        "model": cfg.model,
        "seed": cfg.seed,
        "minibatch": cfg.minibatch,
        "merge": cfg.merge,
        "max_prompt_chars": cfg.max_prompt_chars,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
    }
    return json.loads(json.dumps(record))  # as it reads back from the file


def check_resume_settings(cfg: TuneConfig, record: dict[str, Any], *, resumed: bool) -> None:
    """Refuse to resume a state written with other settings (see :func:`_resume_settings`);
    then record this tune's settings beside its state."""
    path = settings_path_for(cfg.out)
    if resumed and path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TuneError(f"cannot read {path}: {exc}; delete it to resume anyway") from None
        changed = [k for k in record if k in old and old[k] != record[k]]
        if changed:
            diff = "; ".join(f"{k}: {_short(old[k])} -> {_short(record[k])}" for k in changed)
            raise TuneError(
                f"{state_path_for(cfg.out)} was written by a tune with other settings ({diff}). "
                "Rerun with the same options to resume, or --restart (or another --out) to "
                "start over"
            )
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def make_optimizer(name: str, module: Any, llm: Any, cfg: TuneConfig, *, remote: Any = None) -> Any:
    """The optimizer ``name`` over ``module``'s trainable prompts; ``remote`` (GEPA only):
    where its unrecorded evaluations run (:func:`remote_run`)."""
    from optiforge.agents.optim import GEPA, OPRO, OptoPrime, TextGrad

    if remote is not None and name != "gepa":
        raise TuneError(_RAY_GEPA_ONLY.format(name=name))
    if name == "gepa":
        return GEPA(
            module,
            llm,
            minibatch_size=cfg.minibatch,
            max_metric_calls=cfg.max_metric_calls,
            use_merge=cfg.merge,
            workers=cfg.workers,
            seed=cfg.seed,
            max_tokens=2048,
            max_prompt_chars=cfg.max_prompt_chars,
            remote=remote,
        )
    if name == "opro":
        return OPRO(
            module,
            llm,
            task="Improve the instructions of an LLM that turns optimization word problems "
            "into correct mathematical models. Score = share of problems solved correctly.",
            max_tokens=1500,
            seed=cfg.seed,
            max_prompt_chars=cfg.max_prompt_chars,
        )
    if name == "textgrad":
        return TextGrad(module, llm, seed=cfg.seed, max_prompt_chars=cfg.max_prompt_chars)
    if name == "optoprime":
        return OptoPrime(
            module, llm, max_tokens=1500, seed=cfg.seed, max_prompt_chars=cfg.max_prompt_chars
        )
    raise TuneError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


_RAY_GEPA_ONLY = (
    "--executor ray runs GEPA's unrecorded evaluations (each child's minibatch and the "
    "validation sets) on Ray workers; {name} runs every problem in this process. Use "
    "--optimizer gepa, or drop --executor ray."
)


def remote_run(executor: Any, module: Any) -> Any:
    """GEPA's :data:`~optiforge.agents.optim.rollouts.RemoteRun` over ``executor``: the
    candidate's ``values`` over the module's other prompt values, and the training
    :class:`~optiforge.datasets.Problem` (the example's target) solved with them by
    ``executor.run(problem, prompts=...)``; a local run of the module would send the same
    requests. A worker that died on every attempt raises :class:`TuneWorkerError`."""
    from optiforge.evals.executor import WorkerDiedError

    async def run(values: Any, text: Any, problem: Any) -> Any:
        if not isinstance(problem, Problem):
            raise TuneError(
                "a remote evaluation needs the training Problem as target, got "
                f"{type(problem).__name__}"
            )
        prompts = {**module.prompt_values(), **values}
        try:
            return await executor.run(problem, prompts=prompts)
        except WorkerDiedError as exc:
            raise TuneWorkerError(
                f"{exc}. The tune stopped; its state file keeps every finished iteration: "
                "rerun the same command to resume"
            ) from None

    return run


def _check_executor(cfg: TuneConfig) -> None:
    if cfg.executor not in EXECUTORS:
        raise TuneError(f"--executor must be local or ray, got {cfg.executor!r}")
    if cfg.executor != "ray" and (cfg.ray_address or cfg.ray_workers is not None):
        raise TuneError("--ray-address and --ray-workers need --executor ray")
    if cfg.ray_workers is not None and cfg.ray_workers < 1:
        raise TuneError(f"--ray-workers must be >= 1, got {cfg.ray_workers}")
    if cfg.executor == "ray" and cfg.optimizer != "gepa":
        raise TuneError(_RAY_GEPA_ONLY.format(name=cfg.optimizer))


def start_ray_executor(
    cfg: TuneConfig, llm: Any, settings: Any, *, note: Callable[[str], None] = lambda _m: None
) -> Any:
    """A started :class:`~optiforge.evals.executor.RayExecutor` whose workers build the
    tune's agent (``cfg.agent``, budget, samples; the settings' model and cache) with
    their own LLM client. Workers on this host share the driver's embedded server."""
    import functools

    from optiforge.agents.spec import AgentSpec, build_agent
    from optiforge.evals.executor import RayExecutor

    base_url = None
    if getattr(llm, "route", None) == "local":
        base_url = llm.ensure_server()  # a remote cluster needs --base-url it can reach
    spec = AgentSpec(
        agent=cfg.agent,
        settings=settings,
        base_url=base_url,
        no_cache=cfg.no_cache,
        budget=cfg.budget,
        samples=cfg.samples,
        time_limit=cfg.time_limit,
        levers=cfg.levers,
        experience_library=cfg.experience_library,
    )
    ex = RayExecutor(
        functools.partial(build_agent, spec),
        address=cfg.ray_address,
        workers=cfg.ray_workers,
        concurrency=cfg.workers,
    )
    try:
        ex.start()
    except BaseException:  # Ctrl-C or a failed start: stop what did start
        ex.close()
        raise
    note(f"ray: {ex.worker_count} workers ready in {ex.startup_s:.1f} s")
    return ex


def run_tune(
    cfg: TuneConfig,
    llm: Any,
    *,
    settings: Any = None,
    executor: Any = None,
    note: Callable[[str], None] = lambda _m: None,
) -> TuneOutcome:
    """Tune the team's prompts (see the module docs); resumes from the state file beside
    ``cfg.out`` when one exists (unless ``cfg.restart``).

    ``llm``: the client of the optimizer and of the runs here. With ``cfg.executor ==
    "ray"``, a Ray executor is started from ``settings`` (:func:`start_ray_executor`) and
    stopped at the end; ``executor`` instead runs GEPA's unrecorded evaluations through an
    executor the caller made (and closes). The calls and tokens reported add a Ray
    executor's usage (its workers' clients) to the driver's; a local executor is taken to
    share ``llm``, whose usage already holds them."""
    from optiforge.agents.team import TRAINABLE
    from optiforge.agents.team.module import TeamModule, save_prompts
    from optiforge.agents.trainer import train

    if cfg.agent not in ("team", "direct"):
        raise TuneError(f"--agent must be team or direct, got {cfg.agent!r}")
    if cfg.optimizer not in OPTIMIZERS:
        raise TuneError(
            f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}"
        )
    _check_executor(cfg)
    if executor is not None and cfg.optimizer != "gepa":
        raise TuneError(_RAY_GEPA_ONLY.format(name=cfg.optimizer))
    chosen = list(cfg.params)
    unknown = sorted(set(chosen) - set(TRAINABLE))
    if unknown or not chosen:
        raise TuneError(f"--params: unknown {unknown}; choose from {', '.join(TRAINABLE)}")
    if cfg.agent == "direct" and chosen != ["coder_system"]:
        note("the direct agent only uses coder_system; tuning that")
        chosen = ["coder_system"]
    judge = TeamJudge(agent=cfg.agent, rule=cfg.rule)
    problems = select_training(
        cfg.dataset,
        ids=cfg.ids,
        limit=cfg.limit,
        answer_field=cfg.answer_field,
        drop_overlap=cfg.drop_overlap,
        note=note,
    )
    train_set, val = split(problems, cfg.val_fraction)
    state = state_path_for(cfg.out)
    if cfg.restart:
        state.unlink(missing_ok=True)
    resumed = state.exists()
    check_resume_settings(
        cfg,
        _resume_settings(cfg, chosen, [p.id for p in train_set], [p.id for p in val]),
        resumed=resumed,
    )
    ensure = getattr(llm, "ensure_server", None)
    if callable(ensure):
        ensure()  # before any event loop of the rollouts (see GEPA.optimize)
    extra: dict[str, Any] = {}
    if cfg.levers is not None and cfg.agent == "team":
        from optiforge.agents.team.levers import team_config

        lib = {"experience_library": cfg.experience_library} if cfg.experience_library else {}
        extra["config"] = team_config(cfg.levers, **lib)
    if cfg.time_limit is not None:
        extra["time_limit"] = cfg.time_limit
    module = TeamModule(
        cfg.init_prompts,
        llm=llm,
        agent=cfg.agent,
        budget=cfg.budget,
        samples=cfg.samples,
        **extra,
    )
    for name in TRAINABLE:
        getattr(module, name).trainable = name in chosen
    note(
        f"tune {cfg.agent} prompts {chosen} with {cfg.optimizer}: {len(train_set)} train / "
        f"{len(val)} validation problems from {cfg.dataset}"
        + (f"; resuming from {state}" if resumed else "")
    )
    owned = None
    if executor is None and cfg.executor == "ray":
        executor = owned = start_ray_executor(cfg, llm, settings, note=note)
    executor_usage = None
    try:
        remote = remote_run(executor, module) if executor is not None else None
        opt = make_optimizer(cfg.optimizer, module, llm, cfg, remote=remote)
        result = train(
            module,
            [(p.text, p) for p in train_set],
            judge,
            opt,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            val_set=[(p.text, p) for p in val] or None,
            workers=cfg.workers,
            seed=cfg.seed,
            keep_best=True,
            error_score=0.0,
            log_path=cfg.out.with_suffix(".log.json"),
            llms=[llm],
            progress=cfg.progress,
            state_path=state,
            # Without a progress bar (a log file), one line per step or GEPA iteration.
            log=None if cfg.progress else note,
        )
    finally:
        if owned is not None:
            owned.close()  # also on Ctrl-C: stops the workers (and a private Ray)
    if executor is not None:
        executor_usage = executor.usage()
    # The workers' clients are not the driver's: add what they spent (a local executor
    # sharing the driver's client is already counted).
    remote_calls = remote_tokens = 0
    if executor_usage and getattr(executor, "name", "") != "local":
        remote_calls = int(executor_usage.get("calls", 0) or 0)
        remote_tokens = int(executor_usage.get("prompt_tokens", 0) or 0) + int(
            executor_usage.get("completion_tokens", 0) or 0
        )
    save_prompts(
        module.prompt_values(),
        cfg.out,
        meta={
            "agent": cfg.agent,
            "optimizer": cfg.optimizer,
            "dataset": cfg.dataset,
            "rule": cfg.rule,
            "answer_field": problems[0].answer_field,
            "tuned": chosen,
            "train_ids": [p.id for p in train_set],
            "val_ids": [p.id for p in val],
            "initial_val_score": result.initial_val_score,
            "best_val_score": result.best_val_score,
            "model": cfg.model,
            "levers": cfg.levers,
            "experience": cfg.experience,
            "time_limit_s": cfg.time_limit,
            "seed": cfg.seed,
            "executor": executor.name if executor is not None else "local",
        },
    )
    return TuneOutcome(
        out=cfg.out,
        state_path=state,
        train_ids=[p.id for p in train_set],
        val_ids=[p.id for p in val],
        tuned=chosen,
        initial_val_score=result.initial_val_score,
        best_val_score=result.best_val_score,
        resumed=resumed,
        calls=result.calls + remote_calls,
        tokens=result.tokens + remote_tokens,
        executor=executor.name if executor is not None else "local",
        executor_usage=executor_usage,
        remote_calls=remote_calls,
        worker_deaths=int(((executor_usage or {}).get("executor") or {}).get("worker_deaths", 0)),
    )
