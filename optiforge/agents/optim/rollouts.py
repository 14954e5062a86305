"""Run a traced program and a judge over examples in parallel: the rollouts optimizers learn from.

Shared by :func:`optiforge.agents.trainer.train` and :class:`optiforge.agents.optim.GEPA`:
:class:`Rollouts` calls the module on each example (threads, or tasks on one event loop
when the module is async, so its LLM calls overlap), optionally records the trace graph,
and turns each judge result into an :class:`Evaluation` (score + feedback text). An
example whose run raised becomes feedback too, never an exception (an
:class:`~optiforge.agents.optim.errors.OptimizerError` stops the run instead).

A run that records no graph may happen elsewhere: ``run(items, record=False,
remote=fn, values=v)`` calls ``await fn(v, input, target)`` instead of the module (a
:data:`RemoteRun`, e.g. ``optiforge tune --executor ray``'s, which runs the team with
prompt values ``v`` on a Ray worker) and judges its output exactly as the module's.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel

from optiforge.agents.optim.base import jsonable
from optiforge.agents.optim.errors import OptimizerError
from optiforge.llm import run_sync

#: ``(values, input, target) -> output``: runs the program with parameter values ``values``
#: on one example somewhere else (no graph is recorded there); the output is judged as the
#: module's would be.
RemoteRun = Callable[[Mapping[str, Any], Any, Any], Awaitable[Any]]

INPUT_KEYS = ("input", "x", "question", "text", "inputs")
TARGET_KEYS = ("target", "y", "label", "answer", "output", "expected")


class Evaluation(BaseModel):
    """One example run through the module and judged."""

    index: int
    output: Any = None
    score: float | None = None
    feedback: str = ""
    error: str | None = None


def split_example(example: Any) -> tuple[Any, Any]:
    """``(input, target)`` from a pair, a mapping with input/target-like keys, or a
    pydantic model; raise OptimizerError otherwise."""
    if isinstance(example, BaseModel):
        example = example.model_dump()
    if isinstance(example, Mapping):
        x = next((example[k] for k in INPUT_KEYS if k in example), None)
        y = next((example[k] for k in TARGET_KEYS if k in example), None)
        if x is None:
            raise OptimizerError(
                f"a dataset example needs one of the keys {INPUT_KEYS}; got {sorted(example)}"
            )
        return x, y
    if isinstance(example, tuple | list) and len(example) == 2:
        return example[0], example[1]
    raise OptimizerError(
        "dataset examples must be (input, target) pairs or dicts with 'input' and 'target' "
        f"keys, got {type(example).__name__}"
    )


def unwrap(value: Any) -> Any:
    return value.data if hasattr(value, "backward") and hasattr(value, "data") else value


def parse_judgement(out: Any) -> tuple[float | None, str]:
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


def mean(scores: Sequence[float | None]) -> float | None:
    vals = [s for s in scores if s is not None]
    return sum(vals) / len(vals) if vals else None


class Rollouts:
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

    def close(self) -> None:
        """Nothing to release: async work runs on the shared loop (``optiforge.llm.run_sync``)."""

    def _call_module(self, x: Any) -> Any:
        if isinstance(x, Mapping):
            return self.module(**x)
        if isinstance(x, tuple):
            return self.module(*x)
        return self.module(x)

    def _judge_result(self, index: int, output: Any, y: Any, judged: Any) -> Evaluation:
        score, text = parse_judgement(judged)
        return Evaluation(index=index, output=jsonable(unwrap(output)), score=score, feedback=text)

    def _error(self, index: int, exc: Exception) -> Evaluation:
        return Evaluation(
            index=index,
            score=self.error_score,
            feedback=f"The program raised {type(exc).__name__}: {exc}",
            error=f"{type(exc).__name__}: {exc}",
        )

    def _one_sync(self, index: int, example: Any) -> tuple[Evaluation, Any]:
        x, y = split_example(example)
        try:
            output = self._call_module(x)
        except OptimizerError:
            raise
        except Exception as exc:
            return self._error(index, exc), getattr(exc, "exception_node", None)
        judged = self.judge(unwrap(output), y)
        if inspect.isawaitable(judged):
            judged = run_sync(judged)  # type: ignore[arg-type]
        return self._judge_result(index, output, y, judged), output

    async def _one_async(
        self,
        index: int,
        example: Any,
        sem: asyncio.Semaphore,
        remote: Callable[[Any, Any], Awaitable[Any]] | None = None,
    ) -> tuple[Evaluation, Any]:
        async with sem:
            x, y = split_example(example)
            try:
                output = remote(x, y) if remote is not None else self._call_module(x)
                if inspect.isawaitable(output):
                    output = await output
            except OptimizerError:
                raise
            except Exception as exc:
                return self._error(index, exc), getattr(exc, "exception_node", None)
            judged = self.judge(unwrap(output), y)
            if inspect.isawaitable(judged):
                judged = await judged
            return self._judge_result(index, output, y, judged), output

    def run(
        self,
        items: Sequence[tuple[int, Any]],
        *,
        record: bool,
        remote: RemoteRun | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> list[tuple[Evaluation, Any]]:
        """Evaluate ``(index, example)`` items; with ``record=False`` no graph is kept.

        ``remote`` (used only with ``record=False``: a recorded run needs its graph here)
        runs each example as ``remote(values, input, target)`` instead of the module, at
        most ``workers`` at once."""
        from optiforge.trace import context as trace_context

        def in_mode(fn: Callable[[], Any]) -> Any:
            with trace_context.tracing(record):
                return fn()

        elsewhere = None
        if remote is not None and not record:
            fixed = dict(values or {})

            def elsewhere(x: Any, y: Any) -> Awaitable[Any]:
                return remote(fixed, x, y)

        if self.is_async or elsewhere is not None:

            async def main() -> list[tuple[Evaluation, Any]]:
                sem = asyncio.Semaphore(self.workers)
                with trace_context.tracing(record):
                    return list(
                        await asyncio.gather(
                            *(self._one_async(i, ex, sem, elsewhere) for i, ex in items)
                        )
                    )

            # The one persistent loop: async clients keep their connections across runs.
            return run_sync(main())
        if self.workers == 1 or len(items) <= 1:
            return [in_mode(lambda i=i, ex=ex: self._one_sync(i, ex)) for i, ex in items]
        ctx = contextvars.copy_context()
        with ThreadPoolExecutor(min(self.workers, len(items))) as pool:
            futures = [
                pool.submit(ctx.copy().run, in_mode, lambda i=i, ex=ex: self._one_sync(i, ex))
                for i, ex in items
            ]
            return [f.result() for f in futures]


def usage_total(clients: Sequence[Any]) -> tuple[int, int]:
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
