"""Retries with exponential backoff and full jitter, and the mapping from transport
exceptions (openai SDK, litellm, httpx) to optiforge's error types."""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from optiforge.llm.errors import (
    ContextLengthError,
    LLMError,
    LLMRequestError,
    LLMResponseError,
    LLMUnavailableError,
    ModelNotFoundError,
)

T = TypeVar("T")

#: Never wait longer than this for one retry, whatever Retry-After says.
MAX_DELAY_S = 60.0


@dataclass
class Verdict:
    """How to treat one failure: retry it (after ``retry_after`` if the server said so)
    or give up with ``error``."""

    retry: bool
    error: LLMError
    retry_after: float | None = None


class SchemaRejected(LLMRequestError):
    """The server rejected ``response_format`` (it cannot constrain output)."""


def _retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _message_of(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    msg = getattr(exc, "message", None) or str(exc)
    return str(msg)


def classify(exc: BaseException, *, where: str, model: str, timeout: float | None) -> Verdict:
    """Decide whether ``exc`` is worth retrying and which error to raise if not."""
    if isinstance(exc, LLMRequestError):
        return Verdict(False, exc)
    if isinstance(exc, (LLMResponseError, LLMUnavailableError)):
        return Verdict(True, exc)
    if isinstance(exc, LLMError):
        return Verdict(False, exc)
    if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
        return Verdict(
            True, LLMResponseError(f"{where} sent a reply that is not valid JSON: {exc}")
        )
    if isinstance(exc, asyncio.TimeoutError):
        return Verdict(True, LLMUnavailableError(_timeout_msg(where, timeout)))

    import httpx
    import openai

    if isinstance(exc, (openai.APITimeoutError, httpx.TimeoutException)):
        return Verdict(True, LLMUnavailableError(_timeout_msg(where, timeout)))
    if isinstance(exc, (openai.APIConnectionError, httpx.TransportError)):
        return Verdict(
            True,
            LLMUnavailableError(
                f"cannot reach {where}: {exc}. Check that the server is running and the "
                "base URL is right (OPTIFORGE_BASE_URL), or unset it to use the embedded server."
            ),
        )
    if isinstance(exc, openai.APIResponseValidationError):
        return Verdict(True, LLMResponseError(f"{where} sent a malformed completion: {exc}"))
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        msg = _message_of(exc)
        headers = getattr(exc.response, "headers", None)
        if status == 429:
            return Verdict(
                True,
                LLMUnavailableError(
                    f"{where} kept rate-limiting requests (429: {msg}). Lower concurrency or "
                    "try later."
                ),
                _retry_after(headers),
            )
        if status >= 500 or status in (408, 409):
            return Verdict(
                True,
                LLMUnavailableError(f"{where} kept failing with HTTP {status}: {msg}"),
                _retry_after(headers),
            )
        low = msg.lower()
        if status in (401, 403):
            return Verdict(
                False,
                LLMRequestError(
                    f"{where} refused the credentials (HTTP {status}: {msg}). Set api_key "
                    "(OPTIFORGE_API_KEY) or the provider's key variable.",
                    status=status,
                    body=exc.body,
                ),
            )
        if "context" in low and any(
            w in low for w in ("length", "size", "exceed", "too long", "maximum")
        ):
            return Verdict(
                False,
                ContextLengthError(
                    f"the prompt is too long for {model!r} at {where} (HTTP {status}: {msg}). "
                    "Shorten the messages, lower max_tokens, or raise the context size "
                    "(OPTIFORGE_LOCAL_CTX for the embedded server, --max-model-len for vLLM).",
                    status=status,
                    body=exc.body,
                ),
            )
        if status == 404 or (
            "model" in low and any(w in low for w in ("not found", "does not exist", "unknown"))
        ):
            return Verdict(
                False,
                ModelNotFoundError(
                    f"{where} does not serve model {model!r} (HTTP {status}: {msg}). Pass a "
                    "model id the server lists at /v1/models.",
                    status=status,
                    body=exc.body,
                ),
            )
        if any(w in low for w in ("response_format", "json_schema", "grammar")) and status in (
            400,
            422,
        ):
            return Verdict(False, SchemaRejected(msg, status=status, body=exc.body))
        return Verdict(
            False,
            LLMRequestError(
                f"{where} rejected the request (HTTP {status}): {msg}", status=status, body=exc.body
            ),
        )
    try:  # pydantic errors from parsing a malformed body inside the SDK
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            return Verdict(True, LLMResponseError(f"{where} sent a malformed completion: {exc}"))
    except ImportError:  # pragma: no cover
        pass
    return Verdict(
        False, LLMError(f"unexpected error talking to {where}: {type(exc).__name__}: {exc}")
    )


def _timeout_msg(where: str, timeout: float | None) -> str:
    limit = f" after {timeout:g} s" if timeout else ""
    return (
        f"{where} did not answer{limit}. Raise timeout (OPTIFORGE_TIMEOUT), lower max_tokens "
        "or concurrency, or check the server's load."
    )


def backoff_delay(attempt: int, base: float = 0.5, cap: float = 20.0) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0.0, min(cap, base * (2**attempt)))


async def with_retries(
    fn: Callable[[], Awaitable[T]],
    *,
    max_retries: int,
    where: str,
    model: str,
    timeout: float | None,
    base_delay: float = 0.5,
) -> T:
    """Await ``fn()``; on a retryable failure wait and try again, up to ``max_retries`` times.
    Raises an :class:`LLMError` subclass that says what failed."""
    attempt = 0
    while True:
        try:
            return await fn()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            verdict = classify(exc, where=where, model=model, timeout=timeout)
            if not verdict.retry or attempt >= max_retries:
                err = verdict.error
                if verdict.retry and attempt:
                    err.args = (f"{err.args[0]} (gave up after {attempt + 1} attempts)",)
                raise err from exc
            delay = verdict.retry_after
            if delay is None:
                delay = backoff_delay(attempt, base_delay)
            await asyncio.sleep(min(delay, MAX_DELAY_S))
            attempt += 1
