"""Shared fixtures for the whole suite.

- ``scripted_llm``: a factory for :class:`optiforge.llm.testing.ScriptedLLM`
  (``llm = scripted_llm(['{"x": 1}'])``); closed after the test.
- ``tiny_llm``: SmolLM2-135M on the embedded llama.cpp server (plumbing only: its answers are
  nonsense). ``coder_llm``: Qwen2.5-Coder-1.5B, the default model. Both start once per
  session, share the process's embedded server (started explicitly by the fixture), use their own temporary cache directory
  (so answers cached by one test are hits for the next identical call), and may only be
  used by tests marked ``@pytest.mark.slow``. Models come from the store
  (``Settings.resolved_models_dir``), pulled on first use.
"""

from __future__ import annotations

import dataclasses

import pytest


@pytest.fixture
def scripted_llm():
    """Factory: ``scripted_llm(replies_or_callable, **kwargs) -> ScriptedLLM``."""
    from optiforge.llm.testing import ScriptedLLM

    made: list[ScriptedLLM] = []

    def make(script, **kwargs) -> ScriptedLLM:
        llm = ScriptedLLM(script, **kwargs)
        made.append(llm)
        return llm

    yield make
    for llm in made:
        llm.close()


def _session_llm(tmp_path_factory, model: str):
    from optiforge.config import load_settings
    from optiforge.llm import LLM
    from optiforge.llm.serving import ensure_local_server

    # Always the embedded server, whatever OPTIFORGE_BASE_URL says in the environment;
    # started here, explicitly (a client never starts one), for the rest of the session.
    settings = dataclasses.replace(load_settings(), model=model, base_url=None, cache=True)
    ensure_local_server(model, settings)
    llm = LLM(settings=settings, cache_dir=tmp_path_factory.mktemp(f"llm-cache-{model}"))
    llm.ensure_server()
    return llm


@pytest.fixture(scope="session")
def _tiny_llm_session(tmp_path_factory):
    llm = _session_llm(tmp_path_factory, "smollm2-135m")
    yield llm
    llm.close()


@pytest.fixture(scope="session")
def _coder_llm_session(tmp_path_factory):
    llm = _session_llm(tmp_path_factory, "qwen2.5-coder-1.5b")
    yield llm
    llm.close()


def _require_slow(request, name: str) -> None:
    if request.node.get_closest_marker("slow") is None:
        pytest.fail(f"the {name} fixture runs a real model: mark the test @pytest.mark.slow")


@pytest.fixture
def tiny_llm(request):
    """SmolLM2-135M on the embedded server (session-wide; tests must be marked slow)."""
    _require_slow(request, "tiny_llm")
    return request.getfixturevalue("_tiny_llm_session")


@pytest.fixture
def coder_llm(request):
    """Qwen2.5-Coder-1.5B on the embedded server (session-wide; tests must be marked slow)."""
    _require_slow(request, "coder_llm")
    return request.getfixturevalue("_coder_llm_session")
