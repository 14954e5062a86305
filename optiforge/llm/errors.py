"""Errors raised by :mod:`optiforge.llm`. Each message says what went wrong and what to do."""

from __future__ import annotations

from typing import Any

from optiforge.errors import OptiforgeError


class LLMError(OptiforgeError):
    """Base class of every error raised while talking to a model."""


class BudgetExceeded(LLMError):
    """A call would exceed the client's budget (max calls or max tokens); nothing was sent."""


class StructuredOutputError(LLMError):
    """The model's reply did not validate against the requested pydantic model, even after
    one re-ask with the validation error. ``texts`` holds the raw replies, ``errors`` the
    validation messages (one per failing sample).

    With ``n > 1`` the samples that did validate are not lost: ``all_texts`` holds every
    sample's text and ``parsed`` its validated object (None for the failing ones), in
    sample order."""

    def __init__(
        self,
        message: str,
        *,
        texts: list[str],
        errors: list[str],
        all_texts: list[str] | None = None,
        parsed: list[Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.texts = texts
        self.errors = errors
        self.all_texts = list(texts) if all_texts is None else all_texts
        self.parsed = [None] * len(self.all_texts) if parsed is None else parsed
        #: What the failed call cost, its re-asks included (set by the client).
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0


class LLMRequestError(LLMError):
    """The server rejected the request (a 4xx other than 429). Not retried: fix the request."""

    def __init__(self, message: str, *, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class ModelNotFoundError(LLMRequestError):
    """The server does not serve the requested model."""


class ContextLengthError(LLMRequestError):
    """The prompt plus ``max_tokens`` does not fit the model's context window."""


class LLMUnavailableError(LLMError):
    """The server could not be reached, timed out or kept failing (5xx / 429) after retries."""


class LLMResponseError(LLMError):
    """The server answered with something that is not a valid completion (malformed JSON,
    a truncated stream, no choices), even after retries."""


class ModelStoreError(LLMError):
    """A model could not be found, fetched or verified in the model store."""


class LocalServerError(LLMError):
    """The embedded llama.cpp server could not start or stopped answering."""


class VllmLaunchError(LLMError):
    """``optiforge serve --model`` could not start a vLLM server."""


class NoServerError(LLMError):
    """A client with no ``base_url`` was used while no embedded server runs for its model
    (the client never starts one; see :mod:`optiforge.llm.serving`)."""
