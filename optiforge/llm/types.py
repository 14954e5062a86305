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
    """Counters for one tag (role) or for the whole client."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int = 0
    #: Sum of request latencies in seconds (overlapping requests each count).
    wall_time_s: float = 0.0

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


class UsageSnapshot(TagUsage):
    """Totals plus a breakdown per tag (calls without a tag are under ``"default"``)."""

    by_tag: dict[str, TagUsage] = Field(default_factory=dict)
