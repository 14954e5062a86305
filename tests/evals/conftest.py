"""Fixtures for the eval tests: the fake agents module, loaded by path."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

FAKE_AGENTS = Path(__file__).with_name("fake_agents.py")


@pytest.fixture(scope="session")
def fake():
    spec = importlib.util.spec_from_file_location("optiforge_test_fake_agents", FAKE_AGENTS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake_server_url():
    """A fake OpenAI-compatible server (tests/llm/fake_server.py) answering "ok"."""
    spec = importlib.util.spec_from_file_location(
        "optiforge_test_fake_server", Path(__file__).parents[1] / "llm" / "fake_server.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with module.FakeServer([module.ok("ok")]) as srv:
        yield srv.base_url
