"""``optiforge cache stats|prune|clear``: inspect and shrink the LLM answer cache."""

from __future__ import annotations

import datetime as _dt
import json
import re

import typer

from optiforge.cli.app import app

cache_app = typer.Typer(
    help=(
        "Inspect and shrink the LLM answer cache (SQLite, one row per sample). It is also "
        "capped by the cache_max_mb setting (OPTIFORGE_CACHE_MAX_MB, default 1024; 0 = no "
        "cap): past the cap the oldest answers are deleted first."
    ),
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*")


def parse_age(text: str) -> float:
    """``"30d"`` -> seconds. Units: s, m, h, d, w. Raises ConfigError on anything else."""
    from optiforge.errors import ConfigError

    m = _AGE.fullmatch(text or "")
    if not m:
        raise ConfigError(
            f"--older-than must be a number and a unit (s, m, h, d, w), like 30d or 12h; "
            f"got {text!r}"
        )
    return float(m.group(1)) * _UNITS[m.group(2)]


def _open(cache_dir: str | None):
    """The settings' cache (``--cache-dir`` wins), or None when no cache file exists yet."""
    from optiforge.config import load_settings
    from optiforge.llm.cache import ResponseCache

    s = load_settings(cache_dir=cache_dir)
    directory = s.resolved_cache_dir
    if not (directory / "llm_cache.sqlite3").exists():
        return None, directory
    return ResponseCache(directory, max_mb=s.cache_max_mb), directory


_DIR_HELP = "Cache folder (default: OPTIFORGE_CACHE_DIR or ~/.cache/optiforge/cache)."


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@cache_app.command("stats")
def stats(
    cache_dir: str = typer.Option(None, "--cache-dir", help=_DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Show the cache's rows, size on disk, cap and the age of its oldest answer."""
    cache, directory = _open(cache_dir)
    if cache is None:
        info = {"path": str(directory / "llm_cache.sqlite3"), "rows": 0, "exists": False}
    else:
        try:
            info = {**cache.stats(), "exists": True}
        finally:
            cache.close()
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    if not info["exists"]:
        typer.echo(f"no cache yet at {info['path']}")
        return
    cap = f"{info['max_bytes'] / 2**20:,.0f} MB" if info["max_bytes"] else "none"
    typer.echo(
        f"{info['path']}\n"
        f"  answers:  {info['rows']:,}\n"
        f"  data:     {info['data_bytes'] / 2**20:,.1f} MB (file on disk "
        f"{info['file_bytes'] / 2**20:,.1f} MB)\n"
        f"  cap:      {cap}\n"
        f"  oldest:   {_when(info['oldest'])}\n"
        f"  newest:   {_when(info['newest'])}"
    )


@cache_app.command("prune")
def prune(
    older_than: str = typer.Option(
        ..., "--older-than", help="Delete answers older than this: 30d, 12h, 90m, 2w, 45s."
    ),
    cache_dir: str = typer.Option(None, "--cache-dir", help=_DIR_HELP),
) -> None:
    """Delete answers older than --older-than and give the space back to the disk."""
    age = parse_age(older_than)
    cache, directory = _open(cache_dir)
    if cache is None:
        typer.echo(f"no cache yet at {directory / 'llm_cache.sqlite3'}; nothing to prune")
        return
    try:
        before = cache.stats()["file_bytes"]
        n = cache.prune(age)
        compacted = cache.vacuum()
        after = cache.stats()
    finally:
        cache.close()
    typer.echo(
        f"deleted {n:,} answers older than {older_than}; {after['rows']:,} left, file "
        f"{before / 2**20:,.1f} MB -> {after['file_bytes'] / 2**20:,.1f} MB"
        + ("" if compacted else " (in use by another process: freed pages are reused later)")
    )


@cache_app.command("clear")
def clear(
    cache_dir: str = typer.Option(None, "--cache-dir", help=_DIR_HELP),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete every cached answer (the next identical calls go to the model again)."""
    cache, directory = _open(cache_dir)
    if cache is None:
        typer.echo(f"no cache yet at {directory / 'llm_cache.sqlite3'}; nothing to clear")
        return
    try:
        rows = len(cache)
        if not yes and not typer.confirm(f"delete all {rows:,} cached answers in {directory}?"):
            raise typer.Exit(1)
        cache.clear()
        cache.vacuum()
    finally:
        cache.close()
    typer.echo(f"deleted {rows:,} answers from {directory}")
