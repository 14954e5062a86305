"""The one rule for a new parameter value: :func:`coerce_value`.

Every path that gives a parameter a new value through a check uses it:
:meth:`ParameterNode.set <optiforge.trace.nodes.ParameterNode.set>` /
``validate``, and the optimizers, which only clean a reply (code fences, surrounding quotes)
before handing the value to the parameter. A trainable function's code
(:class:`~optiforge.trace.bundle.CodeParameter`) is checked by compiling it for real; a
plain text parameter whose value is a ``def`` is checked here with :func:`check_source`.

The rule, by the type of the current value:

* ``None``: anything is accepted as is.
* ``bool``: a bool; the ints ``0`` and ``1``; the text ``true``/``false``, ``yes``/``no`` or
  ``1``/``0`` (any case, surrounding whitespace, quotes and backticks ignored).
* ``int``: an int, a float with no fractional part, or text holding one; ``float``: any
  number or numeric text. Text may use thousands separators (``"1,000"``) and may hold
  prose around exactly one number (``"w = 2.5"``); text with no number or several numbers is
  rejected. A bool is never a number; NaN and infinities are rejected. A one-item list
  holding a number counts as that number (``[2.5]``).
* ``str``: text, or a number or bool (written with ``str``). A list, dict or other object is
  rejected (a prompt does not silently become JSON), and so is empty text for a parameter
  whose text is not empty. If the current text is a function definition, the new text must
  compile and define a function with the same name and parameters (:func:`check_source`).
* ``list``, ``tuple``, ``dict``, ``set``: a value of that type, or text holding a JSON or
  Python literal of it; a tuple or set also accepts a list, tuple or set.
* any other type: a value of that type.

Rejections raise :class:`~optiforge.trace.errors.ValueTypeError` (code problems its subclass
:class:`~optiforge.trace.errors.CodeError`) with a message naming the parameter.
"""

from __future__ import annotations

import ast
import json
import math
import re
import textwrap
from typing import Any

from optiforge.trace.errors import CodeError, ValueTypeError

__all__ = ["check_source", "coerce_value", "function_signature", "looks_like_code"]

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})
_QUOTES = "`'\" \t\r\n"


def looks_like_code(value: Any) -> bool:
    """True for a string holding a Python function definition."""
    return isinstance(value, str) and bool(re.search(r"^\s*(async\s+)?def\s+\w+\s*\(", value, re.M))


def _first_function(tree: ast.AST) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    for n in ast.walk(tree):
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef):
            return n
    return None


def _signature(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    args = fn.args
    # Names and kinds of parameters matter to callers; annotations and defaults do not.
    parts = [a.arg for a in args.posonlyargs] + ["/"] if args.posonlyargs else []
    parts += [a.arg for a in args.args]
    if args.vararg:
        parts.append("*" + args.vararg.arg)
    elif args.kwonlyargs:
        parts.append("*")
    parts += [a.arg for a in args.kwonlyargs]
    if args.kwarg:
        parts.append("**" + args.kwarg.arg)
    return f"{fn.name}({', '.join(parts)})"


def function_signature(source: str) -> str | None:
    """``name(arg, ...)`` of the first function defined in ``source``; None if there is none
    or the source does not parse."""
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return None
    fn = _first_function(tree)
    return _signature(fn) if fn else None


def check_source(new: Any, old: str, name: str = "parameter") -> str:
    """Return ``new`` if it compiles and defines a function with the same name and
    parameters as the one in ``old``; raise :class:`CodeError` otherwise.

    This is the check for text parameters holding code; it does not run the code. (The code
    of a trainable bundle is checked by compiling it into a function, see
    :meth:`optiforge.trace.bundle.Bundle.compile_source`.)
    """
    if not isinstance(new, str):
        raise CodeError(f"code for {name!r} must be text holding a def, got {type(new).__name__}")
    try:
        tree = ast.parse(textwrap.dedent(new))
        compile(tree, "<suggested code>", "exec")
    except SyntaxError as exc:
        raise CodeError(
            f"suggested code for {name!r} does not compile: {exc.msg} (line {exc.lineno})"
        ) from None
    want = function_signature(old)
    wanted_name = want.split("(", 1)[0] if want else None
    fn = next(
        (
            n
            for n in tree.body
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == wanted_name
        ),
        None,
    ) or _first_function(tree)
    if fn is None:
        raise CodeError(f"suggested code for {name!r} defines no function; keep the 'def' line")
    got = _signature(fn)
    if want is not None and got != want:
        raise CodeError(
            f"suggested code for {name!r} changes the signature: expected {want}, got {got}"
        )
    return new


def _to_number(raw: Any, fail: Any) -> float:
    if isinstance(raw, bool):
        raise fail("is a bool, not a number")
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        text = raw.strip(_QUOTES).replace(",", "").strip()
        try:
            value = float(text)
        except ValueError:
            found = _NUMBER.findall(text)
            if len(found) != 1:
                raise fail("is not a number") from None
            value = float(found[0])
    elif isinstance(raw, list) and len(raw) == 1:
        return _to_number(raw[0], fail)
    else:
        raise fail("is not a number")
    if not math.isfinite(value):
        raise fail("is not a finite number")
    return value


def _parse_literal(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError(text) from None


def coerce_value(
    current: Any, raw: Any, name: str = "parameter", *, is_code: bool | None = None
) -> Any:
    """Convert ``raw`` (often text from an LLM) to the type of ``current`` by the rule in
    this module's docstring, or raise :class:`ValueTypeError`.

    ``is_code`` forces (True) or forbids (False) the code check for text; by default text
    holding a function definition is code. ``raw`` is a plain value (use
    :func:`optiforge.trace.coerce_value`, which also takes a node).
    """
    if current is None:
        return raw
    t = type(current)

    def fail(why: str) -> ValueTypeError:
        shown = repr(raw)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        return ValueTypeError(f"parameter {name!r} holds a {t.__name__}; {shown} {why}")

    if is_code or (is_code is None and looks_like_code(current)):
        return check_source(raw, current, name)
    if t is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, int) and raw in (0, 1):
            return bool(raw)
        if isinstance(raw, str):
            text = raw.strip(_QUOTES).lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
        raise fail("is not true or false")
    if t is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str):
            try:  # exact, also beyond float precision
                return int(raw.strip(_QUOTES).replace(",", ""))
            except ValueError:
                pass
        value = _to_number(raw, fail)
        if value != int(value):
            raise fail("is not a whole number")
        return int(value)
    if t is float:
        return _to_number(raw, fail)
    if t is str:
        if isinstance(raw, str):
            value = raw
        elif isinstance(raw, int | float | bool):
            value = str(raw)
        else:
            raise fail("is not text")
        if not value.strip() and current.strip():
            raise fail("is empty text for a non-empty text parameter")
        return value
    if t in (list, tuple, dict, set):
        if isinstance(raw, str):
            try:
                raw = _parse_literal(raw)
            except ValueError:
                raise fail(f"is not a {t.__name__} literal") from None
        if isinstance(raw, t):
            return raw
        if t in (tuple, set) and isinstance(raw, list | tuple | set):
            return t(raw)
        raise fail(f"is not a {t.__name__}")
    if isinstance(raw, t):
        return raw
    raise fail(f"is not a {t.__name__}")
