"""Command-line interface: a thin shell over the packages (``optiforge --help``)."""

from __future__ import annotations

import importlib
import sys

from optiforge.cli.app import app

# Each module registers its commands on ``app`` when imported. A module that does not exist
# yet is skipped, so the CLI keeps working while commands are added.
_COMMAND_MODULES = ("solve", "eval", "report", "tune", "models", "serve", "graph")


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
        rv = app(args=argv, standalone_mode=False)
        if isinstance(rv, int) and rv:
            sys.exit(rv)
    except OptiforgeError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.stderr.write("aborted\n")
            sys.exit(1)
        raise
