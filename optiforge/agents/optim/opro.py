"""OPRO: optimization by prompting (Yang et al., 2023).

The LLM sees the best past solutions with their scores, worst first and best last, plus
examples of the task, and proposes ``n`` new candidates per step. Duplicates (of each other
or of anything tried before) are dropped, the rest are scored with the user's objective,
and the parameters are set to the best solution seen so far. Works for numbers (a
regression fit) and text (an instruction for a prompt).

Without an objective, OPRO proposes one candidate per step and learns its score from
the next :meth:`OPRO.backward` call (``feedback`` must be a number).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from optiforge.agents.optim.base import Optimizer
from optiforge.agents.optim.checks import same_value
from optiforge.agents.optim.errors import OptimizerError, ReplyError
from optiforge.agents.optim.parsing import parse_suggestion
from optiforge.agents.optim.replies import prompt_chars, suggestion_schema
from optiforge.agents.optim.report import StepReport
from optiforge.llm import run_sync
from optiforge.llm.errors import ContextLengthError
from optiforge.llm.protocol import ChatClient
from optiforge.prompts import render_prompt

log = logging.getLogger("optiforge.agents.optim")

Objective = Callable[[dict[str, Any]], float] | Callable[[dict[str, Any]], Awaitable[float]]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, default=repr)


def _example_json(value: Any) -> str:
    if isinstance(value, bool):
        return "true"
    if isinstance(value, int | float):
        return "<number>"
    if isinstance(value, str):
        return '"<text>"'
    return json.dumps(value)


class OPRO(Optimizer):
    """Optimization by prompting over the parameters' values.

    Args:
        parameters: trainable nodes (numbers, text, lists...).
        llm: an ``optiforge.llm.LLM`` (or anything with the same ``chat``).
        objective: ``f(values) -> score`` (sync or async). ``values`` maps each parameter
            name, and its name without the ``:0`` suffix when unique, to a candidate value.
            Without it, scores come from :meth:`backward`.
        maximize: True if a higher score is better (accuracy); False for a loss.
        n: candidates asked for per step (OPRO samples several at temperature ~1).
        top_k: past solutions shown in the meta-prompt.
        task: what the variables are for (one paragraph).
        examples: task examples shown to the model, as ``(input, output)`` pairs or text.
        hint: extra guidance appended to the instructions (few-shot hints for small models).
        workers: objective calls run at once (threads, or tasks for an async objective).
        max_prompt_chars: the meta-prompt's length cap, in characters (about 3 per token),
            so it fits the model's context with room for the replies: the worst of the
            ``top_k`` solutions are left out to fit. The default fits a 4096-token context;
            None: no cap.
    """

    kind = "opro"

    def __init__(
        self,
        parameters: Iterable[Any],
        llm: ChatClient,
        *,
        objective: Objective | None = None,
        maximize: bool = True,
        n: int = 4,
        top_k: int = 20,
        task: str = "",
        examples: Sequence[Any] = (),
        hint: str = "",
        workers: int = 4,
        temperature: float = 1.0,
        max_tokens: int = 256,
        **kwargs: Any,
    ) -> None:
        super().__init__(parameters, llm, temperature=temperature, max_tokens=max_tokens, **kwargs)
        if n < 1 or top_k < 1 or workers < 1:
            raise OptimizerError("n, top_k and workers must be at least 1")
        self.objective = objective
        self.maximize = maximize
        self.n = n
        self.top_k = top_k
        self.task = task.strip() or "Find values of the variables that give the best score."
        self.examples = list(examples)
        self.hint = hint
        self.workers = workers
        #: Every scored solution: ``{"values": {...}, "score": float, "step": int}``.
        self.history: list[dict[str, Any]] = []
        #: Without an objective: candidates proposed but not tried yet (one is tried per step).
        self.queue: list[dict[str, Any]] = []

    # -- history ---------------------------------------------------------------------------
    def _better(self, a: float, b: float) -> bool:
        return a > b if self.maximize else a < b

    @property
    def best(self) -> dict[str, Any] | None:
        """The best history entry, or None before anything was scored."""
        best = None
        for h in self.history:
            if best is None or self._better(h["score"], best["score"]):
                best = h
        return best

    def observe(self, values: Mapping[str, Any], score: float) -> None:
        """Add a scored solution to the history (e.g. one evaluated outside the optimizer)."""
        try:
            score = float(score)
        except (TypeError, ValueError):
            raise OptimizerError(f"a score must be a number, got {score!r}") from None
        unknown = [k for k in values if k not in self.names]
        if unknown:
            raise OptimizerError(f"unknown parameter(s) {unknown}; known: {self.names}")
        self.history.append({"values": dict(values), "score": score, "step": self.step_count})

    def backward(self, output: Any, feedback: Any, **kwargs: Any) -> None:
        """Record ``feedback`` (a number: the score of the current values) in the history.

        ``output`` is not used: OPRO needs a score, not a graph.
        """
        if isinstance(feedback, str):
            try:
                feedback = float(feedback)
            except ValueError:
                raise OptimizerError(
                    f"OPRO needs a numeric score as feedback, got text {feedback[:60]!r}; "
                    "use OptoPrime or TextGrad for textual feedback"
                ) from None
        self.observe(self.values(), feedback)

    def _is_duplicate(self, cand: Mapping[str, Any], pool: Iterable[Mapping[str, Any]]) -> bool:
        return any(all(same_value(cand.get(k), old.get(k)) for k in self.names) for old in pool)

    def _objective_view(self, values: Mapping[str, Any]) -> dict[str, Any]:
        view = dict(values)
        bases: dict[str, list[str]] = {}
        for name in values:
            bases.setdefault(re.sub(r":\d+$", "", name), []).append(name)
        for base, full in bases.items():
            if len(full) == 1 and base not in view:
                view[base] = values[full[0]]
        return view

    # -- scoring ---------------------------------------------------------------------------
    def _score(self, candidates: list[dict[str, Any]]) -> list[float | Exception]:
        """Objective value of each candidate; an exception is returned, not raised."""
        objective = self.objective
        assert objective is not None
        views = [self._objective_view(c) for c in candidates]
        if inspect.iscoroutinefunction(objective):
            sem_holder: dict[str, asyncio.Semaphore] = {}

            async def one(v: dict[str, Any]) -> float | Exception:
                async with sem_holder["sem"]:
                    try:
                        return float(await objective(v))  # type: ignore[misc]
                    except Exception as exc:
                        return exc

            async def run_all() -> list[float | Exception]:
                sem_holder["sem"] = asyncio.Semaphore(self.workers)
                return list(await asyncio.gather(*(one(v) for v in views)))

            # One persistent loop for every call, so the objective's LLM connections are
            # reused (asyncio.run would make a new loop, and a new pool, each time).
            return run_sync(run_all())

        def call(v: dict[str, Any]) -> float | Exception:
            try:
                return float(objective(v))  # type: ignore[arg-type]
            except Exception as exc:
                return exc

        if self.workers == 1 or len(views) == 1:
            return [call(v) for v in views]
        with ThreadPoolExecutor(min(self.workers, len(views))) as pool:
            return list(pool.map(call, views))

    # -- the meta-prompt ---------------------------------------------------------------------
    def _render_variables(self) -> str:
        lines = []
        for p in self.parameters:
            v = p.value
            kind = "code" if p.kind == "code" else type(v).__name__
            line = f"- {self.name_of(p)} ({kind})"
            if p.description:
                line += f": {p.description}"
            if p.constraint:
                line += f" Constraint: {p.constraint}"
            lines.append(line)
        return "\n".join(lines)

    def _render_solution(self, values: Mapping[str, Any]) -> str:
        if len(self.names) == 1 and isinstance(values.get(self.names[0]), str):
            return f"text:\n<solution>\n{values[self.names[0]]}\n</solution>"
        return ", ".join(f"{k}={_fmt(values.get(k))}" for k in self.names)

    def meta_prompt(self) -> list[dict[str, str]]:
        """The chat messages for the next step (exposed for inspection and tests).

        The best ``top_k`` scored solutions are shown; under ``max_prompt_chars`` the worst
        of them are left out until the prompt fits (the best one always stays): a team's
        prompts run to thousands of characters each, so twenty of them would not fit a
        small model's context.
        """
        ranked = sorted(self.history, key=lambda h: h["score"], reverse=not self.maximize)
        shown = ranked[-self.top_k :]  # the best k, worst first and best last
        messages = self._meta_messages(shown)
        cap = self.max_prompt_chars
        # Drop the worst in halves, then one by one, so a long history costs few renders.
        while cap is not None and len(shown) > 1 and prompt_chars(messages) > cap:
            step = max(1, len(shown) // 2) if prompt_chars(messages) > 2 * cap else 1
            shown = shown[min(step, len(shown) - 1) :]
            messages = self._meta_messages(shown)
        self.warn_over_cap(messages, "only the best solution shown")
        return messages

    def _meta_messages(self, shown: list[dict[str, Any]]) -> list[dict[str, str]]:
        if shown:
            history = "\n\n".join(
                f"{self._render_solution(h['values'])}\nscore: {h['score']:.6g}" for h in shown
            )
        else:
            history = "(none yet: start from a sensible guess)"
        better = "higher" if self.maximize else "lower"
        direction = (
            f"Sorted by score from worst to best; a {better} score is better. "
            f"The last one is the best so far."
        )
        examples = ""
        if self.examples:
            rendered = []
            for ex in self.examples:
                if isinstance(ex, tuple | list) and len(ex) == 2:
                    rendered.append(f"Input: {ex[0]}\nExpected output: {ex[1]}")
                else:
                    rendered.append(str(ex))
            examples = "\n# Examples of the task\n" + "\n\n".join(rendered) + "\n"
        fields = ", ".join(
            f'"{self.name_of(p)}": {_example_json(p.value)}' for p in self.parameters
        )
        content = render_prompt(
            "optimizers/opro",
            task=self.task,
            variables=self._render_variables(),
            direction=direction,
            history=history,
            examples=examples,
            hint=self.hint,
            format='{"suggestion": {' + fields + "}}",
        )
        return [
            {"role": "system", "content": render_prompt("optimizers/opro_system")},
            {"role": "user", "content": content},
        ]

    # -- the step ------------------------------------------------------------------------------
    def _complete(self, raw: dict[str, Any]) -> dict[str, Any]:
        """A candidate names every parameter: missing ones keep their current value."""
        current = self.values()
        return {k: raw.get(k, current[k]) for k in self.names}

    def _propose(self, report: StepReport) -> tuple[str, dict[str, Any]]:
        if self.objective is not None and not self.history:
            # Score the starting point so the first meta-prompt has something to improve on.
            start = self.values()
            [s] = self._score([start])
            if isinstance(s, Exception):
                raise OptimizerError(f"the objective failed on the current values: {s}") from s
            self.observe(start, s)
        if self.objective is None:
            seen = [h["values"] for h in self.history]
            while self.queue:
                cand = self.queue.pop(0)
                if not self._is_duplicate(cand, seen):
                    report.detail["from_queue"] = True
                    return (
                        "next candidate proposed by OPRO earlier; scored by the next backward()",
                        cand,
                    )
        schema = suggestion_schema(self.named_parameters, reasoning=False)
        messages = self.meta_prompt()
        candidates: list[dict[str, Any]] = []
        for attempt in range(1, self.max_attempts + 1):
            report.attempts = attempt
            try:
                texts, parsed = self._chat(
                    messages,
                    schema=schema,
                    n=self.n,
                    seed=(self.seed or 0) + self.step_count * 101 + attempt,
                )
            except ContextLengthError as exc:
                raise ReplyError(self.context_error(messages, exc)) from None
            seen = [h["values"] for h in self.history]
            dupes = 0
            for text, obj in zip(texts, parsed, strict=False):
                try:
                    _, raw = parse_suggestion(obj if obj else text, self.names)
                    values, errors = self.check(raw)
                    if errors:
                        raise ReplyError("; ".join(errors))
                except ReplyError as exc:
                    report.errors.append(str(exc))
                    log.warning("opro step %d: unusable candidate: %s", self.step_count, exc)
                    continue
                cand = self._complete(values)
                if self._is_duplicate(cand, seen + candidates):
                    dupes += 1
                    continue
                candidates.append(cand)
            report.detail["duplicates"] = report.detail.get("duplicates", 0) + dupes
            if candidates:
                break
            log.warning(
                "opro step %d attempt %d/%d: no new candidate (%d duplicates)",
                self.step_count,
                attempt,
                self.max_attempts,
                dupes,
            )
            if dupes and not report.errors[-1:]:
                report.errors.append(f"all {dupes} candidate(s) repeated earlier solutions")
        if not candidates:
            raise ReplyError(f"no new, valid candidate in {self.max_attempts} attempt(s)")

        if self.objective is None:
            chosen, self.queue = candidates[0], candidates[1:]
            report.detail["candidates"] = [{"values": c, "score": None} for c in candidates]
            return "proposed by OPRO; scored by the next backward()", chosen

        scores = self._score(candidates)
        scored = []
        for cand, s in zip(candidates, scores, strict=True):
            if isinstance(s, Exception):
                report.errors.append(f"objective failed on {cand}: {s}")
                log.warning("opro step %d: objective failed on %s: %s", self.step_count, cand, s)
                scored.append({"values": cand, "score": None})
                continue
            self.observe(cand, s)
            scored.append({"values": cand, "score": s})
        report.detail["candidates"] = scored
        best = self.best
        assert best is not None
        report.detail["best_score"] = best["score"]
        improved = [
            c
            for c in scored
            if c["score"] is not None
            and c["score"] == best["score"]
            and best["step"] == self.step_count
        ]
        why = (
            f"new best score {best['score']:.6g} among {len(candidates)} candidate(s)"
            if improved
            else f"no candidate beat the best score {best['score']:.6g}; keeping the best solution"
        )
        return why, dict(best["values"])

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["history"] = self.history
        state["queue"] = self.queue
        state["maximize"] = self.maximize
        return state

    def load_state_dict(self, state: Mapping[str, Any], *, restore_values: bool = True) -> None:
        super().load_state_dict(state, restore_values=restore_values)
        history = state.get("history", [])
        for h in history:
            if not isinstance(h, dict) or "values" not in h or "score" not in h:
                raise OptimizerError("state history entries need 'values' and 'score'")
        if "maximize" in state and bool(state["maximize"]) != self.maximize:
            raise OptimizerError(
                f"state was saved with maximize={state['maximize']}, this optimizer has "
                f"maximize={self.maximize}"
            )
        self.history = [dict(h) for h in history]
        self.queue = [dict(c) for c in state.get("queue", [])]
