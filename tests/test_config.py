"""Settings precedence: overrides > environment > optiforge.toml > defaults."""

from pathlib import Path

import pytest

from optiforge.config import Settings, load_settings
from optiforge.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for name in Settings.__dataclass_fields__:
        monkeypatch.delenv(f"OPTIFORGE_{name.upper()}", raising=False)
    monkeypatch.delenv("OPTIFORGE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults_when_nothing_is_set():
    s = load_settings()
    assert s.model == "qwen2.5-coder-1.5b"
    assert s.base_url is None
    assert s.cache is True
    assert s.resolved_cache_dir == s.home / "cache"


def test_precedence_flag_over_env_over_toml(tmp_path, monkeypatch):
    (tmp_path / "optiforge.toml").write_text(
        '[optiforge]\nmodel = "from-toml"\nconcurrency = 3\ntimeout = 9.5\n'
    )
    assert load_settings().model == "from-toml"
    assert load_settings().concurrency == 3
    monkeypatch.setenv("OPTIFORGE_MODEL", "from-env")
    monkeypatch.setenv("OPTIFORGE_CACHE", "off")
    s = load_settings()
    assert (s.model, s.cache, s.timeout) == ("from-env", False, 9.5)
    s = load_settings(model="from-flag", base_url=None)
    assert s.model == "from-flag"


def test_paths_are_expanded(monkeypatch):
    monkeypatch.setenv("OPTIFORGE_CACHE_DIR", "~/x-cache")
    assert load_settings().resolved_cache_dir == Path("~/x-cache").expanduser()


def test_bad_values_name_the_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("OPTIFORGE_CONCURRENCY", "many")
    with pytest.raises(ConfigError, match="concurrency"):
        load_settings()
    monkeypatch.delenv("OPTIFORGE_CONCURRENCY")
    (tmp_path / "optiforge.toml").write_text("[optiforge]\nmodle = 'typo'\n")
    with pytest.raises(ConfigError, match="modle"):
        load_settings()
    (tmp_path / "optiforge.toml").write_text("not toml [")
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings()
    (tmp_path / "optiforge.toml").unlink()
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings(nope=1)


def test_missing_explicit_config_file_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("OPTIFORGE_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()
