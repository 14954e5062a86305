"""The source text of a Python function, as a trainable bundle shows and edits it.

Below :mod:`optiforge.trace.nodes` (an :class:`~optiforge.trace.nodes.Op` shows its
function's source) and :mod:`optiforge.trace.bundle` (a trainable bundle's code parameter
starts from it); standard library only.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable

from optiforge.trace.errors import BundleError

__all__ = ["function_source"]


def function_source(fn: Callable) -> str:
    """Return the source of ``fn`` from its ``def`` line (decorators stripped), dedented.

    Raises :class:`BundleError` for lambdas, builtins and functions whose source file is
    not available.
    """
    fn = inspect.unwrap(fn)
    if not inspect.isfunction(fn):
        raise BundleError(
            f"{fn!r} is not a Python function defined with def (builtins and C functions "
            "have no source); wrap it in a def to make it trainable"
        )
    if fn.__name__ == "<lambda>":
        raise BundleError(
            "a lambda has no def statement to optimize; define the function with def to make "
            "it trainable"
        )
    try:
        raw = inspect.getsource(fn)
    except (OSError, TypeError):
        raise BundleError(
            f"the source of {fn.__qualname__} is not available (defined in an interactive "
            "session or by exec?); define it in a .py file to make it trainable"
        ) from None
    text = textwrap.dedent(raw)
    try:
        tree = ast.parse(text)
    except SyntaxError:
        raise BundleError(
            f"cannot parse the source of {fn.__qualname__} on its own; define it with a plain "
            "def statement"
        ) from None
    first = tree.body[0] if tree.body else None
    if not isinstance(first, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise BundleError(f"the source of {fn.__qualname__} does not start with a def statement")
    lines = text.splitlines(keepends=True)
    return "".join(lines[first.lineno - 1 : first.end_lineno]).rstrip() + "\n"
