"""The typer application object shared by every command module.

Command modules (``optiforge/cli/<command>.py``) import ``app`` from here and register
their commands on it. They import heavy packages only inside the command function, so that
``optiforge --help`` stays fast.
"""

from __future__ import annotations

import typer


def paragraphs(text: str) -> str:
    """Help text written hard-wrapped in the source, one line per paragraph: Typer's rich
    help keeps single line breaks, so hard-wrapped lines would be wrapped again by the
    console and leave stubs of a word or two."""
    return "\n\n".join(" ".join(p.split()) for p in text.strip().split("\n\n"))


app = typer.Typer(
    name="optiforge",
    help=(
        "LLMs optimize what gradients cannot reach: prompts, code, numbers, and "
        "optimization models of word problems.\n\n"
        "Without --base-url, optiforge starts an embedded llama.cpp server on this machine "
        "with the default model (Qwen2.5-Coder-1.5B), pulling it first if needed."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@app.callback()
def _root() -> None:
    """Keep ``optiforge`` a command group even while it has a single command."""


@app.command()
def version() -> None:
    """Print the optiforge version, and the isolation generated code gets on this machine."""
    from optiforge import __version__

    typer.echo(__version__)
    from optiforge.config import load_settings
    from optiforge.solvers.sandbox import describe_isolation, probe_isolation

    try:
        typer.echo(describe_isolation(probe_isolation(settings=load_settings())))
    except Exception as e:  # the version must print even where the sandbox cannot start
        typer.echo(f"sandbox isolation: unknown ({type(e).__name__}: {e})")
