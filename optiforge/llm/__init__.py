"""optiforge.llm: one client for every model backend.

- :class:`LLM`: sync and async chat over OpenAI-compatible servers (vLLM, the embedded
  llama.cpp server, any other) and litellm for hosted ``provider/model`` names; with a
  persistent cache, bounded concurrency, retries, usage and budget, structured output.
- :mod:`optiforge.llm.testing`: :class:`~optiforge.llm.testing.ScriptedLLM` for unit tests.
- :mod:`optiforge.llm.serving`: apart from the client, everything that starts or prepares
  a server: the model store (``optiforge models``), the embedded llama.cpp server
  (``optiforge serve --local``; in Python ``with serving.local_server(...):``), the vLLM
  launcher (``optiforge serve --model``) and :func:`~optiforge.llm.serving.connect`, the
  convenience path that starts the embedded server on first use. The client never starts
  a server itself.
- :class:`~optiforge.llm.settings.LLMSettings`: the settings this package reads; callers
  pass theirs in (``optiforge.config.load_settings()``), the package reads no config.
- :func:`run_sync`: run a coroutine from sync code on the one persistent background loop,
  so every sync-over-async caller shares the client's connections.

Names are imported lazily so that ``import optiforge.llm`` stays cheap. See docs/llm.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LLM": "optiforge.llm.client",
    "run_sync": "optiforge.llm._loop",
    "ChatResult": "optiforge.llm.types",
    "Budget": "optiforge.llm.types",
    "TagUsage": "optiforge.llm.types",
    "UsageSnapshot": "optiforge.llm.types",
    "LLMError": "optiforge.llm.errors",
    "BudgetExceeded": "optiforge.llm.errors",
    "StructuredOutputError": "optiforge.llm.errors",
    "LLMRequestError": "optiforge.llm.errors",
    "ModelNotFoundError": "optiforge.llm.errors",
    "ContextLengthError": "optiforge.llm.errors",
    "LLMUnavailableError": "optiforge.llm.errors",
    "LLMResponseError": "optiforge.llm.errors",
    "ModelStoreError": "optiforge.llm.errors",
    "LocalServerError": "optiforge.llm.errors",
    "NoServerError": "optiforge.llm.errors",
    "LLMSettings": "optiforge.llm.settings",
    "VllmLaunchError": "optiforge.llm.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'optiforge.llm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
