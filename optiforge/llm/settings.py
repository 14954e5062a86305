"""The settings the llm layer reads, passed in by its caller.

``optiforge.llm`` does not import :mod:`optiforge.config`: the CLI and the top-level helpers
(``optiforge.agents.solve`` without a client, the examples) resolve the run's settings
with :func:`optiforge.config.load_settings` (flags > ``OPTIFORGE_*`` > ``optiforge.toml``)
and hand the result to :class:`~optiforge.llm.LLM` (``settings=``) and to
:mod:`optiforge.llm.serving`. Any object with the attributes of :class:`LLMSettings` works;
:class:`optiforge.config.Settings` has all of them.

Without settings, the llm layer uses :class:`LLMSettings`'s defaults, which are
``optiforge.config.Settings``'s defaults (``tests/test_config.py`` checks that they agree).
It reads no environment variable or file for them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

#: The model used when none is named: a model-store name.
DEFAULT_MODEL = "qwen2.5-coder-1.5b"


def default_home() -> Path:
    """``$XDG_CACHE_HOME/optiforge`` (``~/.cache/optiforge``): the model store and cache root."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "optiforge"


@dataclass(frozen=True)
class LLMSettings:
    """The fields the client (:class:`~optiforge.llm.LLM`) and the serving code
    (:mod:`optiforge.llm.serving`) read; see :class:`optiforge.config.Settings` for what
    each one means."""

    model: str = DEFAULT_MODEL
    base_url: str | None = None
    api_key: str | None = None
    home: Path = field(default_factory=default_home)
    cache: bool = True
    cache_dir: Path | None = None
    cache_max_mb: float = 1024.0
    models_dir: Path | None = None
    concurrency: int = 4
    timeout: float = 300.0
    max_retries: int = 4
    local_parallel: int = 4
    local_ctx: int = 4096
    local_threads: int | None = None

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or self.home / "cache"

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir or self.home / "models"
