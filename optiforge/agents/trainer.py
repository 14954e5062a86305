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

import asyncio
import contextvars
import inspect
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from optiforge.agents.optim import params as P
from optiforge.agents.optim.base import Optimizer, _jsonable
from optiforge.agents.optim.errors import OptimizerError

log = logging.getLogger("optiforge.agents.trainer")

_INPUT_KEYS = ("input", "x", "question", "text", "inputs")
_TARGET_KEYS = ("target", "y", "label", "answer", "output", "expected")


class Evaluation(BaseModel):
    """One example run through the module and judged."""

    index: int
    output: Any = None
    score: float | None = None
    feedback: str = ""
    error: str | None = None


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


def _split_example(example: Any) -> tuple[Any, Any]:
    """``(input, target)`` from a pair, a mapping with input/target-like keys, or a
    pydantic model; raise OptimizerError otherwise."""
    if isinstance(example, BaseModel):
        example = example.model_dump()
    if isinstance(example, Mapping):
        x = next((example[k] for k in _INPUT_KEYS if k in example), None)
        y = next((example[k] for k in _TARGET_KEYS if k in example), None)
        if x is None:
            raise OptimizerError(
                f"a dataset example needs one of the keys {_INPUT_KEYS}; got {sorted(example)}"
            )
        return x, y
    if isinstance(example, tuple | list) and len(example) == 2:
        return example[0], example[1]
    raise OptimizerError(
        "dataset examples must be (input, target) pairs or dicts with 'input' and 'target' "
        f"keys, got {type(example).__name__}"
    )


def _unwrap(value: Any) -> Any:
    return value.data if hasattr(value, "backward") and hasattr(value, "data") else value


def _parse_judgement(out: Any) -> tuple[float | None, str]:
    """A judge returns a score, a feedback text, or ``(score, feedback)``."""
    if isinstance(out, tuple) and len(out) == 2:
        score, text = out
    elif isinstance(out, str):
        score, text = None, out
    elif isinstance(out, bool):
        score, text = float(out), ""
    elif isinstance(out, int | float):
        score, text = out, ""
    else:
        raise OptimizerError(
            "the feedback function must return a score, a feedback string or (score, feedback); "
            f"got {type(out).__name__}"
        )
    if score is not None:
        score = float(score)
        if not math.isfinite(score):
            raise OptimizerError(f"the feedback function returned a non-finite score {score}")
    text = "" if text is None else str(text)
    if not text and score is not None:
        text = f"Score: {score:.4g}"
    return score, text


def _mean(scores: Sequence[float | None]) -> float | None:
    vals = [s for s in scores if s is not None]
    return sum(vals) / len(vals) if vals else None


class _Runner:
    """Runs module + judge on examples in parallel and collects outputs and feedback."""

    def __init__(
        self, module: Any, judge: Callable[..., Any], workers: int, error_score: float | None
    ):
        self.module = module
        self.judge = judge
        self.workers = workers
        self.error_score = error_score
        forward = getattr(module, "forward", module)
        self.is_async = inspect.iscoroutinefunction(forward) or inspect.iscoroutinefunction(module)
        self.judge_async = inspect.iscoroutinefunction(judge)
        self._loop: asyncio.AbstractEventLoop | None = None

    def close(self) -> None:
        """Close the event loop used for async modules."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def _call_module(self, x: Any) -> Any:
        if isinstance(x, Mapping):
            return self.module(**x)
        if isinstance(x, tuple):
            return self.module(*x)
        return self.module(x)

    def _judge_result(self, index: int, output: Any, y: Any, judged: Any) -> Evaluation:
        score, text = _parse_judgement(judged)
        return Evaluation(
            index=index, output=_jsonable(_unwrap(output)), score=score, feedback=text
        )

    def _error(self, index: int, exc: Exception) -> Evaluation:
        return Evaluation(
            index=index,
            score=self.error_score,
            feedback=f"The program raised {type(exc).__name__}: {exc}",
            error=f"{type(exc).__name__}: {exc}",
        )

    def _one_sync(self, index: int, example: Any) -> tuple[Evaluation, Any]:
        x, y = _split_example(example)
        try:
            output = self._call_module(x)
        except OptimizerError:
            raise
        except Exception as exc:
            return self._error(index, exc), getattr(exc, "exception_node", None)
        judged = self.judge(_unwrap(output), y)
        if inspect.isawaitable(judged):
            judged = asyncio.run(judged)  # type: ignore[arg-type]
        return self._judge_result(index, output, y, judged), output

    async def _one_async(
        self, index: int, example: Any, sem: asyncio.Semaphore
    ) -> tuple[Evaluation, Any]:
        async with sem:
            x, y = _split_example(example)
            try:
                output = self._call_module(x)
                if inspect.isawaitable(output):
                    output = await output
            except OptimizerError:
                raise
            except Exception as exc:
                return self._error(index, exc), getattr(exc, "exception_node", None)
            judged = self.judge(_unwrap(output), y)
            if inspect.isawaitable(judged):
                judged = await judged
            return self._judge_result(index, output, y, judged), output

    def run(
        self, items: Sequence[tuple[int, Any]], *, record: bool
    ) -> list[tuple[Evaluation, Any]]:
        """Evaluate ``(index, example)`` items; with ``record=False`` no graph is kept."""
        from optiforge.trace import context as trace_context

        def in_mode(fn: Callable[[], Any]) -> Any:
            with trace_context.tracing(record):
                return fn()

        if self.is_async:

            async def main() -> list[tuple[Evaluation, Any]]:
                sem = asyncio.Semaphore(self.workers)
                with trace_context.tracing(record):
                    return list(
                        await asyncio.gather(*(self._one_async(i, ex, sem) for i, ex in items))
                    )

            try:
                asyncio.get_running_loop()
            except RuntimeError:
                # One loop for the whole run: async clients keep their connections per loop.
                if self._loop is None or self._loop.is_closed():
                    self._loop = asyncio.new_event_loop()
                return self._loop.run_until_complete(main())
            with ThreadPoolExecutor(1) as pool:
                return pool.submit(asyncio.run, main()).result()
        if self.workers == 1 or len(items) <= 1:
            return [in_mode(lambda i=i, ex=ex: self._one_sync(i, ex)) for i, ex in items]
        ctx = contextvars.copy_context()
        with ThreadPoolExecutor(min(self.workers, len(items))) as pool:
            futures = [
                pool.submit(ctx.copy().run, in_mode, lambda i=i, ex=ex: self._one_sync(i, ex))
                for i, ex in items
            ]
            return [f.result() for f in futures]


def _usage_total(clients: Sequence[Any]) -> tuple[int, int]:
    calls = tokens = 0
    seen: set[int] = set()
    for c in clients:
        usage = getattr(c, "usage", None)
        if usage is None or id(c) in seen:
            continue
        seen.add(id(c))
        calls += int(getattr(usage, "calls", 0))
        tokens += int(getattr(usage, "tokens", 0))
    return calls, tokens


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
    runner = _Runner(module, loss_or_feedback_fn, workers, error_score)
    try:
        evals = [e for e, _ in runner.run(list(enumerate(dataset)), record=False)]
    finally:
        runner.close()
    return _mean([e.score for e in evals]), evals


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

    Returns:
        :class:`TrainResult` with the scores, the best parameters and the per-step log.
    """
    if epochs < 1 or batch_size < 1 or workers < 1:
        raise OptimizerError("epochs, batch_size and workers must be at least 1")
    data = list(dataset)
    if not data:
        raise OptimizerError("the training set is empty")
    for ex in data[:1] + list(val_set or [])[:1]:
        _split_example(ex)  # fail fast on a malformed dataset, before any LLM call
    val = list(val_set) if val_set is not None else None
    wants_score = getattr(optimizer, "kind", "") == "opro"
    runner = _Runner(module, loss_or_feedback_fn, workers, error_score)
    clients = [optimizer.llm, *llms]
    base_calls, base_tokens = _usage_total(clients)
    start = time.perf_counter()
    rng = random.Random(seed)
    better = (lambda a, b: a > b) if maximize else (lambda a, b: a < b)
    path = Path(log_path) if log_path is not None else None
    result = TrainResult(log_path=str(path) if path else None)

    def validate() -> float | None:
        if not val:
            return None
        evals = runner.run(list(enumerate(val)), record=False)
        score = _mean([e.score for e, _ in evals])
        if score is None:
            raise OptimizerError(
                "validation needs scores: make the feedback function return a number or "
                "(score, feedback)"
            )
        return score

    def write_log() -> None:
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(result.model_dump(), indent=2, default=repr), encoding="utf-8")
        tmp.replace(path)

    steps_per_epoch = math.ceil(len(data) / batch_size)
    total_steps = epochs * steps_per_epoch
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
        best = validate()
        result.initial_val_score = best
        result.best_val_score = best
        result.best_parameters = {k: _jsonable(v) for k, v in optimizer.values().items()}
        best_values = optimizer.values()
        since_best = 0
        step_no = 0
        with bar:
            task = bar.add_task("train", total=total_steps, status=f"val={best}")
            for epoch in range(1, epochs + 1):
                order = list(range(len(data)))
                if shuffle:
                    rng.shuffle(order)
                for b in range(steps_per_epoch):
                    batch = order[b * batch_size : (b + 1) * batch_size]
                    step_no += 1
                    t0 = time.perf_counter()
                    optimizer.zero_feedback()
                    evals = runner.run([(i, data[i]) for i in batch], record=not wants_score)
                    train_score = _mean([e.score for e, _ in evals])
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
                        result.best_parameters = {k: _jsonable(v) for k, v in best_values.items()}
                        since_best = 0
                    else:
                        since_best += 1
                    calls, tokens = _usage_total(clients)
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
                            parameters={k: _jsonable(v) for k, v in optimizer.values().items()},
                            optimizer_calls=report.calls,
                            optimizer_tokens=report.prompt_tokens + report.completion_tokens,
                            total_calls=calls - base_calls,
                            total_tokens=tokens - base_tokens,
                            elapsed_s=round(time.perf_counter() - t0, 3),
                        )
                    )
                    write_log()
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
                    if patience is not None and since_best >= patience:
                        result.stopped_early = True
                        break
                if result.stopped_early:
                    break
        if val is None and result.steps and not wants_score:
            # The last step's values were never scored: score them on the last batch so that
            # keep_best compares like with like instead of discarding them unseen.
            last = result.steps[-1]
            evals = runner.run([(i, data[i]) for i in last.batch], record=False)
            final = _mean([e.score for e, _ in evals])
            if final is not None and (
                result.best_val_score is None or better(final, result.best_val_score)
            ):
                result.best_val_score = final
                best_values = optimizer.values()
                result.best_parameters = {k: _jsonable(v) for k, v in best_values.items()}
        if keep_best and result.best_val_score is not None:
            for name, value in best_values.items():
                P.set_value(optimizer.parameter(name), value)
        result.final_val_score = (
            result.best_val_score
            if keep_best
            else (result.steps[-1].val_score if result.steps else best)
        )
        calls, tokens = _usage_total(clients)
        result.calls = calls - base_calls
        result.tokens = tokens - base_tokens
        result.elapsed_s = round(time.perf_counter() - start, 3)
        write_log()
    finally:
        runner.close()
    return result
