"""One settings object, read from flags, the environment and ``optiforge.toml``.

Precedence, highest first: explicit overrides (CLI flags, keyword arguments), environment
variables ``OPTIFORGE_<FIELD>`` (upper case), the ``[optiforge]`` table of an
``optiforge.toml`` file (path from ``OPTIFORGE_CONFIG``, else ``./optiforge.toml``), then the
defaults below.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from optiforge.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def _default_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "optiforge"


@dataclass(frozen=True)
class Settings:
    """Run-wide settings. Construct with :func:`load_settings`, not directly."""

    #: Model name: a model-store name (e.g. ``qwen2.5-coder-1.5b``), a served model id, or a
    #: ``provider/model`` name for litellm.
    model: str = "qwen2.5-coder-1.5b"
    #: OpenAI-compatible base URL (``http://host:8000/v1``). None starts the embedded server.
    base_url: str | None = None
    api_key: str | None = None
    #: Root for the model store and the LLM cache.
    home: Path = field(default_factory=_default_home)
    cache: bool = True
    cache_dir: Path | None = None
    #: Cap of the LLM answer cache in MB (0 = no cap): past it the oldest answers go first.
    cache_max_mb: float = 1024.0
    models_dir: Path | None = None
    #: Requests in flight at once from one client.
    concurrency: int = 4
    #: Seconds before one request times out.
    timeout: float = 300.0
    max_retries: int = 4
    #: Parallel slots of the embedded llama.cpp server.
    local_parallel: int = 4
    #: Context size per slot of the embedded server, in tokens.
    local_ctx: int = 4096
    #: CPU threads of the embedded server (None = every usable core; set it lower on a
    #: machine that other jobs keep busy, see optiforge.llm.local.default_threads).
    local_threads: int | None = None

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or self.home / "cache"

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir or self.home / "models"


_BOOL_TRUE = {"1", "true", "yes", "on"}
_BOOL_FALSE = {"0", "false", "no", "off", ""}


def _coerce(name: str, raw: Any, target: Any) -> Any:
    """Convert a string or TOML value to the field's type, or raise ConfigError."""
    if raw is None:
        return None
    t = str(target)
    try:
        if "bool" in t:
            if isinstance(raw, bool):
                return raw
            s = str(raw).strip().lower()
            if s in _BOOL_TRUE:
                return True
            if s in _BOOL_FALSE:
                return False
            raise ValueError(f"expected true/false, got {raw!r}")
        if "int" in t and "float" not in t:
            return int(raw)
        if "float" in t:
            return float(raw)
        if "Path" in t:
            return Path(str(raw)).expanduser()
        return str(raw)
    except ValueError as exc:
        raise ConfigError(f"setting {name!r}: {exc}") from None


def _toml_table(path: Path | None) -> dict[str, Any]:
    if path is None:
        env = os.environ.get("OPTIFORGE_CONFIG")
        path = Path(env) if env else Path("optiforge.toml")
        if not path.exists():
            if env:
                raise ConfigError(f"OPTIFORGE_CONFIG points to {path}, which does not exist")
            return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    table = data.get("optiforge", data)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [optiforge] must be a table")
    return table


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from overrides > environment > ``optiforge.toml`` > defaults.

    Overrides whose value is None are ignored, so CLI flags can be passed straight through.
    Unknown keys raise :class:`ConfigError` naming the key.
    """
    known = {f.name: f for f in fields(Settings)}
    values: dict[str, Any] = {}
    for key, raw in _toml_table(config_file).items():
        if key not in known:
            raise ConfigError(f"unknown setting {key!r} in optiforge.toml; known: {sorted(known)}")
        values[key] = _coerce(key, raw, known[key].type)
    for name, f in known.items():
        env = os.environ.get(f"OPTIFORGE_{name.upper()}")
        if env is not None:
            values[name] = _coerce(name, env, f.type)
    for key, raw in overrides.items():
        if key not in known:
            raise ConfigError(f"unknown setting {key!r}; known: {sorted(known)}")
        if raw is not None:
            values[key] = _coerce(key, raw, known[key].type)
    return dataclasses.replace(Settings(), **values)
