"""Fixtures for the LLM tests: the fake OpenAI-compatible server module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent


def _load(name: str):
    # The suite runs in importlib mode, so helper modules beside the tests are loaded by path.
    key = f"_optiforge_tests_llm_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, _HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


@pytest.fixture
def fake():
    """The :mod:`fake_server` module: ``fake.FakeServer``, ``fake.ok``, ``fake.status`` ..."""
    return _load("fake_server")


@pytest.fixture
def make_llm(tmp_path):
    """Factory for an LLM pointed at ``base_url`` with a private cache and quick retries."""
    from optiforge.llm import LLM

    made = []

    def make(base_url: str, **kwargs):
        kwargs.setdefault("model", "fake")
        kwargs.setdefault("cache_dir", tmp_path / "cache")
        kwargs.setdefault("timeout", 5.0)
        kwargs.setdefault("max_retries", 3)
        llm = LLM(base_url=base_url, **kwargs)
        llm.retry_base_delay = 0.01
        made.append(llm)
        return llm

    yield make
    for llm in made:
        llm.close()
