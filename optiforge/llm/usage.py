"""Thread-safe usage accounting and budget enforcement for one client, and usage scopes.

A :class:`UsageScope` (``with usage_scope() as scope:``) collects every call made inside
the block, in this task and the tasks it starts, by every client: the eval runner opens one
per problem, so a problem's journal line holds exactly what its calls cost, even when the
problem is cancelled by a timeout. Each reply is also recorded with its cache key and the
sha256 of its text (:attr:`UsageScope.replies`), so an answer can be traced to the model's
text.
"""

from __future__ import annotations

import contextvars
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from optiforge.llm.errors import BudgetExceeded
from optiforge.llm.types import Budget, TagUsage, UsageSnapshot

DEFAULT_TAG = "default"

T = TypeVar("T")


class UsageScope:
    """The calls made inside one ``usage_scope()`` block (see the module docstring)."""

    def __init__(self, *, keep_replies: bool = True) -> None:
        self.keep_replies = keep_replies
        self._lock = threading.Lock()
        self._total = TagUsage()
        self._tags: dict[str, TagUsage] = {}
        self._replies: list[dict[str, Any]] = []

    def _add(self, tag: str | None, delta: TagUsage) -> None:
        with self._lock:
            self._total.add(delta)
            self._tags.setdefault(tag or DEFAULT_TAG, TagUsage()).add(delta)

    def _reply(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._replies.append(entry)

    def snapshot(self) -> UsageSnapshot:
        """A consistent copy of the counters, in total and per tag."""
        with self._lock:
            return UsageSnapshot(
                **self._total.model_dump(),
                by_tag={k: v.model_copy() for k, v in self._tags.items()},
            )

    @property
    def replies(self) -> list[dict[str, Any]]:
        """One entry per reply, in arrival order: ``tag``, ``key`` (the response-cache key),
        ``sha256`` (of the text), ``cached``, ``finish_reason``, ``completion_tokens``."""
        with self._lock:
            return [dict(r) for r in self._replies]


_scopes: contextvars.ContextVar[tuple[UsageScope, ...]] = contextvars.ContextVar(
    "optiforge_usage_scopes", default=()
)


@contextmanager
def usage_scope(*, keep_replies: bool = True) -> Iterator[UsageScope]:
    """Collect the usage of every LLM call made inside the block (nested scopes each see
    the calls). Tasks started inside the block inherit the scope; sync ``chat`` calls carry
    it to the background loop. ``keep_replies=False`` keeps the counters only."""
    scope = UsageScope(keep_replies=keep_replies)
    token = _scopes.set((*_scopes.get(), scope))
    try:
        yield scope
    finally:
        _scopes.reset(token)


def current_scopes() -> tuple[UsageScope, ...]:
    """The scopes active in this context (innermost last)."""
    return _scopes.get()


@contextmanager
def scopes_active(scopes: tuple[UsageScope, ...]) -> Iterator[None]:
    """Make ``scopes`` the active ones inside the block (a caller's scopes, carried to the
    background loop that runs sync calls and streams)."""
    token = _scopes.set(scopes)
    try:
        yield
    finally:
        _scopes.reset(token)


def text_sha256(text: str) -> str:
    """The hex sha256 of a reply's UTF-8 text (what the journal keeps per reply)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class UsageTracker:
    """Counts calls, tokens, failed calls, cached replies and wall time, in total and per
    tag (the counters are described in :class:`~optiforge.llm.types.TagUsage`).

    Read the counters as attributes (``calls``, ``prompt_tokens``, ``completion_tokens``,
    ``tokens``, ``failed_calls``, ``cached_calls``, ``cache_hits``, ``cached_tokens``,
    ``wall_time_s``), per tag with ``usage.for_tag("critic")``, or all at once with
    :meth:`snapshot`. Every record also goes to the active :func:`usage_scope` blocks.
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
    def choices(self) -> int:
        return self._total.choices

    @property
    def failed_calls(self) -> int:
        return self._total.failed_calls

    @property
    def cached_calls(self) -> int:
        return self._total.cached_calls

    @property
    def cached_tokens(self) -> int:
        return self._total.cached_tokens

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
            f"completion_tokens={t.completion_tokens}, failed_calls={t.failed_calls}, "
            f"cache_hits={t.cache_hits}, cached_tokens={t.cached_tokens}, "
            f"wall_time_s={t.wall_time_s:.2f})"
        )

    # -- writing -----------------------------------------------------------------------
    def _bucket(self, tag: str | None) -> TagUsage:
        return self._tags.setdefault(tag or DEFAULT_TAG, TagUsage())

    def _record(self, tag: str | None, delta: TagUsage) -> None:
        with self._lock:
            self._total.add(delta)
            self._bucket(tag).add(delta)
        for scope in _scopes.get():
            scope._add(tag, delta)

    def record_cache_hits(
        self,
        tag: str | None,
        count: int,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        """Count one request answered (wholly or in part) from the cache: ``count`` replies
        that cost ``prompt_tokens`` + ``completion_tokens`` when they were produced."""
        if count <= 0:
            return
        self._record(
            tag,
            TagUsage(
                cached_calls=1,
                cache_hits=count,
                cached_prompt_tokens=prompt_tokens,
                cached_completion_tokens=completion_tokens,
            ),
        )

    def record_call(
        self,
        tag: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        seconds: float,
        choices: int = 1,
        *,
        server_cached_tokens: int = 0,
        prompt_ms: float = 0.0,
        completion_ms: float = 0.0,
    ) -> None:
        """Count one request the server answered, with ``choices`` replies (and what the
        server said of its prompt cache and timings, when it said it)."""
        self._record(
            tag,
            TagUsage(
                calls=1,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                choices=choices,
                wall_time_s=seconds,
                server_cached_tokens=server_cached_tokens,
                prompt_ms=prompt_ms,
                completion_ms=completion_ms,
            ),
        )

    def record_failed(self, tag: str | None, seconds: float) -> None:
        """Count one request that got no reply (error, timeout, cancelled in flight)."""
        self._record(tag, TagUsage(failed_calls=1, wall_time_s=seconds))

    def record_reply(
        self,
        tag: str | None,
        *,
        key: str,
        text: str,
        cached: bool,
        finish_reason: str | None,
        completion_tokens: int,
    ) -> None:
        """Note one reply's provenance in the active scopes (the client keeps no list)."""
        scopes = [s for s in _scopes.get() if s.keep_replies]
        if not scopes:
            return
        entry = {
            "tag": tag or DEFAULT_TAG,
            "key": key,
            "sha256": text_sha256(text),
            "cached": cached,
            "finish_reason": finish_reason,
            "completion_tokens": completion_tokens,
        }
        for scope in scopes:
            scope._reply(entry)

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
