"""One settings object, read from flags, the environment and ``optiforge.toml``.

Precedence, highest first: explicit overrides (CLI flags, keyword arguments), environment
variables ``OPTIFORGE_<FIELD>`` (upper case), the ``[optiforge]`` table of an
``optiforge.toml`` file (path from ``OPTIFORGE_CONFIG``, else ``./optiforge.toml``), then the
defaults below.

:class:`Settings` is a frozen dataclass (so ``dataclasses.replace(settings, ...)`` works);
:func:`load_settings` reads and validates it with pydantic-settings, from a model built from
the dataclass's fields and types, so a new field needs only a line in the dataclass.
"""

from __future__ import annotations

import os
import sys
from contextvars import ContextVar
from dataclasses import MISSING, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, get_type_hints

from optiforge.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def _default_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "optiforge"


@dataclass(frozen=True)
class Settings:
    """Run-wide settings. Construct with :func:`load_settings`, not directly.

    A field's ``metadata`` holds pydantic constraints (``ge``, ``gt``) that
    :func:`load_settings` checks.
    """

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
    cache_max_mb: float = field(default=1024.0, metadata={"ge": 0})
    models_dir: Path | None = None
    #: Requests in flight at once from one client.
    concurrency: int = field(default=4, metadata={"ge": 1})
    #: Seconds before one request times out.
    timeout: float = field(default=300.0, metadata={"gt": 0})
    max_retries: int = field(default=4, metadata={"ge": 0})
    #: Parallel slots of the embedded llama.cpp server.
    local_parallel: int = field(default=4, metadata={"ge": 1})
    #: Context size per slot of the embedded server, in tokens.
    local_ctx: int = field(default=4096, metadata={"ge": 1})
    #: CPU threads of the embedded server (None = every usable core; set it lower on a
    #: machine that other jobs keep busy, see optiforge.llm.serving.local.default_threads).
    local_threads: int | None = field(default=None, metadata={"ge": 1})
    #: ``full``: refuse to run generated code unless the sandbox has every isolation layer
    #: (namespaces, read-only view, PID namespace, process limit); ``none``: run with what
    #: the machine allows and warn once. See docs/solvers.md ("Isolation").
    sandbox_require: str = "none"

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or self.home / "cache"

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir or self.home / "models"


# ---------------------------------------------------------------- loading (pydantic-settings)

#: The table of ``optiforge.toml`` for the load in progress, and the file it came from.
_TOML_TABLE: ContextVar[tuple[dict[str, Any], str]] = ContextVar("_TOML_TABLE", default=({}, ""))


@lru_cache(maxsize=1)
def _settings_model() -> Any:
    """The pydantic-settings class that reads and validates :class:`Settings`: its fields are
    the dataclass's (names, types, defaults), so the dataclass stays the one list of
    settings. Built on first use, so ``import optiforge.config`` stays light."""
    from pydantic import Field, ValidationInfo, create_model, field_validator
    from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

    class TomlTableSource(PydanticBaseSettingsSource):
        """The ``[optiforge]`` table that :func:`_toml_table` read for this load."""

        def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
            return _TOML_TABLE.get()[0].get(field_name), field_name, False

        def __call__(self) -> dict[str, Any]:
            return dict(_TOML_TABLE.get()[0])

    class SettingsSource(BaseSettings):
        model_config = SettingsConfigDict(
            env_prefix="OPTIFORGE_", case_sensitive=False, extra="forbid"
        )

        @field_validator("*", mode="before")
        @classmethod
        def _empty_bool_is_false(cls, value: Any, info: ValidationInfo) -> Any:
            # OPTIFORGE_CACHE= (set but empty) has always meant off.
            ann = cls.model_fields[info.field_name].annotation if info.field_name else None
            if ann is bool and isinstance(value, str) and not value.strip():
                return False
            return value

        @field_validator("*", mode="after")
        @classmethod
        def _expand_user(cls, value: Any) -> Any:
            return value.expanduser() if isinstance(value, Path) else value

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            # Highest first: flags/keyword overrides, OPTIFORGE_* variables, optiforge.toml.
            return (init_settings, env_settings, TomlTableSource(settings_cls))

    hints = get_type_hints(Settings)
    spec: dict[str, Any] = {}
    for f in fields(Settings):
        limits = dict(f.metadata)  # ge/gt constraints, see Settings
        if f.default is not MISSING:
            spec[f.name] = (hints[f.name], Field(default=f.default, **limits))
        else:
            spec[f.name] = (hints[f.name], Field(default_factory=f.default_factory, **limits))
    return create_model("SettingsSource", __base__=SettingsSource, **spec)


def _toml_table(path: Path | None) -> tuple[dict[str, Any], str]:
    if path is None:
        env = os.environ.get("OPTIFORGE_CONFIG")
        path = Path(env) if env else Path("optiforge.toml")
        if not path.exists():
            if env:
                raise ConfigError(f"OPTIFORGE_CONFIG points to {path}, which does not exist")
            return {}, ""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    table = data.get("optiforge", data)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [optiforge] must be a table")
    return table, str(path)


def _source_of(name: str, overrides: dict[str, Any], toml: tuple[dict[str, Any], str]) -> str:
    """Where the value of setting ``name`` came from, for an error message."""
    if name in overrides:
        return "a flag or keyword argument"
    env = f"OPTIFORGE_{name.upper()}"
    if any(k.upper() == env for k in os.environ):
        return f"environment variable {env}"
    if name in toml[0]:
        return f"{toml[1]} ([optiforge] table)"
    return "the default"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from overrides > environment > ``optiforge.toml`` > defaults.

    Overrides whose value is None are ignored, so CLI flags can be passed straight through.
    Values are validated by pydantic (pydantic-settings reads the environment); an unknown
    key or a bad value raises :class:`ConfigError` naming the setting and where it came from
    (flag, environment variable, or the toml file).
    """
    known = {f.name for f in fields(Settings)}
    for key in overrides:
        if key not in known:
            raise ConfigError(f"unknown setting {key!r}; known: {sorted(known)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    toml = _toml_table(config_file)
    for key in toml[0]:
        if key not in known:
            raise ConfigError(f"unknown setting {key!r} in {toml[1]}; known: {sorted(known)}")
    from pydantic import ValidationError

    token = _TOML_TABLE.set(toml)
    try:
        model = _settings_model()(**given)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = str(err["loc"][0]) if err.get("loc") else "?"
            problems.append(
                f"setting {name!r} from {_source_of(name, given, toml)}: {err['msg']} "
                f"(got {err.get('input')!r})"
            )
        raise ConfigError("; ".join(problems)) from None
    finally:
        _TOML_TABLE.reset(token)
    return Settings(**{name: getattr(model, name) for name in known})
