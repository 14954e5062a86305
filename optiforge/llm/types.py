"""Typed values returned by the LLM client: :class:`ChatResult`, :class:`Budget`, usage."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ChatResult(BaseModel):
    """The answer to one ``chat`` call with ``n`` samples.

    ``texts`` has one reply per sample; ``parsed`` has one validated object per sample when
    ``response_format`` was given (else None). Token counts are the server's (zero-cost cache
    hits report the counts recorded when the answer was first produced).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    texts: list[str]
    parsed: list[Any] | None = None
    finish_reasons: list[str | None]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    model: str
    #: True when every sample came from the cache (no request was sent).
    cached: bool = False
    #: How many of the samples came from the cache.
    cached_samples: int = 0

    @property
    def text(self) -> str:
        """The first sample's text."""
        return self.texts[0]

    @property
    def value(self) -> Any:
        """The first sample's parsed object (needs ``response_format``)."""
        if self.parsed is None:
            raise AttributeError("ChatResult.value needs a call made with response_format")
        return self.parsed[0]


class Budget(BaseModel):
    """Hard limits for one client. A call that could exceed them raises BudgetExceeded
    before anything is sent. Cache hits are free and never count."""

    model_config = ConfigDict(frozen=True)

    #: Maximum number of requests sent to the server.
    max_calls: int | None = Field(default=None, ge=0)
    #: Maximum prompt + completion tokens. A call reserves its prompt estimate plus
    #: ``n * max_tokens`` before it is sent, so the limit is never crossed.
    max_tokens: int | None = Field(default=None, ge=0)


class TagUsage(BaseModel):
    """Counters for one tag (role) or for the whole client.

    - ``calls``, ``prompt_tokens``, ``completion_tokens``: requests the server answered and
      the tokens it spent on them, every choice of an ``n > 1`` request included (and every
      structured-output re-ask, failed or not).
    - ``choices``: replies those requests returned (``n`` per request).
    - ``failed_calls``: requests that got no reply: errors (each retried attempt counts),
      timeouts, and requests cancelled in flight. Their tokens are unknown and not counted.
    - ``cached_calls``, ``cache_hits``, ``cached_prompt_tokens``,
      ``cached_completion_tokens``: requests answered from the response cache (wholly or in
      part), the replies taken from it, and what those replies cost when they were first
      produced. Cached replies cost nothing now and are kept apart from the live counters.
    - ``server_cached_tokens``, ``prompt_ms``, ``completion_ms``: what the server says of
      the requests it answered, when it says it (llama.cpp does; vLLM reports cached tokens
      with prefix caching on; 0 otherwise): the prompt tokens it took from its own prompt
      (KV) cache instead of processing them (part of ``prompt_tokens``), and the
      milliseconds it spent processing prompts and generating replies.
    """

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    choices: int = 0
    failed_calls: int = 0
    cached_calls: int = 0
    cache_hits: int = 0
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0
    #: Sum of request latencies in seconds (overlapping requests each count).
    wall_time_s: float = 0.0
    server_cached_tokens: int = 0
    prompt_ms: float = 0.0
    completion_ms: float = 0.0

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens (live requests only)."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def cached_tokens(self) -> int:
        """Prompt plus completion tokens of the replies served from the cache."""
        return self.cached_prompt_tokens + self.cached_completion_tokens

    def add(self, other: TagUsage) -> None:
        """Add ``other``'s counters to these (in place)."""
        for name in _COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


_COUNTERS = (
    "calls",
    "prompt_tokens",
    "completion_tokens",
    "choices",
    "failed_calls",
    "cached_calls",
    "cache_hits",
    "cached_prompt_tokens",
    "cached_completion_tokens",
    "wall_time_s",
    "server_cached_tokens",
    "prompt_ms",
    "completion_ms",
)


class UsageSnapshot(TagUsage):
    """Totals plus a breakdown per tag (calls without a tag are under ``"default"``)."""

    by_tag: dict[str, TagUsage] = Field(default_factory=dict)
