"""A training loop for LLM optimizers: minibatches, feedback, validation, best parameters.

    result = train(module, train_set, judge, OptoPrime(module.parameters(), llm),
                   epochs=2, batch_size=4, val_set=val_set, log_path="run.json")

For each minibatch the module runs on every example in parallel (threads, or tasks when
the module is async, so its LLM calls overlap through the async client), ``judge`` turns
each output into a score and/or feedback, the feedback goes back through the graph, and
the optimizer takes one step. After every step the validation set is scored; the best
parameters seen are kept (and restored at the end), and training stops early when
validation has not improved for ``patience`` steps. Every step is written to a JSON log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from optiforge.agents.optim.base import Optimizer, jsonable
from optiforge.agents.optim.errors import OptimizerError
from optiforge.agents.optim.rollouts import (
    Evaluation,
    Rollouts,
    mean,
    split_example,
    usage_total,
)
from optiforge.fileio import write_text_atomic
from optiforge.trace import SerializationError
from optiforge.trace.state import check_state, state_document

log = logging.getLogger("optiforge.agents.trainer")


class StepLog(BaseModel):
    """One optimizer step in the training log."""

    epoch: int
    step: int
    batch: list[int]
    train_score: float | None
    val_score: float | None
    best_val_score: float | None
    improved: bool
    feedback: list[str]
    changes: list[dict[str, Any]]
    errors: list[str]
    parameters: dict[str, Any]
    optimizer_calls: int
    optimizer_tokens: int
    #: Tokens and calls of every LLM client involved since training started.
    total_calls: int
    total_tokens: int
    elapsed_s: float


class TrainResult(BaseModel):
    """The outcome of :func:`train`."""

    initial_val_score: float | None = None
    best_val_score: float | None = None
    final_val_score: float | None = None
    best_parameters: dict[str, Any] = Field(default_factory=dict)
    steps: list[StepLog] = Field(default_factory=list)
    stopped_early: bool = False
    calls: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0
    log_path: str | None = None
    #: Steps taken before this call, when it resumed from ``state_path``.
    resumed_steps: int = 0
    #: GEPA only: its :class:`~optiforge.agents.optim.gepa.GEPAResult` as a dict.
    search: dict[str, Any] | None = None


#: Format tag of the training state files written before :mod:`optiforge.trace.state`
#: (still read; :func:`train` now writes a state document of kind ``"training"``).
LEGACY_STATE_FORMAT = "optiforge.train-state/1"


def evaluate(
    module: Any,
    dataset: Sequence[Any],
    loss_or_feedback_fn: Callable[[Any, Any], Any],
    *,
    workers: int = 4,
    error_score: float | None = None,
) -> tuple[float | None, list[Evaluation]]:
    """Score ``module`` on ``dataset`` without recording a graph.

    Examples run in parallel as in :func:`train`. Returns the mean score (None when the
    function gave no scores) and one :class:`Evaluation` per example, in order.
    """
    if workers < 1:
        raise OptimizerError("workers must be at least 1")
    runner = Rollouts(module, loss_or_feedback_fn, workers, error_score)
    try:
        evals = [e for e, _ in runner.run(list(enumerate(dataset)), record=False)]
    finally:
        runner.close()
    return mean([e.score for e in evals]), evals


def train(
    module: Any,
    dataset: Sequence[Any],
    loss_or_feedback_fn: Callable[[Any, Any], Any],
    optimizer: Optimizer,
    epochs: int = 1,
    batch_size: int = 4,
    val_set: Sequence[Any] | None = None,
    *,
    maximize: bool = True,
    patience: int | None = None,
    workers: int = 4,
    shuffle: bool = True,
    seed: int = 0,
    keep_best: bool = True,
    error_score: float | None = None,
    log_path: str | Path | None = None,
    progress: bool = True,
    llms: Sequence[Any] = (),
    state_path: str | Path | None = None,
    max_steps: int | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Optimize ``module``'s trainable parameters on ``dataset`` with ``optimizer``.

    Args:
        module: a callable returning a traced node (a ``Module``, a ``@bundle`` function).
            Each example's input is passed as ``module(x)`` (a dict as keyword arguments,
            a tuple as positional ones). An ``async`` module runs examples concurrently.
        dataset: ``(input, target)`` pairs, or dicts with ``input`` and ``target`` keys.
        loss_or_feedback_fn: ``fn(output, target)`` -> a score, a feedback string, or
            ``(score, feedback)`` (sync or async). ``output`` is the plain value.
        optimizer: any :class:`Optimizer`. OPRO receives the batch's mean score as feedback.
        epochs, batch_size: passes over ``dataset`` and examples per optimizer step.
        val_set: examples scored after every step (and once before training); the best
            parameters on it are kept. Without it the training batch score is used.
        maximize: True if a higher score is better.
        patience: stop after this many steps without a better validation score.
        workers: examples evaluated at once.
        keep_best: restore the best parameters at the end.
        error_score: score of an example whose run raised (None: left out of the mean).
        log_path: JSON file rewritten after every step with the full log.
        progress: show a progress bar.
        llms: LLM clients whose usage to report (the optimizer's is always included).
        state_path: JSON file rewritten after every step with the optimizer's state and the
            training progress. If it exists when ``train`` starts, training resumes after
            the last step it records (same data, seed and settings), so a run stopped by
            Ctrl-C, SIGTERM or kill -9 loses at most the step in flight.
        max_steps: stop after this many optimizer steps (e.g. to fit a budget of examples
            judged: each step judges ``batch_size + len(val_set)`` examples).
        log: called with one line of text per step (GEPA: per iteration), for a log file
            where no progress bar is shown.

    With a :class:`~optiforge.agents.optim.gepa.GEPA` optimizer the loop is GEPA's own
    search (:meth:`~optiforge.agents.optim.gepa.GEPA.optimize`); its budget is the
    optimizer's ``max_metric_calls``, else ``epochs * (2 * len(dataset) + len(val_set))``
    examples run and judged. ``batch_size`` is then unused (GEPA's minibatch is its own).

    Returns:
        :class:`TrainResult` with the scores, the best parameters and the per-step log.
    """
    if epochs < 1 or batch_size < 1 or workers < 1:
        raise OptimizerError("epochs, batch_size and workers must be at least 1")
    data = list(dataset)
    if not data:
        raise OptimizerError("the training set is empty")
    for ex in data[:1] + list(val_set or [])[:1]:
        split_example(ex)  # fail fast on a malformed dataset, before any LLM call
    val = list(val_set) if val_set is not None else None
    if getattr(optimizer, "kind", "") == "gepa":
        return _train_gepa(
            module,
            data,
            loss_or_feedback_fn,
            optimizer,
            epochs,
            val,
            llms,
            state_path,
            log_path,
            log,
        )
    steps_per_epoch = math.ceil(len(data) / batch_size)
    total_steps = epochs * steps_per_epoch
    if max_steps is not None:
        total_steps = min(max_steps, total_steps)
    loop = _Loop(
        Rollouts(module, loss_or_feedback_fn, workers, error_score),
        optimizer,
        data,
        val,
        clients=[optimizer.llm, *llms],
        maximize=maximize,
        log_path=Path(log_path) if log_path is not None else None,
        state_path=Path(state_path) if state_path is not None else None,
        fingerprint=_fingerprint(data, val, epochs, batch_size, seed, shuffle),
    )
    try:
        done = loop.start()
        with _progress_bar(progress) as bar:
            task = bar.add_task(
                "train", total=total_steps, status=f"val={loop.best}", completed=done
            )
            for epoch, step_no, batch in _batches(len(data), batch_size, epochs, shuffle, seed):
                if step_no <= done:
                    continue  # finished before the run was resumed
                val_score = loop.step(epoch, step_no, batch)
                bar.update(
                    task, advance=1, status=f"val={val_score} best={loop.result.best_val_score}"
                )
                if log is not None:
                    log(
                        f"step {step_no}/{total_steps}: validation {val_score}, best "
                        f"{loop.result.best_val_score}"
                    )
                if (patience is not None and loop.since_best >= patience) or (
                    max_steps is not None and step_no >= max_steps
                ):
                    loop.result.stopped_early = True
                    break
        return loop.finish(keep_best)
    finally:
        loop.runner.close()


def _batches(n: int, batch_size: int, epochs: int, shuffle: bool, seed: int):
    """``(epoch, step number, example indices)`` of every step, in order; the same seed
    gives the same batches, so a resumed run can skip the steps it already took."""
    rng = random.Random(seed)
    step_no = 0
    for epoch in range(1, epochs + 1):
        order = list(range(n))
        if shuffle:
            rng.shuffle(order)
        for b in range(math.ceil(n / batch_size)):
            step_no += 1
            yield epoch, step_no, order[b * batch_size : (b + 1) * batch_size]


def _progress_bar(progress: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        disable=not progress,
        transient=False,
    )


class _Loop:
    """The state of one :func:`train` run: scoring, one optimizer step, the best values
    seen, and the log and state files. ``train`` drives it over the batches."""

    def __init__(
        self,
        runner: Rollouts,
        optimizer: Optimizer,
        data: list[Any],
        val: list[Any] | None,
        *,
        clients: list[Any],
        maximize: bool,
        log_path: Path | None,
        state_path: Path | None,
        fingerprint: str,
    ) -> None:
        self.runner = runner
        self.optimizer = optimizer
        self.data = data
        self.val = val
        self.clients = clients
        self.maximize = maximize
        self.log_path = log_path
        self.state_path = state_path
        self.fingerprint = fingerprint
        #: OPRO is given the batch's mean score instead of per-output feedback.
        self.wants_score = getattr(optimizer, "kind", "") == "opro"
        self.base_calls, self.base_tokens = usage_total(clients)
        self.started = time.perf_counter()
        self.result = TrainResult(log_path=str(log_path) if log_path else None)
        self.best: float | None = None  # the validation score before the first step
        self.best_values: dict[str, Any] = {}
        self.since_best = 0

    def better(self, a: float, b: float) -> bool:
        """True if score ``a`` beats ``b``."""
        return a > b if self.maximize else a < b

    def validate(self) -> float | None:
        """The mean validation score (None without a validation set)."""
        if not self.val:
            return None
        evals = self.runner.run(list(enumerate(self.val)), record=False)
        score = mean([e.score for e, _ in evals])
        if score is None:
            raise OptimizerError(
                "validation needs scores: make the feedback function return a number or "
                "(score, feedback)"
            )
        return score

    def start(self) -> int:
        """Resume from the state file, or score the starting values; returns the number of
        steps already done."""
        resume = (
            _read_state(self.state_path, self.optimizer, self.fingerprint)
            if self.state_path is not None
            else None
        )
        if resume is not None:
            self.result = TrainResult.model_validate(
                {**resume["result"], "log_path": self.result.log_path, "stopped_early": False}
            )
            self.best = self.result.best_val_score
            self.best_values = dict(resume["parameters"])
            self.since_best = int(resume["since_best"])
            self.result.resumed_steps = int(resume["step"])
            log.info("resumed training from %s after step %d", self.state_path, resume["step"])
            return self.result.resumed_steps
        self.best = self.validate()
        self.result.initial_val_score = self.best
        self.result.best_val_score = self.best
        self.best_values = self.optimizer.values()
        self.result.best_parameters = {k: jsonable(v) for k, v in self.best_values.items()}
        self.since_best = 0
        return 0

    def _feedback(self, batch: list[int]) -> tuple[list[tuple[Evaluation, Any]], float | None]:
        """Run the batch and send its feedback to the optimizer; returns the evaluations
        and the batch's mean score."""
        opt = self.optimizer
        opt.zero_feedback()
        evals = self.runner.run([(i, self.data[i]) for i in batch], record=not self.wants_score)
        train_score = mean([e.score for e, _ in evals])
        if self.wants_score:
            if train_score is None:
                raise OptimizerError("OPRO needs scores: the feedback function returned none")
            opt.backward(None, train_score)
        else:
            for e, output in evals:
                if output is None or not hasattr(output, "backward"):
                    continue
                opt.backward(output, e.feedback)
        return evals, train_score

    def _keep_if_better(self, score: float | None, values: dict[str, Any]) -> bool:
        """Record ``values`` as the best if ``score`` beats the best so far."""
        best = self.result.best_val_score
        if score is None or (best is not None and not self.better(score, best)):
            return False
        self.result.best_val_score = score
        self.best_values = values
        self.result.best_parameters = {k: jsonable(v) for k, v in values.items()}
        return True

    def step(self, epoch: int, step_no: int, batch: list[int]) -> float | None:
        """One optimizer step on ``batch``: feedback, step, validation, log and state files.
        Returns the validation score."""
        opt = self.optimizer
        t0 = time.perf_counter()
        evals, train_score = self._feedback(batch)
        before_step = opt.values()
        report = opt.step()
        val_score = self.validate()
        # Without a validation set the batch score is the best signal there is; it measures
        # the values *before* this step.
        if self.val is not None:
            improved = self._keep_if_better(val_score, opt.values())
        else:
            improved = self._keep_if_better(train_score, before_step)
        self.since_best = 0 if improved else self.since_best + 1
        calls, tokens = usage_total(self.clients)
        self.result.steps.append(
            StepLog(
                epoch=epoch,
                step=step_no,
                batch=batch,
                train_score=train_score,
                val_score=val_score,
                best_val_score=self.result.best_val_score,
                improved=improved,
                feedback=[e.feedback for e, _ in evals],
                changes=[c.model_dump() for c in report.changes],
                errors=list(report.errors),
                parameters={k: jsonable(v) for k, v in opt.values().items()},
                optimizer_calls=report.calls,
                optimizer_tokens=report.prompt_tokens + report.completion_tokens,
                total_calls=calls - self.base_calls,
                total_tokens=tokens - self.base_tokens,
                elapsed_s=round(time.perf_counter() - t0, 3),
            )
        )
        self.write_log()
        self.write_state(step_no)
        log.info(
            "step %d: train=%s val=%s best=%s changes=%d",
            step_no,
            train_score,
            val_score,
            self.result.best_val_score,
            len(report.changes),
        )
        return val_score

    def finish(self, keep_best: bool) -> TrainResult:
        """Score unscored last values, restore the best ones (``keep_best``), total the
        usage and write the log; returns the result."""
        result = self.result
        if self.val is None and result.steps and not self.wants_score:
            # The last step's values were never scored: score them on the last batch so that
            # keep_best compares like with like instead of discarding them unseen.
            last = result.steps[-1]
            evals = self.runner.run([(i, self.data[i]) for i in last.batch], record=False)
            self._keep_if_better(mean([e.score for e, _ in evals]), self.optimizer.values())
        if keep_best and result.best_val_score is not None:
            for name, value in self.best_values.items():
                self.optimizer.parameter(name).set(value)
        result.final_val_score = (
            result.best_val_score
            if keep_best
            else (result.steps[-1].val_score if result.steps else self.best)
        )
        calls, tokens = usage_total(self.clients)
        result.calls = calls - self.base_calls
        result.tokens = tokens - self.base_tokens
        result.elapsed_s = round(time.perf_counter() - self.started, 3)
        self.write_log()
        return result

    def write_log(self) -> None:
        """Rewrite the JSON log (when there is a log path)."""
        if self.log_path is not None:
            _write_json(self.log_path, self.result.model_dump())

    def write_state(self, step_no: int) -> None:
        """Rewrite the training state after step ``step_no`` (when there is a state path):
        a state document of kind ``"training"`` whose parameters are the best values."""
        if self.state_path is None:
            return
        doc = state_document(
            "training",
            {k: jsonable(v) for k, v in self.best_values.items()},
            fingerprint=self.fingerprint,
            step=step_no,
            since_best=self.since_best,
            result=self.result.model_dump(),
            optimizer=self.optimizer.state_dict(),
        )
        _write_json(self.state_path, doc)


def _fingerprint(
    data: Sequence[Any],
    val: Sequence[Any] | None,
    epochs: int,
    batch_size: int,
    seed: int,
    shuffle: bool,
) -> str:
    """What a resumed run must share with the run that wrote the state."""
    text = json.dumps([repr(list(data)), repr(val), epochs, batch_size, seed, shuffle])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _write_json(path: Path, doc: Any) -> None:
    """Write ``doc`` as JSON atomically (a temp file renamed over ``path``)."""
    write_text_atomic(path, json.dumps(doc, indent=2, default=repr))


def _read_state(path: Path, optimizer: Optimizer, fingerprint: str) -> dict[str, Any] | None:
    """The training state in ``path`` (loaded into ``optimizer``), or None if absent."""
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OptimizerError(f"cannot read the training state {path}: {exc}") from None
    try:
        state = check_state(state, "training", str(path), legacy=_legacy_training_state)
    except SerializationError as exc:
        raise OptimizerError(f"{path} is not a training state file: {exc}") from None
    if state.get("fingerprint") != fingerprint:
        raise OptimizerError(
            f"the training state {path} was written for other data or settings (epochs, "
            "batch size, seed); use another state file or delete it to start over"
        )
    optimizer.load_state_dict(state["optimizer"])
    return state


def _legacy_training_state(doc: Any) -> dict[str, Any] | None:
    """A training state written before the shared format (``optiforge.train-state/1``,
    the best values under ``best_values``)."""
    if doc.get("format") != LEGACY_STATE_FORMAT:
        return None
    rest = {k: v for k, v in doc.items() if k not in ("format", "best_values")}
    return state_document("training", doc.get("best_values") or {}, **rest)


def _train_gepa(
    module: Any,
    data: list[Any],
    fn: Callable[[Any, Any], Any],
    optimizer: Any,
    epochs: int,
    val: list[Any] | None,
    llms: Sequence[Any],
    state_path: str | Path | None,
    log_path: str | Path | None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """:func:`train` with GEPA: run its search and report it as a :class:`TrainResult`."""
    budget = optimizer.max_metric_calls or epochs * (2 * len(data) + len(val or data))
    out = optimizer.optimize(
        module,
        data,
        fn,
        val,
        max_metric_calls=budget,
        state_path=state_path,
        llms=llms,
        on_event=log,
    )
    best = out.best_val_score
    steps = []
    running = out.initial_val_score
    for h in optimizer.history:
        scores = h.get("child_scores") or h.get("subsample_scores") or h.get("parent_scores") or []
        if h.get("accepted"):
            running = max(running, h["val_score"])
        steps.append(
            StepLog(
                epoch=1,
                step=h["iteration"],
                batch=list(h.get("minibatch") or h.get("subsample") or []),
                train_score=mean(scores),
                val_score=h.get("val_score"),
                best_val_score=running,
                improved=bool(h.get("accepted")),
                feedback=[],
                changes=[{"name": h["parameter"]}]
                if h.get("accepted") and "parameter" in h
                else [],
                errors=[h["error"]] if h.get("error") else [],
                parameters=optimizer.candidates[h["child"]] if h.get("accepted") else {},
                optimizer_calls=int(h.get("llm_calls", 0)),
                optimizer_tokens=int(h.get("tokens", 0)),
                total_calls=0,
                total_tokens=0,
                elapsed_s=0.0,
            )
        )
    result = TrainResult(
        initial_val_score=out.initial_val_score,
        best_val_score=best,
        final_val_score=best,
        best_parameters=dict(out.best_values),
        steps=steps,
        calls=out.calls,
        tokens=out.tokens,
        elapsed_s=out.elapsed_s,
        log_path=str(log_path) if log_path is not None else None,
        search=out.model_dump(),
    )
    if log_path is not None:
        _write_json(Path(log_path), result.model_dump())
    return result
