"""Shared fixtures: one sandbox pool for the whole solvers test session."""

from __future__ import annotations

import pytest

from optiforge.solvers.sandbox import SandboxPool


@pytest.fixture(scope="session")
def pool():
    with SandboxPool(size=2, timeout=30.0) as p:
        p.warm_up()
        yield p


@pytest.fixture(scope="session")
def basic_pool():
    """The unprivileged fallback (fork, rlimits, audit hook), as on a machine without root."""
    with SandboxPool(size=1, timeout=30.0, isolation="basic") as p:
        p.warm_up()
        yield p
