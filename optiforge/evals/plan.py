"""Planning an evaluation before it runs: which problems, what ``run.json`` says, what a
resume has left to do, and how to resume an interrupted run.

``optiforge eval`` parses its flags into an :class:`EvalRequest` (which checks them), calls
:func:`plan_eval` and then only wires the agent and prints; everything here is plain data
and can be tested without a model, a server or a subprocess.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optiforge.datasets import DatasetError, Problem, count_unscorable, load_dataset
from optiforge.evals.journal import read_journal
from optiforge.evals.records import INFRA_FAILURES, EvalError, RunMeta
from optiforge.evals.sample import load_sample

AGENTS = ("team", "direct")
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class EvalRequest:
    """What the user asked ``optiforge eval`` for (the flags, before settings are applied).

    Construction checks the flags that do not depend on settings and raises
    :class:`~optiforge.evals.records.EvalError` with the flag's name, in the order the CLI
    always checked them.
    """

    dataset: str
    agent: str = "team"
    agent_fn: str | None = None
    samples: int | None = None
    budget: int | None = None
    limit: int | None = None
    ids: str | None = None
    sample: str | None = None
    category: Sequence[str] | None = None
    answer_field: str | None = None
    columns: Sequence[str] | None = None
    include_unscored: bool = False
    out: Path | str | None = None
    resume: bool = False
    retry_failed: bool = False
    executor: str = "local"
    ray_address: str | None = None
    ray_workers: int | None = None
    #: Every accuracy lever's on/off (``--levers``, parsed), None: the team's defaults.
    levers: dict[str, bool] | None = None
    #: What ``--prompts`` loaded (file, sha256, parameter names), None: the shipped prompts.
    prompts: dict[str, Any] | None = None
    #: The experience library the lever uses (file, sha256, entries), None: lever off.
    experience: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.out is not None:
            object.__setattr__(self, "out", Path(self.out))
        if self.agent not in AGENTS and self.agent_fn is None:
            raise EvalError(f"--agent must be team or direct, got {self.agent!r}")
        if self.samples is not None and self.samples < 1:
            raise EvalError(f"--samples must be >= 1, got {self.samples}")
        if self.budget is not None and self.budget < 1:
            raise EvalError(f"--budget must be >= 1, got {self.budget}")
        if self.retry_failed and not self.resume:
            raise EvalError("--retry-failed needs --resume")
        if self.executor not in EXECUTORS:
            raise EvalError(f"--executor must be local or ray, got {self.executor!r}")
        if self.executor != "ray" and (self.ray_address or self.ray_workers is not None):
            raise EvalError("--ray-address and --ray-workers need --executor ray")
        if self.ray_workers is not None and self.ray_workers < 1:
            raise EvalError(f"--ray-workers must be >= 1, got {self.ray_workers}")
        if self.levers and any(self.levers.values()) and (self.agent_fn or self.agent != "team"):
            raise EvalError(
                "--levers switches the team's accuracy levers; use it with --agent team"
            )

    @property
    def dataset_name(self) -> str:
        """The name runs are filed under: a file's stem, or the built-in name in lower case."""
        return Path(self.dataset).stem if Path(self.dataset).suffix else self.dataset.lower()

    @property
    def agent_name(self) -> str:
        """``custom`` for an ``--agent-fn`` agent, else the built-in agent's name."""
        return "custom" if self.agent_fn else self.agent


@dataclass
class Selection:
    """The problems to run and how they were chosen."""

    problems: list[Problem]
    #: The ids asked for (``--ids`` narrowed by ``--sample``), or None for all.
    ids: list[str] | None
    #: Problems without a usable ground truth that were left out (0 with --include-unscored).
    unscored_left_out: int = 0
    #: Why problems are missing, for the user (None when none were left out).
    note: str | None = None


def prompts_record(path: Path | str, values: dict[str, str]) -> dict[str, Any]:
    """What ``run.json`` says of ``--prompts``: the file, the sha256 of its parameter values
    (canonical JSON, so the same prompts give the same hash wherever the file lives) and the
    parameters it sets."""
    import hashlib
    import json

    canonical = json.dumps(values, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return {
        "file": str(path),
        "sha256": hashlib.sha256(canonical).hexdigest(),
        "parameters": sorted(values),
    }


def requested_ids(ids: str | None, sample: str | None) -> list[str] | None:
    """The problem ids ``--ids`` (comma-separated) and ``--sample`` (a shipped list or a
    file) ask for: their intersection, in ``--ids`` order, when both are given."""
    id_list: list[str] | None = None
    if ids:
        id_list = [i.strip() for i in ids.split(",") if i.strip()]
    if sample:
        sample_ids = load_sample(sample)
        wanted = set(sample_ids)
        id_list = sample_ids if id_list is None else [i for i in id_list if i in wanted]
    return id_list


def select_problems(
    request: EvalRequest, *, note: Callable[[str], None] | None = None
) -> Selection:
    """Load the dataset and apply the filters in order: ids/sample, categories, the answer
    field, scorability (unless ``include_unscored``), then ``limit``.

    ``note`` receives the message about left-out unscorable problems before the emptiness
    check, so the user learns why nothing is left. Raises
    :class:`~optiforge.datasets.DatasetError` when no problem remains.
    """
    id_list = requested_ids(request.ids, request.sample)
    problems = load_dataset(
        request.dataset,
        answer_field=request.answer_field,
        ids=id_list,
        category=list(request.category) if request.category else None,
        columns=list(request.columns) if request.columns else None,
    )
    selection = Selection(problems=problems, ids=id_list)
    unscorable = count_unscorable(problems)
    if unscorable and not request.include_unscored:
        selection.problems = [p for p in problems if p.scorable]
        selection.unscored_left_out = unscorable
        field = (
            selection.problems[0].answer_field
            if selection.problems
            else (request.answer_field or "answer")
        )
        selection.note = (
            f"{unscorable} of {len(problems)} selected problems have no usable ground truth "
            f"under answer field {field!r}; they are left out (pass --include-unscored to "
            "run them)."
        )
        if note is not None:
            note(selection.note)
    if request.limit is not None:
        selection.problems = selection.problems[: max(request.limit, 0)]
    if not selection.problems:
        raise DatasetError("no problems left to run after the filters")
    return selection


def default_out_dir(request: EvalRequest, now: float | None = None) -> Path:
    """``runs/eval-DATASET-AGENT-YYYYmmdd-HHMMSS`` (local time), unless ``--out`` was given."""
    if request.out is not None:
        return Path(request.out)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return Path("runs") / f"eval-{request.dataset_name}-{request.agent_name}-{stamp}"


def run_meta(
    request: EvalRequest,
    selection: Selection,
    *,
    model: str | None,
    base_url: str | None,
    argv: Sequence[str],
) -> RunMeta:
    """The ``run.json`` header for this request: what runs, on what, chosen how, and the
    command line (``argv`` without the program name). A custom agent records no model or
    server: it brings its own."""
    custom = bool(request.agent_fn)
    return RunMeta(
        dataset=request.dataset_name,
        answer_field=selection.problems[0].answer_field,
        agent=f"custom:{request.agent_fn}" if custom else request.agent,
        model=None if custom else model,
        base_url=None if custom else base_url,
        samples=request.samples,
        budget={"llm_samples": request.budget} if request.budget else None,
        levers=request.levers,
        prompts=request.prompts,
        experience=request.experience,
        filters={
            "ids": selection.ids,
            "sample": request.sample,
            "limit": request.limit,
            "category": list(request.category) if request.category else None,
            "include_unscored": request.include_unscored,
        },
        command=shlex.join(["optiforge", *argv]),
    )


def pending_count(
    problems: Sequence[Problem], out_dir: Path, *, resume: bool, retry_failed: bool
) -> int:
    """How many of ``problems`` will run: all of them for a new run; for a resume, those
    without a finished record in the journal (with ``retry_failed``, records of LLM/agent
    failures do not count as finished)."""
    if not resume:
        return len(problems)
    done = read_journal(out_dir).latest()
    if retry_failed:
        done = {k: r for k, r in done.items() if r.failure_class not in INFRA_FAILURES}
    return sum(1 for p in problems if p.id not in done)


def resume_command(argv: Sequence[str], out_dir: Path) -> str:
    """The command that resumes this run: ``argv`` (without the program name) with any
    ``--out``/``-o``/``--resume`` replaced by ``--out OUT_DIR --resume``."""
    args = list(argv) or ["eval"]
    cleaned: list[str] = []
    skip = False
    for i, a in enumerate(args):
        if skip:
            skip = False
            continue
        if a in ("--out", "-o"):
            skip = i + 1 < len(args)
            continue
        if a.startswith("--out=") or a == "--resume":
            continue
        cleaned.append(a)
    return shlex.join(["optiforge", *cleaned, "--out", str(out_dir), "--resume"])


@dataclass
class EvalPlan:
    """Everything decided before an evaluation starts."""

    request: EvalRequest
    selection: Selection
    out_dir: Path
    meta: RunMeta
    concurrency: int
    #: Problems that will actually run (0: a resume of a finished run; start no model).
    pending: int

    @property
    def problems(self) -> list[Problem]:
        """The selected problems."""
        return self.selection.problems


def plan_eval(
    request: EvalRequest,
    *,
    concurrency: int,
    model: str | None,
    base_url: str | None,
    argv: Sequence[str],
    note: Callable[[str], None] | None = None,
    now: float | None = None,
) -> EvalPlan:
    """Check the settings-dependent flags, select the problems, write down the run's
    metadata and count what is left to run. ``concurrency``, ``model`` and ``base_url`` are
    the effective settings; ``note`` gets informational messages (see
    :func:`select_problems`)."""
    if concurrency < 1:
        raise EvalError(f"--concurrency must be >= 1, got {concurrency}")
    selection = select_problems(request, note=note)
    out_dir = default_out_dir(request, now)
    meta = run_meta(request, selection, model=model, base_url=base_url, argv=argv)
    pending = pending_count(
        selection.problems, out_dir, resume=request.resume, retry_failed=request.retry_failed
    )
    return EvalPlan(
        request=request,
        selection=selection,
        out_dir=out_dir,
        meta=meta,
        concurrency=concurrency,
        pending=pending,
    )
