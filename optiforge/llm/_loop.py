"""One background event loop per process that runs the sync API (``chat``, ``stream``).

Running sync calls on a dedicated loop (instead of ``asyncio.run`` per call) lets them work
inside programs that already run an event loop (notebooks, async tests) and keeps HTTP
connections alive between calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
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
    """Run ``coro`` on the background loop and wait for its result.

    The coroutine runs in a copy of the caller's context, as under ``asyncio.run``, so
    context variables set here (trace recording, per-problem usage scopes) reach it. If the
    wait is interrupted (Ctrl-C), the task is cancelled.
    """
    loop = background_loop()
    if threading.current_thread() is _thread:
        coro.close()
        raise LLMError(
            "a sync LLM method was called from inside an async LLM call; use the async "
            "form (await llm.achat(...)) there"
        )
    ctx = contextvars.copy_context()
    result: concurrent.futures.Future[T] = concurrent.futures.Future()

    def start() -> None:
        if not result.set_running_or_notify_cancel():
            coro.close()
            return
        task = ctx.run(loop.create_task, coro)  # the task copies the current context: ctx

        def done(t: asyncio.Task[T]) -> None:
            if t.cancelled():
                result.set_exception(asyncio.CancelledError())
            elif t.exception() is not None:
                result.set_exception(t.exception())  # type: ignore[arg-type]
            else:
                result.set_result(t.result())

        task.add_done_callback(done)
        tasks[0] = task

    tasks: list[asyncio.Task[T] | None] = [None]
    loop.call_soon_threadsafe(start)
    try:
        return result.result()
    except BaseException:
        if not result.cancel():  # already started: cancel the task on its loop

            def cancel() -> None:
                if tasks[0] is not None:
                    tasks[0].cancel()

            loop.call_soon_threadsafe(cancel)
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
