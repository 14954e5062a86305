"""Asking an LLM for new parameter values: the reply schema, one call, and the retry loop.

:class:`AskingLLM` is the part of :class:`~optiforge.agents.optim.base.Optimizer` that
talks to the model; subclasses call :meth:`AskingLLM._chat` (one call, parsed samples) and
:meth:`AskingLLM._ask` (until a reply yields checked values). It reads the optimizer's
``llm``, ``tag``, sampling settings, ``max_attempts``, ``kind``, ``step_count``, ``names``
and ``check``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from optiforge.agents.optim.errors import OptimizerError, ReplyError
from optiforge.agents.optim.parsing import parse_suggestion
from optiforge.agents.optim.report import StepReport
from optiforge.llm.errors import ContextLengthError
from optiforge.trace import ParameterNode

log = logging.getLogger("optiforge.agents.optim")


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


def _as_dict(item: Any) -> Any:
    """A validated reply object as a plain dict (other values unchanged)."""
    return item.model_dump(by_alias=True) if isinstance(item, BaseModel) else item


#: The default cap on an optimizer's prompt, in characters (about 3 per token on
#: formulations and tables): a 4096-token context keeps room for the reply.
DEFAULT_MAX_PROMPT_CHARS = 9000
#: Values shown in a prompt are never cut shorter than this to fit the cap.
MIN_VALUE_CHARS = 200
#: A re-ask repeats at most this much of the unusable reply.
_ECHO_CHARS = 4000


def prompt_chars(messages: Sequence[Mapping[str, str]]) -> int:
    """The characters of a chat request's messages (what ``max_prompt_chars`` caps)."""
    return sum(len(m["content"]) for m in messages)


def check_prompt_cap(max_prompt_chars: int | None) -> int | None:
    """``max_prompt_chars`` when valid (None: no cap); OptimizerError otherwise."""
    if max_prompt_chars is not None and (
        isinstance(max_prompt_chars, bool) or max_prompt_chars < 1
    ):
        raise OptimizerError("max_prompt_chars must be at least 1 (or None: no cap)")
    return max_prompt_chars


class AskingLLM:
    """The optimizer's side of the conversation with its LLM (see the module docstring)."""

    # Set by Optimizer.__init__; declared here for what the methods below read.
    llm: Any
    tag: str
    kind: str
    step_count: int
    max_attempts: int
    temperature: float
    max_tokens: int
    seed: int | None
    structured: bool
    retry_temperature: float
    names: list[str]
    check: Callable[[Mapping[str, Any]], tuple[dict[str, Any], list[str]]]
    max_prompt_chars: int | None = None

    # This optimizer's own count, for clients without per-tag counters.
    _calls = 0
    _prompt_tokens = 0
    _completion_tokens = 0

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
        base = list(messages)
        messages = base
        for attempt in range(1, self.max_attempts + 1):
            report.attempts = attempt
            # Greedy decoding tends to repeat the same broken reply: retries sample.
            temperature = (
                self.temperature if attempt == 1 else max(self.temperature, self.retry_temperature)
            )
            try:
                texts, parsed = self._chat(
                    messages,
                    schema=schema,
                    temperature=temperature,
                    seed=(self.seed or 0) + attempt - 1,
                )
            except ContextLengthError as exc:
                raise ReplyError(self.context_error(messages, exc)) from None
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
                note = (
                    f"That reply could not be used: {exc}. Answer again, following the "
                    "output format exactly."
                )
                messages = self.reask_messages(base, text, note)
        raise ReplyError(f"no usable reply in {self.max_attempts} attempt(s)")

    def reask_messages(
        self, base: list[dict[str, str]], reply: str, note: str
    ) -> list[dict[str, str]]:
        """A re-ask: ``base`` (the first ask), the latest ``reply`` and the ``note`` on it.

        Only the latest reply is repeated (not every earlier one), cut to the room
        ``max_prompt_chars`` leaves beside ``base`` and the note (at most 4000 and at
        least 200 characters), so re-asks do not grow past the model's context.
        """
        limit = _ECHO_CHARS
        if self.max_prompt_chars is not None:
            limit = min(limit, self.max_prompt_chars - prompt_chars(base) - len(note))
        limit = max(MIN_VALUE_CHARS, limit)
        echo = reply if len(reply) <= limit else reply[: limit - 4] + " ..."
        return [*base, {"role": "assistant", "content": echo}, {"role": "user", "content": note}]

    def context_error(self, messages: Sequence[Mapping[str, str]], exc: Exception) -> str:
        """Why a request the server refused for its length failed, and what to change."""
        return (
            f"the {self.kind} prompt ({prompt_chars(messages)} characters) does not fit the "
            f"model's context: {exc}. Lower max_prompt_chars (now {self.max_prompt_chars}) "
            "or serve a larger context"
        )

    def warn_over_cap(self, messages: Sequence[Mapping[str, str]], what: str) -> None:
        """Log that ``messages`` stay over ``max_prompt_chars`` even shortened as far as
        ``what`` says they can be."""
        if self.max_prompt_chars is not None and prompt_chars(messages) > self.max_prompt_chars:
            log.warning(
                "%s: the prompt takes %d characters, over max_prompt_chars=%d even with %s; "
                "raise it with the model's context",
                self.kind,
                prompt_chars(messages),
                self.max_prompt_chars,
                what,
            )
