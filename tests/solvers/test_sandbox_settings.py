"""The sandbox's settings are passed in by its callers; the sandbox reads no config."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from optiforge.config import Settings
from optiforge.solvers import SandboxError, SandboxPool, run_sandboxed, sandbox
from optiforge.solvers.settings import SandboxSettings

REPO = Path(__file__).resolve().parents[2]


def test_the_sandboxs_defaults_are_the_settings_defaults():
    # Without settings the sandbox uses SandboxSettings, which must say what Settings says,
    # field for field (home included, from the same XDG rule).
    ours, theirs = SandboxSettings(), Settings()
    for f in dataclasses.fields(SandboxSettings):
        assert f.name in Settings.__dataclass_fields__, f.name
        assert getattr(ours, f.name) == getattr(theirs, f.name), f.name
    assert ours.resolved_cache_dir == theirs.resolved_cache_dir
    assert ours.resolved_models_dir == theirs.resolved_models_dir


def test_a_pool_reads_require_from_the_settings_it_is_given():
    # Checked before any worker starts; config.Settings works as well as SandboxSettings.
    for bad in (
        SandboxSettings(sandbox_require="maybe"),
        dataclasses.replace(Settings(), sandbox_require="maybe"),
    ):
        with pytest.raises(SandboxError, match="sandbox_require must be 'none' or 'full'"):
            SandboxPool(size=1, settings=bad)
    # An explicit require wins over the settings.
    with pytest.raises(SandboxError, match="got 'bad'"):
        SandboxPool(size=1, require="bad", settings=SandboxSettings(sandbox_require="full"))


def test_the_hidden_directories_come_from_the_settings(tmp_path):
    s = SandboxSettings(home=tmp_path / "home", models_dir=tmp_path / "models")
    hidden = sandbox._hidden_paths(s)
    for d in (tmp_path / "home", tmp_path / "home" / "cache", tmp_path / "models"):
        assert str(d) in hidden
    assert os.path.expanduser("~") in hidden


def test_the_settings_start_the_default_pool_only(monkeypatch):
    # A running default pool keeps its settings: the function is not even called.
    class Running:
        closed = False

        def run(self, code, **kwargs):
            return ("ran", code)

    def boom():
        raise AssertionError("settings read although the pool was running")

    monkeypatch.setattr(sandbox, "_default_pool", Running())
    assert run_sandboxed("pass", settings=boom) == ("ran", "pass")


def test_the_environment_reaches_the_sandbox_only_through_load_settings():
    # What the agents do (settings=load_settings) honours OPTIFORGE_SANDBOX_REQUIRE; the
    # sandbox alone does not read it.
    script = textwrap.dedent(
        """
        import os
        from optiforge.config import load_settings
        from optiforge.solvers import SandboxError, run_sandboxed, sandbox
        os.environ["OPTIFORGE_SANDBOX_REQUIRE"] = "maybe"
        try:
            run_sandboxed("pass", settings=load_settings)
        except SandboxError as e:
            print("REFUSED", e)
        print("OWN", sandbox.SandboxSettings().sandbox_require)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("OPTIFORGE_SANDBOX_REQUIRE", None)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr
    assert "REFUSED sandbox_require must be 'none' or 'full', got 'maybe'" in out.stdout
    assert "OWN none" in out.stdout
