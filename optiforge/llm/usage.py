"""Thread-safe usage accounting and budget enforcement for one client."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from optiforge.llm.errors import BudgetExceeded
from optiforge.llm.types import Budget, TagUsage, UsageSnapshot

DEFAULT_TAG = "default"


class UsageTracker:
    """Counts calls, tokens, cache hits and wall time, in total and per tag.

    Read the counters as attributes (``calls``, ``prompt_tokens``, ``completion_tokens``,
    ``tokens``, ``cache_hits``, ``wall_time_s``), per tag with ``usage.for_tag("critic")``,
    or all at once with :meth:`snapshot`.
    """

    def __init__(self, budget: Budget | None = None) -> None:
        self._lock = threading.Lock()
        self._total = TagUsage()
        self._tags: dict[str, TagUsage] = {}
        self.budget = budget
        self._reserved_calls = 0
        self._reserved_tokens = 0

    # -- reading -----------------------------------------------------------------------
    @property
    def calls(self) -> int:
        return self._total.calls

    @property
    def prompt_tokens(self) -> int:
        return self._total.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self._total.completion_tokens

    @property
    def tokens(self) -> int:
        return self._total.tokens

    @property
    def cache_hits(self) -> int:
        return self._total.cache_hits

    @property
    def wall_time_s(self) -> float:
        return self._total.wall_time_s

    def for_tag(self, tag: str) -> TagUsage:
        """A copy of the counters for ``tag`` (zeros if it was never used)."""
        with self._lock:
            return self._tags.get(tag, TagUsage()).model_copy()

    def snapshot(self) -> UsageSnapshot:
        """A consistent copy of all counters."""
        with self._lock:
            return UsageSnapshot(
                **self._total.model_dump(),
                by_tag={k: v.model_copy() for k, v in self._tags.items()},
            )

    def __repr__(self) -> str:
        t = self._total
        return (
            f"Usage(calls={t.calls}, prompt_tokens={t.prompt_tokens}, "
            f"completion_tokens={t.completion_tokens}, cache_hits={t.cache_hits}, "
            f"wall_time_s={t.wall_time_s:.2f})"
        )

    # -- writing -----------------------------------------------------------------------
    def _bucket(self, tag: str | None) -> TagUsage:
        return self._tags.setdefault(tag or DEFAULT_TAG, TagUsage())

    def record_cache_hits(self, tag: str | None, count: int) -> None:
        """Count ``count`` samples answered from the cache."""
        if count <= 0:
            return
        with self._lock:
            for b in (self._total, self._bucket(tag)):
                b.cache_hits += count

    def record_call(
        self, tag: str | None, prompt_tokens: int, completion_tokens: int, seconds: float
    ) -> None:
        """Count one request that reached the server."""
        with self._lock:
            for b in (self._total, self._bucket(tag)):
                b.calls += 1
                b.prompt_tokens += prompt_tokens
                b.completion_tokens += completion_tokens
                b.wall_time_s += seconds

    @contextmanager
    def reserve(self, estimated_tokens: int) -> Iterator[None]:
        """Reserve one call and ``estimated_tokens`` against the budget while a request is
        in flight, so concurrent requests cannot jointly overshoot it.

        Raises :class:`BudgetExceeded` (before anything is sent) when the reservation does
        not fit.
        """
        b = self.budget
        if b is None:
            yield
            return
        with self._lock:
            if (
                b.max_calls is not None
                and self._total.calls + self._reserved_calls + 1 > b.max_calls
            ):
                raise BudgetExceeded(
                    f"LLM budget exhausted: {self._total.calls} of max_calls={b.max_calls} "
                    "calls used. Raise the budget (max_calls) or reuse cached results."
                )
            used = self._total.tokens + self._reserved_tokens
            if b.max_tokens is not None and used + estimated_tokens > b.max_tokens:
                raise BudgetExceeded(
                    f"LLM budget exhausted: {self._total.tokens} tokens used (+{self._reserved_tokens} "
                    f"in flight); this call may need up to {estimated_tokens} more, over "
                    f"max_tokens={b.max_tokens}. Raise the budget or lower max_tokens/n."
                )
            self._reserved_calls += 1
            self._reserved_tokens += estimated_tokens
        try:
            yield
        finally:
            with self._lock:
                self._reserved_calls -= 1
                self._reserved_tokens -= estimated_tokens
