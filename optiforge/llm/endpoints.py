"""Embedded model servers running in this process, as the client sees them.

:mod:`optiforge.llm.serving` publishes each embedded llama.cpp server it starts here (and
withdraws it when the server stops); an :class:`~optiforge.llm.LLM` without a ``base_url``
looks its model up here on first use. The client never starts a server: this module is
the only thing the two sides share, so the client does not import the serving code.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LocalEndpoint:
    """Where a running embedded server answers, and for which model."""

    #: OpenAI base URL, ``http://127.0.0.1:PORT/v1``.
    base_url: str
    #: The model name the server answers to (its alias).
    served_name: str
    #: Parallel slots: the client sends at most this many requests at once.
    slots: int


def endpoint_key(model: str) -> str:
    """The lookup key of ``model``: a store name as it is, a ``.gguf`` path made absolute
    (so ``~/m.gguf`` and the same file written in full find the same server)."""
    if model.endswith(".gguf"):
        return str(Path(model).expanduser().resolve())
    return model


_lock = threading.Lock()
_running: dict[str, LocalEndpoint] = {}


def publish(model: str, endpoint: LocalEndpoint) -> None:
    """Record that ``endpoint`` serves ``model`` in this process."""
    with _lock:
        _running[endpoint_key(model)] = endpoint


def withdraw(base_url: str) -> None:
    """Forget every model served at ``base_url`` (its server stopped)."""
    with _lock:
        for key in [k for k, e in _running.items() if e.base_url == base_url]:
            del _running[key]


def find(model: str) -> LocalEndpoint | None:
    """The running embedded server for ``model`` in this process, or None."""
    with _lock:
        return _running.get(endpoint_key(model))
