"""The contract every optimizer shares: parameters, feedback in, checked updates out.

An optimizer holds trainable parameter nodes and an LLM client::

    opt.zero_feedback()               # forget feedback from the last run
    out = program(x)                  # traced run
    opt.backward(out, "too small")    # feedback flows back to the parameters
    report = opt.step()               # ask the LLM, check and apply new values
    print(report)                     # what changed and why

A subclass implements :meth:`Optimizer._propose`; ``step()`` never applies a value that
failed its type check. Talking to the LLM (reply schema, retries) is in
:mod:`~optiforge.agents.optim.replies`, the step report in
:mod:`~optiforge.agents.optim.report`, and the JSON state behind :meth:`Optimizer.save` and
:meth:`Optimizer.load` in :mod:`~optiforge.agents.optim.state_io`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from optiforge.agents.optim import state_io
from optiforge.agents.optim.checks import same_value, validate
from optiforge.agents.optim.errors import OptimizerError, ReplyError
from optiforge.agents.optim.params import backward, collect, unique_names
from optiforge.agents.optim.replies import (
    DEFAULT_MAX_PROMPT_CHARS,
    AskingLLM,
    check_prompt_cap,
    jsonable,
    suggestion_schema,
)
from optiforge.agents.optim.report import Change, StepReport
from optiforge.agents.optim.state_io import LEGACY_STATE_VERSION
from optiforge.llm.protocol import ChatClient
from optiforge.trace import Module, ParameterNode

# The names this module has always offered (subclasses and callers import them from here).
__all__ = [
    "LEGACY_STATE_VERSION",
    "Change",
    "Optimizer",
    "StepReport",
    "jsonable",
    "suggestion_schema",
]

log = logging.getLogger("optiforge.agents.optim")


class Optimizer(AskingLLM):
    """Base class: parameters, an LLM, feedback plumbing, checked updates and JSON state.

    Subclasses implement :meth:`_propose`, which returns ``(reasoning, {name: value})`` or
    raises :class:`ReplyError` (usually through :meth:`_ask`), and may extend
    :meth:`state_dict` / :meth:`load_state_dict` and :meth:`_after_step`.
    """

    kind = "optimizer"

    def __init__(
        self,
        parameters: Iterable[ParameterNode] | Module,
        llm: ChatClient,
        *,
        max_attempts: int = 3,
        temperature: float = 0.0,
        max_tokens: int = 768,
        seed: int | None = 0,
        structured: bool = True,
        tag: str | None = None,
        retry_temperature: float = 0.7,
        max_prompt_chars: int | None = DEFAULT_MAX_PROMPT_CHARS,
    ) -> None:
        params = collect(parameters)
        if not params:
            raise OptimizerError(
                "no trainable parameters: create them with node(value, trainable=True) or "
                "@bundle(trainable=True), and pass them (or module.parameters()) to the optimizer"
            )
        if max_attempts < 1:
            raise OptimizerError("max_attempts must be at least 1")
        self.parameters: list[ParameterNode] = params
        # The same unique names the trace renderer shows in #Variables (``offset``,
        # ``__code_scale``; ``param0``, ``param1`` when two share a name).
        self._name_of: dict[ParameterNode, str] = unique_names(params)
        self.llm: ChatClient = llm
        self.max_attempts = max_attempts
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self.structured = structured
        self.retry_temperature = retry_temperature
        #: The cap on each prompt, in characters (None: no cap): each optimizer shortens
        #: what it shows to fit, and a re-ask repeats only the latest reply, cut to fit.
        self.max_prompt_chars = check_prompt_cap(max_prompt_chars)
        self.tag = tag or f"optim.{self.kind}"
        self.step_count = 0
        #: One dict per step (``StepReport.model_dump()``), oldest first.
        self.log: list[dict[str, Any]] = []

    # -- parameters and feedback ------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """Parameter names, in order."""
        return [self._name_of[p] for p in self.parameters]

    def name_of(self, p: ParameterNode) -> str:
        """The unique name this optimizer (and its prompts) use for parameter ``p``."""
        return self._name_of[p]

    @property
    def named_parameters(self) -> dict[str, ParameterNode]:
        """``{name: parameter}`` in order."""
        return {self._name_of[p]: p for p in self.parameters}

    def parameter(self, name: str) -> ParameterNode:
        """The parameter called ``name``; OptimizerError if unknown."""
        for p in self.parameters:
            if self._name_of[p] == name:
                return p
        raise OptimizerError(f"no parameter named {name!r}; known: {self.names}")

    def values(self) -> dict[str, Any]:
        """Current ``{name: value}`` of every parameter."""
        return {self._name_of[p]: p.value for p in self.parameters}

    def zero_feedback(self) -> None:
        """Forget the feedback collected since the last step."""
        for p in self.parameters:
            p.zero_feedback()

    def propagator(self) -> Any:
        """The propagator used by :meth:`backward` (None: the trace default)."""
        return None

    def backward(self, output: Any, feedback: Any, **kwargs: Any) -> Any:
        """Send ``feedback`` (text, or anything ``str()`` makes readable) from ``output``
        back through its graph to the parameters."""
        return backward(output, feedback, propagator=self.propagator(), **kwargs)

    # -- the step: propose, check, update --------------------------------------------------
    def _propose(self, report: StepReport) -> tuple[str, dict[str, Any]]:  # pragma: no cover
        raise NotImplementedError

    def step(self) -> StepReport:
        """Ask the LLM for new values, check them, apply them, and say what changed and why.

        The feedback collected since the last step is consumed: afterwards every parameter's
        feedback is cleared (as by :meth:`zero_feedback`).

        A step whose replies were all unusable returns ``ok=False`` with the reasons in
        ``errors`` and leaves every parameter unchanged.
        """
        start = time.perf_counter()
        self.step_count += 1
        report = StepReport(step=self.step_count, optimizer=self.kind)
        before = self._usage()
        try:
            reasoning, values = self._propose(report)
        except ReplyError as exc:
            report.ok = False
            if not report.errors or report.errors[-1] != str(exc):
                report.errors.append(str(exc))
            log.warning("%s step %d changed nothing: %s", self.kind, self.step_count, exc)
        else:
            report.reasoning = reasoning
            self._apply(values, reasoning, report)
        after = self._usage()
        report.calls = after[0] - before[0]
        report.prompt_tokens = after[1] - before[1]
        report.completion_tokens = after[2] - before[2]
        report.elapsed_s = round(time.perf_counter() - start, 3)
        self._after_step(report)
        # Feedback was used (or judged unusable): drop it and the graphs it keeps alive, so
        # the next step sees only new feedback.
        self.zero_feedback()
        self.log.append(json.loads(report.model_dump_json(fallback=repr)))
        return report

    def _after_step(self, report: StepReport) -> None:
        """Hook for subclasses (memory updates)."""

    def check(self, values: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Type-check ``{name: raw value}``: returns the converted values and the errors."""
        ok: dict[str, Any] = {}
        errors: list[str] = []
        for name, raw in values.items():
            p = self.parameter(name)
            try:
                ok[name] = validate(p, raw)
            except ReplyError as exc:
                errors.append(f"{name}: {exc}")
        return ok, errors

    def _apply(self, values: Mapping[str, Any], reasoning: str, report: StepReport) -> None:
        for name, new in values.items():
            p = self.parameter(name)
            old = p.value
            if same_value(old, new):
                continue
            p.set(new, validate=False)  # check() validated it (code: compiled) already
            reason = report.detail.get("reasons", {}).get(name, reasoning)
            report.changes.append(
                Change(name=name, old=jsonable(old), new=jsonable(new), reason=reason)
            )

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run later, as JSON-ready data: a state
        document (:mod:`optiforge.trace.state`, kind ``"optimizer"``) with the parameter
        values, ``optimizer`` (the class's kind), ``step_count`` and ``log``; subclasses
        add their memory."""
        return state_io.optimizer_state(self)

    def load_state_dict(self, state: Mapping[str, Any], *, restore_values: bool = True) -> None:
        """Restore :meth:`state_dict` output (or a version-1 optimizer state from before the
        shared format). Parameter values are set by name (unknown names raise
        OptimizerError, so a state file from another program is not half-applied)."""
        state_io.restore_optimizer_state(self, state, restore_values=restore_values)

    def save(self, path: str | Path) -> Path:
        """Write :meth:`state_dict` as JSON to ``path`` (atomically) and return the path."""
        return state_io.write_state(path, self.state_dict())

    def load(self, path: str | Path, *, restore_values: bool = True) -> None:
        """Read a file written by :meth:`save` and continue from it."""
        self.load_state_dict(state_io.read_state(path), restore_values=restore_values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(parameters={self.names}, steps={self.step_count})"
