"""Test doubles: :class:`ScriptedLLM` answers from a script instead of a model.

It is a real client minus the network: cache, budget, usage, tags, concurrency and
structured output (``response_format`` parsing, the one re-ask, ``StructuredOutputError``)
run through the same code as :class:`optiforge.llm.LLM` (both subclass
:class:`optiforge.llm.base.BaseLLM`). Every request is recorded in ``.requests``.

    llm = ScriptedLLM(['{"x": 1}'])
    res = llm.chat("give x", response_format=Answer)
    assert res.parsed[0].x == 1
    assert "give x" in llm.requests[0].prompt
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optiforge.llm.base import BaseLLM, ChatRequest, Completion, StreamEvent
from optiforge.llm.cache import ResponseCache
from optiforge.llm.errors import LLMError
from optiforge.llm.types import Budget

Script = list[str] | tuple[str, ...] | str | Callable[..., Any]


class ScriptExhausted(LLMError):
    """A :class:`ScriptedLLM` was asked for more replies than its script holds."""


@dataclass(frozen=True)
class RecordedRequest:
    """One request a :class:`ScriptedLLM` received (``n`` samples of one conversation)."""

    messages: list[dict[str, Any]]
    n: int
    temperature: float
    max_tokens: int
    seed: int | None
    stop: list[str] | None
    #: The OpenAI ``response_format`` payload that would be sent (json_schema), or None.
    response_format: dict[str, Any] | None
    tag: str | None
    stream: bool = False

    @property
    def prompt(self) -> str:
        """The content of the last user message."""
        for m in reversed(self.messages):
            if m.get("role") == "user":
                return str(m.get("content", ""))
        return ""

    @property
    def system(self) -> str:
        """The content of the first system message ("" if none)."""
        for m in self.messages:
            if m.get("role") == "system":
                return str(m.get("content", ""))
        return ""

    @property
    def text(self) -> str:
        """Every message's content joined by blank lines (handy for ``in`` assertions)."""
        return "\n\n".join(str(m.get("content", "")) for m in self.messages)


def _count_words(text: str) -> int:
    return max(1, len(text.split()))


class ScriptedLLM(BaseLLM):
    """A client whose replies come from ``script``.

    ``script`` is a list of reply strings consumed in order (one per sample; a single string
    means "always this reply" when ``cycle`` is true or it is the only one needed), or a
    callable ``script(messages, **kwargs) -> str`` called once per sample with keyword
    arguments ``temperature, max_tokens, seed, stop, response_format, tag, index`` (the
    sample index within the request). A callable may be async, and may raise an
    :class:`~optiforge.llm.errors.LLMError` to simulate a failing server.

    The cache is off unless ``cache`` (a :class:`ResponseCache` or a directory) is given.
    """

    route = "scripted"

    def __init__(
        self,
        script: Script,
        *,
        model: str = "scripted",
        concurrency: int = 4,
        cache: ResponseCache | str | Path | None = None,
        budget: Budget | dict[str, Any] | None = None,
        cycle: bool = False,
    ) -> None:
        if isinstance(cache, (str, Path)):
            cache = ResponseCache(cache)
        super().__init__(model, concurrency=concurrency, cache=cache, budget=budget)
        if isinstance(script, str):
            script = [script]
            cycle = True
        if not callable(script):
            script = list(script)
            if not all(isinstance(s, str) for s in script):
                raise LLMError("ScriptedLLM replies must be strings (or pass a callable)")
        self.script = script
        self.cycle = cycle
        self.requests: list[RecordedRequest] = []
        self._pos = 0
        self._lock = threading.Lock()

    @property
    def remaining(self) -> int | None:
        """Replies left in a list script (None for a callable or a cycling script)."""
        if callable(self.script) or self.cycle:
            return None
        return len(self.script) - self._pos

    async def _next_reply(self, req: ChatRequest, index: int) -> str:
        if callable(self.script):
            out = self.script(
                req.messages,
                temperature=req.temperature,
                max_tokens=req.max_tokens,
                seed=req.seed,
                stop=req.stop,
                response_format=req.response_format,
                tag=req.tag,
                index=index,
            )
            if inspect.isawaitable(out):
                out = await out
            if not isinstance(out, str):
                raise LLMError(f"ScriptedLLM script returned {type(out).__name__}, not str")
            return out
        with self._lock:
            if self._pos >= len(self.script):
                if self.cycle and self.script:
                    self._pos = 0
                else:
                    raise ScriptExhausted(
                        f"ScriptedLLM ran out of replies after {len(self.script)}; the request "
                        f"was: {req.messages[-1].get('content')!r:.200}. Add replies or pass a "
                        "callable."
                    )
            reply = self.script[self._pos]
            self._pos += 1
            return reply

    def _record(self, req: ChatRequest, stream: bool = False) -> None:
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    messages=[dict(m) for m in req.messages],
                    n=req.n,
                    temperature=req.temperature,
                    max_tokens=req.max_tokens,
                    seed=req.seed,
                    stop=req.stop,
                    response_format=req.response_format,
                    tag=req.tag,
                    stream=stream,
                )
            )

    async def _acomplete(self, request: ChatRequest) -> Completion:
        self._record(request)
        texts = [await self._next_reply(request, i) for i in range(request.n)]
        prompt = sum(_count_words(str(m.get("content", ""))) for m in request.messages)
        return Completion(
            texts=texts,
            finish_reasons=["stop"] * len(texts),
            prompt_tokens=prompt,
            completion_tokens=sum(_count_words(t) for t in texts),
            model=self.model,
        )

    async def _astream_raw(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self._record(request, stream=True)
        text = await self._next_reply(request, 0)
        for i in range(0, len(text), 8):
            yield StreamEvent(delta=text[i : i + 8])
        yield StreamEvent(
            finish_reason="stop",
            prompt_tokens=sum(_count_words(str(m.get("content", ""))) for m in request.messages),
            completion_tokens=_count_words(text),
        )

    def reset(self) -> None:
        """Forget recorded requests and rewind a list script."""
        with self._lock:
            self.requests.clear()
            self._pos = 0
