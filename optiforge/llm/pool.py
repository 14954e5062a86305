"""Several OpenAI-compatible servers behind one client: :class:`ServerPool`.

``base_url`` (``--base-url``, ``OPTIFORGE_BASE_URL``) may name several servers separated by
commas, e.g. ``http://gpu1:8000/v1,http://gpu2:8000/v1``. For each attempt the client asks
the pool for a server:

- the server with the fewest requests in flight among those that are up (ties go round
  robin, so a client that sends one request at a time still spreads them);
- a server whose connections are refused or that answers HTTP 5xx ``fail_threshold`` times
  in a row is marked down: no new requests go to it until its back-off has passed
  (``base_backoff`` seconds, doubling per failed probe up to ``max_backoff``);
- after the back-off, the next request is sent to it as a probe: success brings it back,
  failure doubles the back-off;
- if every server is down, the one due back soonest is tried anyway, so a single-server
  pool behaves exactly like a plain client (the retry loop decides when to give up).

A retry of a failed request avoids the servers that request already failed on, while others
remain. Which server answered never reaches the cache key, the usage counters or the
budget: those live in :class:`~optiforge.llm.base.BaseLLM`, above the transport.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from optiforge.llm.errors import LLMError


def split_base_urls(base_url: str | None) -> list[str]:
    """``"http://a/v1, http://b/v1/"`` -> ``["http://a/v1", "http://b/v1"]`` (order kept,
    duplicates dropped). Raises :class:`LLMError` for an entry that is not an http(s) URL."""
    if not base_url:
        return []
    urls: list[str] = []
    for part in str(base_url).split(","):
        url = part.strip().rstrip("/")
        if not url:
            continue
        if not url.startswith(("http://", "https://")):
            raise LLMError(
                f"base_url entry {url!r} is not an http(s) URL; give one URL or several "
                "separated by commas, e.g. http://gpu1:8000/v1,http://gpu2:8000/v1"
            )
        if url not in urls:
            urls.append(url)
    return urls


def is_server_failure(exc: BaseException) -> bool:
    """True when ``exc`` says the server itself is unwell: the connection was refused or
    dropped, or it answered HTTP 5xx. Timeouts, 4xx and malformed replies say nothing
    about the server's health and do not count."""
    import httpx
    import openai

    if isinstance(exc, (openai.APITimeoutError, httpx.TimeoutException)):
        return False
    if isinstance(exc, (openai.APIConnectionError, httpx.TransportError, ConnectionError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code >= 500
    return False


@dataclass
class ServerState:
    """What the pool knows about one server."""

    url: str
    in_flight: int = 0
    requests: int = 0
    ok: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    times_marked_down: int = 0
    down_until: float | None = None
    backoff: float = 0.0
    probing: bool = False

    @property
    def up(self) -> bool:
        return self.down_until is None


class ServerPool:
    """Chooses a server for each request and tracks each server's health and share.

    Thread-safe; one pool per client. ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        urls: Iterable[str],
        *,
        fail_threshold: int = 2,
        base_backoff: float = 2.0,
        max_backoff: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.servers = [ServerState(u) for u in urls]
        if not self.servers:
            raise LLMError("a server pool needs at least one URL")
        if fail_threshold < 1:
            raise LLMError(f"fail_threshold must be >= 1, got {fail_threshold}")
        self.fail_threshold = fail_threshold
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self._clock = clock
        self._lock = threading.Lock()
        self._next = 0  # round-robin start among equally loaded servers

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def acquire(self, avoid: Iterable[str] = ()) -> ServerState:
        """Pick a server for one attempt and count it in flight; pair with :meth:`release`.
        ``avoid``: URLs this request already failed on (skipped while others remain)."""
        avoid = set(avoid)
        with self._lock:
            now = self._clock()
            n = len(self.servers)
            order = [self.servers[(self._next + i) % n] for i in range(n)]
            self._next = (self._next + 1) % n
            fresh = [s for s in order if s.url not in avoid] or order
            # A down server whose back-off has passed gets one probe request at a time.
            due = [
                s
                for s in fresh
                if not s.up and not s.probing and s.down_until is not None and s.down_until <= now
            ]
            if due:
                chosen = due[0]
                chosen.probing = True
            else:
                up = [s for s in fresh if s.up]
                if up:
                    chosen = min(up, key=lambda s: s.in_flight)  # min keeps the first of ties
                else:  # everything is down: try the one due back soonest
                    chosen = min(fresh, key=lambda s: s.down_until or 0.0)
            chosen.in_flight += 1
            chosen.requests += 1
            return chosen

    def release(self, server: ServerState, *, failed: bool) -> None:
        """Record the outcome of an attempt on ``server``: ``failed`` is True for a refused
        connection or a 5xx (see :func:`is_server_failure`)."""
        with self._lock:
            server.in_flight = max(0, server.in_flight - 1)
            was_probe, server.probing = server.probing, False
            if not failed:
                server.ok += 1
                server.consecutive_failures = 0
                server.down_until = None
                server.backoff = 0.0
                return
            server.failures += 1
            server.consecutive_failures += 1
            now = self._clock()
            if not server.up or was_probe:
                # A failed probe (or a failure while already down): wait twice as long.
                server.backoff = min(self.max_backoff, max(self.base_backoff, 2 * server.backoff))
                server.down_until = now + server.backoff
            elif server.consecutive_failures >= self.fail_threshold:
                server.backoff = self.base_backoff
                server.down_until = now + server.backoff
                server.times_marked_down += 1

    def stats(self) -> dict[str, dict[str, object]]:
        """Per server: ``requests`` sent (attempts, retries included), ``ok`` (answered),
        ``failures`` (refused or 5xx), ``share`` of all answered requests, whether it is
        ``up`` now and how often it was marked down."""
        with self._lock:
            return with_shares(
                {
                    s.url: {
                        "requests": s.requests,
                        "ok": s.ok,
                        "failures": s.failures,
                        "up": s.up,
                        "times_marked_down": s.times_marked_down,
                    }
                    for s in self.servers
                }
            )


def with_shares(stats: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    """Add (or recompute) each server's ``share`` of the answered requests."""
    total = sum(int(v.get("ok", 0) or 0) for v in stats.values())  # type: ignore[call-overload]
    for v in stats.values():
        ok = int(v.get("ok", 0) or 0)  # type: ignore[call-overload]
        v["share"] = round(ok / total, 4) if total else 0.0
    return stats


def merge_server_stats(
    parts: Iterable[dict[str, dict[str, object]]],
) -> dict[str, dict[str, object]]:
    """Sum the per-server counters of several clients (e.g. one per Ray worker)."""
    merged: dict[str, dict[str, object]] = {}
    for part in parts:
        for url, v in (part or {}).items():
            m = merged.setdefault(
                url, {"requests": 0, "ok": 0, "failures": 0, "up": True, "times_marked_down": 0}
            )
            for key in ("requests", "ok", "failures", "times_marked_down"):
                m[key] = int(m[key]) + int(v.get(key, 0) or 0)  # type: ignore[call-overload]
            m["up"] = bool(m["up"]) and bool(v.get("up", True))
    return with_shares(merged)
