"""Serving models, apart from the client: everything that starts or prepares a server.

- :mod:`optiforge.llm.serving.store`: the local model store (``optiforge models``).
- :mod:`optiforge.llm.serving.local`: the embedded llama.cpp server (``optiforge serve
  --local``); :func:`local_server` (a context manager) and :func:`ensure_local_server` are
  the explicit ways to start it in a Python program.
- :mod:`optiforge.llm.serving.vllm`: the vLLM launcher (``optiforge serve --model``), and
  ``gguf_to_hf.py``, the GGUF conversion it runs in vLLM's environment.
- :func:`connect`: the convenience path of the CLI and ``optiforge.agents.solve``: a client
  for the run's settings that starts the embedded server on first use when it needs one.

The client (:class:`optiforge.llm.LLM`) never imports this package and never starts a
server. Nothing here reads :mod:`optiforge.config`: settings are passed in. Names are
imported lazily, so ``import optiforge.llm.serving`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "local_server": "optiforge.llm.serving.local",
    "ensure_local_server": "optiforge.llm.serving.local",
    "stop_local_servers": "optiforge.llm.serving.local",
    "server_for_url": "optiforge.llm.serving.local",
    "LocalServer": "optiforge.llm.serving.local",
    "ModelStore": "optiforge.llm.serving.store",
    "MODELS": "optiforge.llm.serving.store",
    "VllmConfig": "optiforge.llm.serving.vllm",
    "launch_vllm": "optiforge.llm.serving.vllm",
}

__all__ = sorted([*_EXPORTS, "connect"])


def connect(settings: Any = None, **llm_kwargs: Any) -> Any:
    """An :class:`optiforge.llm.LLM` for ``settings`` (model, base_url and the rest;
    ``llm_kwargs`` override single arguments), which on its first call starts the
    embedded llama.cpp server when it needs one: when the settings name no ``base_url``
    and the model is not a hosted ``provider/model`` name. That server is started with
    :func:`ensure_local_server` (a store model is pulled first) and serves until the
    process exits.

    This is the convenience path of ``optiforge solve/eval/tune`` and of
    ``optiforge.agents.solve(...)`` without a client; a program that wants the server's
    lifetime in its hands uses ``with local_server(...):`` and a plain ``LLM``.
    """
    import optiforge.llm as llm_pkg

    if settings is None:
        from optiforge.llm.settings import LLMSettings

        settings = LLMSettings()

    def start(model: str) -> Any:
        from optiforge.llm.serving.local import ensure_local_server

        return ensure_local_server(model, settings).endpoint

    llm_kwargs.setdefault("model", settings.model)
    llm_kwargs.setdefault("base_url", settings.base_url)
    # Looked up on the package at call time, so a test's stand-in for LLM is used too.
    return llm_pkg.LLM(settings=settings, start_local=start, **llm_kwargs)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'optiforge.llm.serving' has no attribute {name!r}")
    attr = "launch" if name == "launch_vllm" else name
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
