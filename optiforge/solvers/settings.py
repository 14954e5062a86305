"""The settings the sandbox reads, passed in by its caller.

``optiforge.solvers`` does not import :mod:`optiforge.config`: the CLI and the agents (the
team's and the direct agent's sandbox runs) resolve the run's settings with
:func:`optiforge.config.load_settings` (flags > ``OPTIFORGE_*`` > ``optiforge.toml``) and
hand them to :class:`~optiforge.solvers.sandbox.SandboxPool`,
:func:`~optiforge.solvers.sandbox.default_pool` or
:func:`~optiforge.solvers.sandbox.probe_isolation` (``settings=``). Any object with the
attributes of :class:`SandboxSettings` works; :class:`optiforge.config.Settings` has all of
them.

Without settings, the sandbox uses :class:`SandboxSettings`'s defaults, which are
``optiforge.config.Settings``'s defaults (``tests/solvers/test_sandbox_settings.py`` checks
that they agree). It reads no environment variable or file for them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SandboxSettings", "default_home"]


def default_home() -> Path:
    """``$XDG_CACHE_HOME/optiforge`` (``~/.cache/optiforge``): the optiforge home."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "optiforge"


@dataclass(frozen=True)
class SandboxSettings:
    """The fields the sandbox reads; see :class:`optiforge.config.Settings` for each.

    ``sandbox_require`` is a pool's default ``require`` (``"none"`` or ``"full"``); the
    optiforge home, LLM cache and model directories are hidden from programs, with the
    user's home and the caller's working directory.
    """

    sandbox_require: str = "none"
    home: Path = field(default_factory=default_home)
    cache_dir: Path | None = None
    models_dir: Path | None = None

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or self.home / "cache"

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir or self.home / "models"
