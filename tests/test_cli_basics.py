"""The CLI shell: fast start, no heavy imports, errors without tracebacks."""

import itertools
import subprocess
import sys

import pytest

from optiforge.prompts import PromptError, list_prompts, load_prompt, render_prompt


def _run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "optiforge", *args], capture_output=True, text=True, timeout=60, **kw
    )


def test_help_lists_the_commands():
    out = _run("--help")
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout
    assert "version" in out.stdout


def test_import_and_help_do_not_load_heavy_packages():
    code = (
        "import sys, optiforge, optiforge.cli, optiforge.agents, optiforge.trace;"
        "optiforge.cli._register_commands();"
        "heavy = [m for m in ('litellm', 'openai', 'pyomo', 'xllamacpp', 'vllm', 'highspy',"
        " 'pyscipopt', 'networkx') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_unknown_command_is_a_usage_error():
    out = _run("no-such-command")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr


def test_prompt_loader_errors_are_clear():
    with pytest.raises(PromptError, match="no prompt template"):
        load_prompt("nope/missing")
    with pytest.raises(PromptError, match="no prompt template"):
        load_prompt("../../etc/passwd")
    for name in list_prompts():
        assert load_prompt(name).strip(), name


def test_render_prompt_reports_missing_placeholder(tmp_path, monkeypatch):
    import optiforge.prompts as prompts

    monkeypatch.setattr(prompts, "_ROOT", tmp_path)
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "t.md").write_text("Hello $name, costs $$5 {json: 1}")
    load_prompt.cache_clear()
    try:
        assert render_prompt("g/t", name="Ada") == "Hello Ada, costs $5 {json: 1}"
        with pytest.raises(PromptError, match=r"\$name"):
            render_prompt("g/t")
    finally:
        load_prompt.cache_clear()


@pytest.mark.parametrize("command", [["tune"], ["experience", "build"], ["eval"], ["graph"]])
def test_long_help_is_wrapped_once(command):
    """Typer's rich help keeps single line breaks: help written hard-wrapped in the source
    came out wrapped twice, with stubs of a word or two (``eval` grades``)."""
    import os

    out = _run(*command, "--help", env={**os.environ, "COLUMNS": "80", "NO_COLOR": "1"})
    assert out.returncode == 0, out.stderr
    text = out.stdout.split("╭")[0]  # the description, before the first box
    lines = [line.strip() for line in text.splitlines()][2:]  # after the usage line
    for line, after in itertools.pairwise(lines):
        if line and after:  # inside a paragraph: the console filled the line
            assert len(line) > 45, f"{command}: short line {line!r} before {after!r}"
