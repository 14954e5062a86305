"""One background event loop per process that runs the sync API (``chat``, ``stream``).

Running sync calls on a dedicated loop (instead of ``asyncio.run`` per call) lets them work
inside programs that already run an event loop (notebooks, async tests) and keeps HTTP
connections alive between calls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

from optiforge.llm.errors import LLMError

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def background_loop() -> asyncio.AbstractEventLoop:
    """The shared loop, started on first use in a daemon thread."""
    global _loop, _thread
    with _lock:
        if _loop is None or _loop.is_closed() or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="optiforge-llm-loop", daemon=True
            )
            thread.start()
            _loop, _thread = loop, thread
        return _loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the background loop and wait for its result."""
    loop = background_loop()
    if threading.current_thread() is _thread:
        coro.close()
        raise LLMError(
            "a sync LLM method was called from inside an async LLM call; use the async "
            "form (await llm.achat(...)) there"
        )
    fut = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return fut.result()
    except BaseException:
        fut.cancel()
        raise


def iterate_sync(agen: AsyncIterator[T]) -> Iterator[T]:
    """Drive an async iterator on the background loop, yielding its items here."""
    loop = background_loop()
    try:
        while True:
            fut = asyncio.run_coroutine_threadsafe(agen.__anext__(), loop)
            try:
                item = fut.result()
            except StopAsyncIteration:
                return
            except BaseException:
                fut.cancel()
                raise
            yield item
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            asyncio.run_coroutine_threadsafe(aclose(), loop).result()
