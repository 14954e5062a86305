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


def test_bad_value_names_the_setting_and_its_source(monkeypatch, tmp_path):
    monkeypatch.setenv("OPTIFORGE_CONCURRENCY", "many")
    with pytest.raises(ConfigError, match=r"'concurrency' from environment variable OPTIFORGE_"):
        load_settings()
    monkeypatch.delenv("OPTIFORGE_CONCURRENCY")
    (tmp_path / "optiforge.toml").write_text("[optiforge]\ntimeout = 'soon'\n")
    with pytest.raises(ConfigError, match=r"'timeout' from optiforge.toml \(\[optiforge\] table\)"):
        load_settings()
    with pytest.raises(ConfigError, match=r"'local_ctx' from a flag or keyword argument"):
        load_settings(local_ctx="big")
    monkeypatch.setenv("OPTIFORGE_CACHE", "perhaps")
    with pytest.raises(ConfigError, match=r"'cache' from environment variable OPTIFORGE_CACHE"):
        load_settings(timeout=3)
    cfg = tmp_path / "elsewhere.toml"
    cfg.write_text("[optiforge]\nmax_retries = 'lots'\nmodle = 1\n")
    monkeypatch.delenv("OPTIFORGE_CACHE")
    monkeypatch.setenv("OPTIFORGE_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match=r"unknown setting 'modle' in .*elsewhere.toml"):
        load_settings()
    cfg.write_text("[optiforge]\nmax_retries = 'lots'\n")
    with pytest.raises(ConfigError, match=r"'max_retries' from .*elsewhere.toml"):
        load_settings()


def test_each_source_overrides_the_next_field_by_field(monkeypatch, tmp_path):
    (tmp_path / "optiforge.toml").write_text(
        "[optiforge]\nlocal_ctx = 1024\nlocal_parallel = 2\ncache_max_mb = 64\n"
        "local_threads = 3\nhome = '~/of-home'\n"
    )
    monkeypatch.setenv("OPTIFORGE_LOCAL_PARALLEL", "5")
    monkeypatch.setenv("OPTIFORGE_LOCAL_THREADS", "6")
    monkeypatch.setenv("optiforge_timeout", "7")  # names are case-insensitive
    s = load_settings(local_threads=9, cache_max_mb=None)  # None: not given
    assert (s.local_ctx, s.local_parallel, s.local_threads) == (1024, 5, 9)
    assert s.cache_max_mb == 64.0 and s.timeout == 7.0
    assert s.home == Path("~/of-home").expanduser()
    assert s.resolved_models_dir == s.home / "models"


def test_settings_stay_a_frozen_dataclass():
    import dataclasses

    s = load_settings()
    t = dataclasses.replace(s, model="other", concurrency=1)
    assert (t.model, t.concurrency, t.home) == ("other", 1, s.home)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.model = "x"  # type: ignore[misc]
    assert {f.name for f in dataclasses.fields(Settings)} >= {"model", "cache_max_mb"}


def test_booleans_and_empty_values(monkeypatch):
    for raw, want in [
        ("1", True),
        ("yes", True),
        ("on", True),
        ("0", False),
        ("off", False),
        ("", False),
        ("False", False),
    ]:
        monkeypatch.setenv("OPTIFORGE_CACHE", raw)
        assert load_settings().cache is want, raw


def test_toml_without_a_table_and_a_non_table(tmp_path):
    (tmp_path / "optiforge.toml").write_text("model = 'top-level'\n")
    assert load_settings().model == "top-level"
    (tmp_path / "optiforge.toml").write_text("optiforge = 3\n")
    with pytest.raises(ConfigError, match="must be a table"):
        load_settings()


def test_limits_are_checked(monkeypatch):
    for name, bad in [
        ("concurrency", "0"),
        ("cache_max_mb", "-1"),
        ("timeout", "0"),
        ("max_retries", "-1"),
        ("local_threads", "0"),
    ]:
        monkeypatch.setenv(f"OPTIFORGE_{name.upper()}", bad)
        with pytest.raises(ConfigError, match=rf"'{name}' from environment variable"):
            load_settings()
        monkeypatch.delenv(f"OPTIFORGE_{name.upper()}")
    assert load_settings(cache_max_mb=0, local_threads=None).cache_max_mb == 0


def test_the_llm_layers_defaults_are_the_settings_defaults():
    # optiforge.llm reads no config: without settings it uses LLMSettings, which must say
    # what Settings says, field for field (home included, from the same XDG rule).
    import dataclasses

    from optiforge.llm.settings import LLMSettings

    ours, theirs = LLMSettings(), Settings()
    for f in dataclasses.fields(LLMSettings):
        assert f.name in Settings.__dataclass_fields__, f.name
        assert getattr(ours, f.name) == getattr(theirs, f.name), f.name
    assert ours.resolved_cache_dir == theirs.resolved_cache_dir
    assert ours.resolved_models_dir == theirs.resolved_models_dir


def test_precedence_reaches_the_client_the_cli_builds(tmp_path, monkeypatch):
    """Flags > OPTIFORGE_* > optiforge.toml, as the commands (and agents.solve without a
    client) hand settings to the llm layer: nothing in between reads them again."""
    from optiforge.cli.common import connect_llm

    (tmp_path / "optiforge.toml").write_text(
        '[optiforge]\nmodel = "toml/model"\nconcurrency = 3\ntimeout = 9.5\nmax_retries = 1\n'
        f'cache_dir = "{tmp_path / "toml-cache"}"\n'
    )
    monkeypatch.setenv("OPTIFORGE_TIMEOUT", "22")
    monkeypatch.setenv("OPTIFORGE_MODEL", "env/model")
    monkeypatch.setenv("OPTIFORGE_API_KEY", "sk-env")
    settings = load_settings(model="flag/model", base_url=None)
    llm = connect_llm(settings, no_cache=False)
    try:
        assert llm.route == "litellm"  # a provider/model name without base_url
        assert (llm.model, llm.timeout, llm.concurrency, llm.max_retries, llm.api_key) == (
            "flag/model",
            22.0,
            3,
            1,
            "sk-env",
        )
        assert llm.settings is settings
        assert llm.cache.path.parent == tmp_path / "toml-cache"
    finally:
        llm.close()


def test_the_teams_default_client_reads_the_settings(tmp_path, monkeypatch):
    """``agents.solve`` without a client: settings resolved by config (env here), handed
    to serving.connect, whose client may start the embedded server on first use."""
    import optiforge.llm
    from optiforge.agents.team.team import _resolve_llms

    made = []

    def factory(**kwargs):
        made.append(kwargs)
        return optiforge.llm.testing.ScriptedLLM("x")

    import optiforge.llm.testing

    monkeypatch.setattr(optiforge.llm, "LLM", factory)
    monkeypatch.setenv("OPTIFORGE_MODEL", "smollm2-135m")
    monkeypatch.setenv("OPTIFORGE_TIMEOUT", "12")
    _llms, owned = _resolve_llms(None, None)
    assert len(owned) == 1 and made
    kw = made[0]
    assert kw["model"] == "smollm2-135m" and kw["base_url"] is None
    assert kw["settings"].timeout == 12.0 and callable(kw["start_local"])
