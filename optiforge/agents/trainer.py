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


#: Format tag of the file :func:`train` writes to ``state_path``.
STATE_FORMAT = "optiforge.train-state/1"


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
            module, data, loss_or_feedback_fn, optimizer, epochs, val, llms, state_path, log_path
        )
    wants_score = getattr(optimizer, "kind", "") == "opro"
    runner = Rollouts(module, loss_or_feedback_fn, workers, error_score)
    clients = [optimizer.llm, *llms]
    base_calls, base_tokens = usage_total(clients)
    start = time.perf_counter()
    rng = random.Random(seed)
    better = (lambda a, b: a > b) if maximize else (lambda a, b: a < b)
    path = Path(log_path) if log_path is not None else None
    result = TrainResult(log_path=str(path) if path else None)
    spath = Path(state_path) if state_path is not None else None
    fingerprint = _fingerprint(data, val, epochs, batch_size, seed, shuffle)
    resume = _read_state(spath, optimizer, fingerprint) if spath is not None else None

    def validate() -> float | None:
        if not val:
            return None
        evals = runner.run(list(enumerate(val)), record=False)
        score = mean([e.score for e, _ in evals])
        if score is None:
            raise OptimizerError(
                "validation needs scores: make the feedback function return a number or "
                "(score, feedback)"
            )
        return score

    def write_log() -> None:
        if path is not None:
            _write_json(path, result.model_dump())

    def write_state(step_no: int, since_best: int, best_values: dict[str, Any]) -> None:
        if spath is not None:
            _write_json(
                spath,
                {
                    "format": STATE_FORMAT,
                    "fingerprint": fingerprint,
                    "step": step_no,
                    "since_best": since_best,
                    "best_values": {k: jsonable(v) for k, v in best_values.items()},
                    "result": result.model_dump(),
                    "optimizer": optimizer.state_dict(),
                },
            )

    steps_per_epoch = math.ceil(len(data) / batch_size)
    total_steps = (
        epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    )
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        disable=not progress,
        transient=False,
    )
    try:
        done = 0
        if resume is not None:
            result = TrainResult.model_validate(
                {**resume["result"], "log_path": result.log_path, "stopped_early": False}
            )
            best = result.best_val_score
            best_values = dict(resume["best_values"])
            since_best = int(resume["since_best"])
            done = result.resumed_steps = int(resume["step"])
            log.info("resumed training from %s after step %d", spath, done)
        else:
            best = validate()
            result.initial_val_score = best
            result.best_val_score = best
            result.best_parameters = {k: jsonable(v) for k, v in optimizer.values().items()}
            best_values = optimizer.values()
            since_best = 0
        step_no = 0
        with bar:
            task = bar.add_task("train", total=total_steps, status=f"val={best}", completed=done)
            for epoch in range(1, epochs + 1):
                order = list(range(len(data)))
                if shuffle:
                    rng.shuffle(order)
                for b in range(steps_per_epoch):
                    batch = order[b * batch_size : (b + 1) * batch_size]
                    step_no += 1
                    if step_no <= done:
                        continue  # finished before the run was resumed
                    t0 = time.perf_counter()
                    optimizer.zero_feedback()
                    evals = runner.run([(i, data[i]) for i in batch], record=not wants_score)
                    train_score = mean([e.score for e, _ in evals])
                    if wants_score:
                        if train_score is None:
                            raise OptimizerError(
                                "OPRO needs scores: the feedback function returned none"
                            )
                        optimizer.backward(None, train_score)
                    else:
                        for e, output in evals:
                            if output is None or not hasattr(output, "backward"):
                                continue
                            optimizer.backward(output, e.feedback)
                    before_step = optimizer.values()
                    report = optimizer.step()
                    val_score = validate()
                    # Without a validation set the batch score is the best signal there is; it
                    # measures the values *before* this step.
                    current = val_score if val is not None else train_score
                    scored_values = optimizer.values() if val is not None else before_step
                    improved = False
                    if current is not None and (
                        result.best_val_score is None or better(current, result.best_val_score)
                    ):
                        improved = True
                        result.best_val_score = current
                        best_values = scored_values
                        result.best_parameters = {k: jsonable(v) for k, v in best_values.items()}
                        since_best = 0
                    else:
                        since_best += 1
                    calls, tokens = usage_total(clients)
                    result.steps.append(
                        StepLog(
                            epoch=epoch,
                            step=step_no,
                            batch=batch,
                            train_score=train_score,
                            val_score=val_score,
                            best_val_score=result.best_val_score,
                            improved=improved,
                            feedback=[e.feedback for e, _ in evals],
                            changes=[c.model_dump() for c in report.changes],
                            errors=list(report.errors),
                            parameters={k: jsonable(v) for k, v in optimizer.values().items()},
                            optimizer_calls=report.calls,
                            optimizer_tokens=report.prompt_tokens + report.completion_tokens,
                            total_calls=calls - base_calls,
                            total_tokens=tokens - base_tokens,
                            elapsed_s=round(time.perf_counter() - t0, 3),
                        )
                    )
                    write_log()
                    write_state(step_no, since_best, best_values)
                    log.info(
                        "step %d: train=%s val=%s best=%s changes=%d",
                        step_no,
                        train_score,
                        val_score,
                        result.best_val_score,
                        len(report.changes),
                    )
                    bar.update(
                        task, advance=1, status=f"val={val_score} best={result.best_val_score}"
                    )
                    if (patience is not None and since_best >= patience) or (
                        max_steps is not None and step_no >= max_steps
                    ):
                        result.stopped_early = True
                        break
                if result.stopped_early:
                    break
        if val is None and result.steps and not wants_score:
            # The last step's values were never scored: score them on the last batch so that
            # keep_best compares like with like instead of discarding them unseen.
            last = result.steps[-1]
            evals = runner.run([(i, data[i]) for i in last.batch], record=False)
            final = mean([e.score for e, _ in evals])
            if final is not None and (
                result.best_val_score is None or better(final, result.best_val_score)
            ):
                result.best_val_score = final
                best_values = optimizer.values()
                result.best_parameters = {k: jsonable(v) for k, v in best_values.items()}
        if keep_best and result.best_val_score is not None:
            for name, value in best_values.items():
                optimizer.parameter(name).set(value)
        result.final_val_score = (
            result.best_val_score
            if keep_best
            else (result.steps[-1].val_score if result.steps else best)
        )
        calls, tokens = usage_total(clients)
        result.calls = calls - base_calls
        result.tokens = tokens - base_tokens
        result.elapsed_s = round(time.perf_counter() - start, 3)
        write_log()
    finally:
        runner.close()
    return result


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
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise OptimizerError(f"{path} is not a training state file ({STATE_FORMAT})")
    if state.get("fingerprint") != fingerprint:
        raise OptimizerError(
            f"the training state {path} was written for other data or settings (epochs, "
            "batch size, seed); use another state file or delete it to start over"
        )
    optimizer.load_state_dict(state["optimizer"])
    return state


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
) -> TrainResult:
    """:func:`train` with GEPA: run its search and report it as a :class:`TrainResult`."""
    budget = optimizer.max_metric_calls or epochs * (2 * len(data) + len(val or data))
    out = optimizer.optimize(
        module, data, fn, val, max_metric_calls=budget, state_path=state_path, llms=llms
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
