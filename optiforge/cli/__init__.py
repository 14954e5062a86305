"""Command-line interface: a thin shell over the packages (``optiforge --help``)."""

from __future__ import annotations

import importlib
import sys

from optiforge.cli.app import app

# Each module registers its commands on ``app`` when imported. A module that does not exist
# yet is skipped, so the CLI keeps working while commands are added.
_COMMAND_MODULES = (
    "solve",
    "eval",
    "report",
    "tune",
    "models",
    "serve",
    "graph",
    "cache",
    "experience",
)


def _register_commands() -> None:
    for name in _COMMAND_MODULES:
        try:
            importlib.import_module(f"optiforge.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"optiforge.cli.{name}":
                raise


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``optiforge`` console script.

    Expected failures (subclasses of :class:`optiforge.errors.OptiforgeError`) are printed as
    one clear message with exit status 2, never as a traceback.
    """
    from optiforge.errors import OptiforgeError

    _register_commands()
    try:
        # Standalone mode: click handles its own usage errors (exit 2) and Ctrl-C.
        app(args=argv, prog_name="optiforge")
    except OptiforgeError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)
