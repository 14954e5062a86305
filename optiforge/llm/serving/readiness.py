"""Is a configured server ready? Waiting for one that is still loading its model, and
asking a llama.cpp server how many parallel slots it has.

Used before a command's first request (``optiforge solve/eval/tune`` with ``--base-url``):
a server that answers HTTP 503 is loading, so wait for it; one that cannot be reached is
a wrong URL or a stopped server, so fail at once with what to do.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

#: Seconds to wait for a server that answers "loading" (HTTP 503) before giving up.
READY_TIMEOUT_S = 300.0


def wait_until_ready(
    base_url: str,
    timeout: float = 10.0,
    *,
    ready_timeout: float = READY_TIMEOUT_S,
    interval: float = 0.5,
    echo: Callable[[str], None] | None = None,
) -> None:
    """Wait until an OpenAI-compatible server answers ``/models``, or raise
    :class:`~optiforge.llm.errors.LLMUnavailableError` with a clear message.

    A server that is still loading its model answers HTTP 503: wait for it, up to
    ``ready_timeout`` seconds, saying once through ``echo`` (default: stderr) what it
    waits for. A server that cannot be reached fails at once, so that a wrong URL is
    reported without delay. ``timeout`` bounds each request.
    """
    import httpx

    from optiforge.llm.errors import LLMUnavailableError

    if echo is None:

        def echo(msg: str) -> None:
            print(msg, file=sys.stderr, flush=True)

    url = base_url.rstrip("/") + "/models"
    t0 = time.monotonic()
    told = False
    while True:
        waited = time.monotonic() - t0
        try:
            resp = httpx.get(url, timeout=timeout)
        except httpx.HTTPError as exc:
            raise LLMUnavailableError(
                f"cannot reach the model server at {base_url} ({type(exc).__name__}: {exc}). "
                "Start it (for example `optiforge serve`), fix --base-url, or leave --base-url "
                "out to use the embedded local server."
            ) from None
        if resp.status_code < 500:
            if told:
                echo(f"model server at {base_url} is ready (after {waited:.0f} s)")
            return
        if resp.status_code != 503 or waited >= ready_timeout:
            what = "still loading" if resp.status_code == 503 else "failing"
            raise LLMUnavailableError(
                f"the model server at {base_url} answered HTTP {resp.status_code} on "
                f"/models ({what} after {waited:.0f} s; the limit is {ready_timeout:g} s, "
                "set by OPTIFORGE_READY_TIMEOUT); check its logs"
            )
        if not told:
            echo(
                f"waiting for the model server at {base_url} to load its model (HTTP 503; "
                f"up to {ready_timeout:g} s, OPTIFORGE_READY_TIMEOUT; Ctrl-C to stop)"
            )
            told = True
        time.sleep(interval)


def server_slots(base_url: str, timeout: float = 5.0) -> int | None:
    """The parallel slots of a llama.cpp server (``/props`` ``total_slots``), or None for
    servers that do not say (vLLM batches dynamically; hosted APIs)."""
    import httpx

    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        r = httpx.get(root + "/props", timeout=timeout)
        if r.status_code != 200:
            return None
        slots = r.json().get("total_slots")
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return slots if isinstance(slots, int) and slots > 0 else None
