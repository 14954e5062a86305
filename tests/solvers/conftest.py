"""Shared fixtures: one sandbox pool for the whole solvers test session."""

from __future__ import annotations

import pytest

from optiforge.solvers.sandbox import SandboxPool


@pytest.fixture(scope="session")
def pool():
    with SandboxPool(size=2, timeout=30.0) as p:
        p.warm_up()
        yield p
