"""Recording state. It lives in a :class:`contextvars.ContextVar`, never in a global.

A new thread starts with tracing on, whatever another thread does, and every asyncio task
gets a copy of its creator's context, so ``no_trace()`` in one task or thread never changes
what another one records.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

#: Whether calls and operators record graph edges in this context (read on hot paths).
TRACING: ContextVar[bool] = ContextVar("optiforge_trace_enabled", default=True)


def is_tracing() -> bool:
    """Return True when bundled calls and operators record graph edges in this context."""
    return TRACING.get()


@contextlib.contextmanager
def no_trace() -> Iterator[None]:
    """Run a block without recording: bundled calls and operators still return nodes, but
    those nodes have no parents, so nothing is kept alive and no feedback flows through them.

    Only the current thread / asyncio task (and tasks it creates inside the block) is affected.
    """
    token = TRACING.set(False)
    try:
        yield
    finally:
        TRACING.reset(token)


@contextlib.contextmanager
def tracing(enabled: bool = True) -> Iterator[None]:
    """Turn recording on (or off) for a block, e.g. inside a ``no_trace()`` block."""
    token = TRACING.set(bool(enabled))
    try:
        yield
    finally:
        TRACING.reset(token)
