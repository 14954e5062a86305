"""The interface every optimizer shares, and the machinery around one LLM step.

An optimizer holds trainable parameter nodes and an LLM client::

    opt.zero_feedback()               # forget feedback from the last run
    out = program(x)                  # traced run
    opt.backward(out, "too small")    # feedback flows back to the parameters
    report = opt.step()               # ask the LLM, check and apply new values
    print(report)                     # what changed and why

``step()`` never applies a value that failed its type check; a reply that cannot be used
changes nothing, is logged, and is retried up to ``max_attempts`` times. Optimizer state
(history, memory) round-trips through JSON with :meth:`Optimizer.save` and
:meth:`Optimizer.load`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from optiforge.agents.optim.checks import same_value, validate
from optiforge.agents.optim.errors import OptimizerError, ReplyError
from optiforge.agents.optim.params import backward, collect, unique_names
from optiforge.agents.optim.parsing import parse_suggestion
from optiforge.fileio import write_text_atomic
from optiforge.llm.protocol import ChatClient
from optiforge.trace import Module, ParameterNode, SerializationError
from optiforge.trace.state import STATE_FORMAT, STATE_VERSION, check_state, state_document

log = logging.getLogger("optiforge.agents.optim")

#: The version of optimizer state files before :mod:`optiforge.trace.state` (still read).
LEGACY_STATE_VERSION = 1


class Change(BaseModel):
    """One parameter that a step changed."""

    name: str
    old: Any
    new: Any
    reason: str = ""


class StepReport(BaseModel):
    """What one :meth:`Optimizer.step` did: changes, the model's reasoning, and the cost."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    step: int
    optimizer: str
    ok: bool = True
    changes: list[Change] = Field(default_factory=list)
    reasoning: str = ""
    #: Replies asked for in this step (1 when the first reply was usable).
    attempts: int = 0
    #: Why replies were rejected, one message per rejected reply or value.
    errors: list[str] = Field(default_factory=list)
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    elapsed_s: float = 0.0
    #: Optimizer-specific details (OPRO: candidates and scores; TextGrad: gradients).
    detail: dict[str, Any] = Field(default_factory=dict)

    @property
    def changed(self) -> dict[str, Any]:
        """``{parameter name: new value}`` for every change."""
        return {c.name: c.new for c in self.changes}

    def __str__(self) -> str:
        head = f"{self.optimizer} step {self.step}: "
        if not self.ok:
            return head + f"no change after {self.attempts} unusable replies: {self.errors[-1:]}"
        if not self.changes:
            return (
                head
                + "no parameter changed"
                + (f" ({self.reasoning[:200]})" if self.reasoning else "")
            )
        lines = [head + f"{len(self.changes)} change(s)"]
        for c in self.changes:
            lines.append(f"  {c.name}: {_short(c.old)} -> {_short(c.new)}")
        if self.reasoning:
            lines.append(f"  why: {self.reasoning[:400]}")
        return "\n".join(lines)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def jsonable(value: Any) -> Any:
    """``value`` if JSON can hold it, else its repr (state files must always write)."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def _field_type(value: Any) -> Any:
    if isinstance(value, bool):
        return bool
    if isinstance(value, int):
        return int
    if isinstance(value, float):
        return float
    if isinstance(value, list | tuple):
        return list
    if isinstance(value, dict):
        return dict
    return str


def suggestion_schema(
    params: Mapping[str, ParameterNode], *, reasoning: bool = True, reasoning_chars: int = 800
) -> type[BaseModel]:
    """A pydantic reply model with one typed field per parameter (under ``suggestion``).

    Sent as ``response_format`` so that grammar-constrained backends can only produce a
    well-formed reply: numbers as numbers, text and code as strings, and every parameter
    named exactly as in the prompt. ``params`` maps the names shown to the model to the
    parameter nodes.
    """
    fields: dict[str, Any] = {}
    for i, (name, p) in enumerate(params.items()):
        fields[f"v{i}"] = (_field_type(p.value), Field(alias=name))
    Suggestion = create_model("Suggestion", __config__=ConfigDict(populate_by_name=True), **fields)
    top: dict[str, Any] = {}
    if reasoning:
        top["reasoning"] = (str, Field(max_length=reasoning_chars))
    top["suggestion"] = (Suggestion, ...)
    return create_model("Reply", **top)


class Optimizer:
    """Base class: parameters, an LLM, feedback plumbing, checked updates and JSON state.

    Subclasses implement :meth:`_propose`, which returns ``(reasoning, {name: value})`` or
    raises :class:`ReplyError`, and may extend :meth:`state_dict` / :meth:`load_state_dict`.
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
        self.tag = tag or f"optim.{self.kind}"
        self.step_count = 0
        #: One dict per step (``StepReport.model_dump()``), oldest first.
        self.log: list[dict[str, Any]] = []
        self._calls = 0
        self._prompt_tokens = 0
        self._completion_tokens = 0

    # -- feedback -------------------------------------------------------------------------
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

    # -- the step ------------------------------------------------------------------------
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

    # -- talking to the LLM ---------------------------------------------------------------
    def _record(self, result: Any) -> None:
        self._calls += 0 if getattr(result, "cached", False) else 1
        self._prompt_tokens += int(getattr(result, "prompt_tokens", 0) or 0)
        self._completion_tokens += int(getattr(result, "completion_tokens", 0) or 0)

    def _usage(self) -> tuple[int, int, int]:
        """(calls, prompt tokens, completion tokens) spent under this optimizer's tag.

        Read from the client's per-tag counters when it has them (exact, including
        structured-output re-asks), else from this optimizer's own count.
        """
        usage = getattr(self.llm, "usage", None)
        for_tag = getattr(usage, "for_tag", None)
        if callable(for_tag):
            t = for_tag(self.tag)
            return t.calls, t.prompt_tokens, t.completion_tokens
        return self._calls, self._prompt_tokens, self._completion_tokens

    def _chat(
        self, messages: list[dict[str, str]], *, schema: type[BaseModel] | None, **kw: Any
    ) -> tuple[list[str], list[Any]]:
        """One LLM call. Returns the texts and, per sample, the parsed dict or None.

        Structured output is requested when ``schema`` is given and ``self.structured``;
        a reply that fails validation is still returned as text for tolerant parsing.
        """
        kwargs: dict[str, Any] = {
            "temperature": kw.pop("temperature", self.temperature),
            "max_tokens": kw.pop("max_tokens", self.max_tokens),
            "tag": self.tag,
        }
        if self.seed is not None:
            kwargs["seed"] = kw.pop("seed", self.seed)
        else:
            kw.pop("seed", None)
        kwargs.update(kw)
        if schema is not None and self.structured:
            kwargs["response_format"] = schema
        try:
            result = self.llm.chat(messages, **kwargs)
        except Exception as exc:
            texts = getattr(exc, "texts", None)
            if texts is None:  # not a structured-output failure: let the caller see it
                raise
            # The model answered but some JSON did not validate: keep the samples that did
            # and parse the others tolerantly.
            self._calls += 1
            log.info("structured reply did not validate (%s); parsing leniently", exc)
            all_texts = getattr(exc, "all_texts", None) or texts
            items = getattr(exc, "parsed", None) or [None] * len(all_texts)
            return list(all_texts), [_as_dict(item) for item in items]
        self._record(result)
        items = result.parsed or [None] * len(result.texts)
        return list(result.texts), [_as_dict(item) for item in items]

    def _ask(
        self,
        messages: list[dict[str, str]],
        report: StepReport,
        *,
        names: list[str] | None = None,
        schema: type[BaseModel] | None = None,
        validate: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        aliases: Mapping[str, str] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """Ask until a reply yields checked values or ``max_attempts`` is spent.

        ``names`` are the parameter names shown to the model; ``aliases`` maps them to this
        optimizer's names when they differ. Each unusable reply is logged, recorded in
        ``report.errors`` and answered with a short correction so the next attempt can fix it.
        """
        names = names or self.names
        messages = list(messages)
        for attempt in range(1, self.max_attempts + 1):
            report.attempts = attempt
            # Greedy decoding tends to repeat the same broken reply: retries sample.
            temperature = (
                self.temperature if attempt == 1 else max(self.temperature, self.retry_temperature)
            )
            texts, parsed = self._chat(
                messages,
                schema=schema,
                temperature=temperature,
                seed=(self.seed or 0) + attempt - 1,
            )
            text = texts[0] if texts else ""
            try:
                reasoning, raw = parse_suggestion(
                    parsed[0] if parsed and parsed[0] else text, names
                )
                if aliases:
                    raw = {aliases.get(k, k): v for k, v in raw.items()}
                values, errors = self.check(raw)
                if validate is not None and values:
                    values = validate(values)
                if errors and not values:
                    raise ReplyError("; ".join(errors))
                report.errors.extend(errors)  # partial: keep the good values, report the rest
                for e in errors:
                    log.warning("%s step %d: rejected value %s", self.kind, self.step_count, e)
                return reasoning, values
            except ReplyError as exc:
                report.errors.append(str(exc))
                log.warning(
                    "%s step %d attempt %d/%d: unusable reply: %s",
                    self.kind,
                    self.step_count,
                    attempt,
                    self.max_attempts,
                    exc,
                )
                messages = [
                    *messages,
                    {"role": "assistant", "content": text[:4000]},
                    {
                        "role": "user",
                        "content": f"That reply could not be used: {exc}. Answer again, following the output format exactly.",
                    },
                ]
        raise ReplyError(f"no usable reply in {self.max_attempts} attempt(s)")

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run later, as JSON-ready data: a state
        document (:mod:`optiforge.trace.state`, kind ``"optimizer"``) with the parameter
        values, ``optimizer`` (the class's kind), ``step_count`` and ``log``; subclasses
        add their memory."""
        return state_document(
            "optimizer",
            {k: jsonable(v) for k, v in self.values().items()},
            optimizer=self.kind,
            step_count=self.step_count,
            log=self.log,
        )

    def load_state_dict(self, state: Mapping[str, Any], *, restore_values: bool = True) -> None:
        """Restore :meth:`state_dict` output (or a version-1 optimizer state from before the
        shared format). Parameter values are set by name (unknown names raise
        OptimizerError, so a state file from another program is not half-applied)."""
        try:
            state = check_state(state, "optimizer", "the optimizer state", legacy=_legacy_state)
        except SerializationError as exc:
            raise OptimizerError(str(exc)) from None
        if state.get("optimizer") != self.kind:
            raise OptimizerError(
                f"state is for optimizer {state.get('optimizer')!r}, not {self.kind!r}; "
                "load it into the same optimizer class"
            )
        values = dict(state.get("parameters", {}))
        unknown = [n for n in values if n not in self.names]
        if unknown:
            raise OptimizerError(
                f"state names parameters this optimizer does not have: {unknown}; known: {self.names}"
            )
        if restore_values:
            checked = {}
            for name, value in values.items():
                p = self.parameter(name)
                try:
                    checked[name] = validate(p, value)
                except ReplyError as exc:
                    raise OptimizerError(f"state value for {name!r} is invalid: {exc}") from None
            for name, value in checked.items():
                self.parameter(name).set(value, validate=False)
        self.step_count = int(state.get("step_count", 0))
        self.log = list(state.get("log", []))

    def save(self, path: str | Path) -> Path:
        """Write :meth:`state_dict` as JSON to ``path`` (atomically) and return the path."""
        return write_text_atomic(path, json.dumps(self.state_dict(), indent=2, default=repr))

    def load(self, path: str | Path, *, restore_values: bool = True) -> None:
        """Read a file written by :meth:`save` and continue from it."""
        path = Path(path)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise OptimizerError(f"no optimizer state at {path}") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise OptimizerError(f"cannot read optimizer state {path}: {exc}") from None
        if not isinstance(state, dict):
            raise OptimizerError(f"{path} does not hold an optimizer state object")
        self.load_state_dict(state, restore_values=restore_values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(parameters={self.names}, steps={self.step_count})"


def _legacy_state(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """An optimizer state written before the shared state format: ``{"version": 1,
    "optimizer": kind, ...}`` with the same fields and no ``format``."""
    if "format" in doc or "optimizer" not in doc:
        return None
    if doc.get("version") != LEGACY_STATE_VERSION:
        raise SerializationError(
            f"unsupported optimizer state version {doc.get('version')!r} (this optiforge "
            f"reads version {LEGACY_STATE_VERSION} and the {STATE_FORMAT!r} format)"
        )
    return {**doc, "format": STATE_FORMAT, "version": STATE_VERSION, "kind": "optimizer"}


def _as_dict(item: Any) -> Any:
    """A validated reply object as a plain dict (other values unchanged)."""
    return item.model_dump(by_alias=True) if isinstance(item, BaseModel) else item
