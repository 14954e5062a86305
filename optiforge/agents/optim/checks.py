"""Type checks for suggested parameter values.

A new value must have the kind of the value it replaces: a number stays a number (an
``int`` stays integral), a bool stays a bool, a list or dict keeps its container type, and
code must compile and keep the function's name and signature. :func:`coerce_value` converts
what the model wrote (often a string) into that kind or raises
:class:`InvalidValueError` saying why.
"""

from __future__ import annotations

import ast
import json
import math
import re
import textwrap
from typing import Any

from optiforge.agents.optim.errors import InvalidValueError

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def looks_like_code(value: Any) -> bool:
    """True for a string holding a Python function definition."""
    return isinstance(value, str) and bool(re.search(r"^\s*(async\s+)?def\s+\w+\s*\(", value, re.M))


def _first_function(tree: ast.AST) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return node
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


def check_code(new: str, old: str) -> str:
    """Return ``new`` (dedented, fence stripped) if it compiles and defines a function with
    the same name and parameters as ``old``; raise :class:`InvalidValueError` otherwise."""
    if not isinstance(new, str):
        raise InvalidValueError(f"code must be a string, got {type(new).__name__}")
    src = new.strip("\n")
    fence = re.fullmatch(r"\s*```[a-zA-Z0-9_+-]*\s*\n(.*?)\n?```\s*", src, re.DOTALL)
    if fence:
        src = fence.group(1)
    src = textwrap.dedent(src)
    try:
        tree = ast.parse(src)
        compile(tree, "<suggested code>", "exec")
    except SyntaxError as exc:
        raise InvalidValueError(
            f"suggested code does not compile: {exc.msg} (line {exc.lineno})"
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
        raise InvalidValueError("suggested code defines no function; keep the 'def' line")
    got = _signature(fn)
    if want is not None and got != want:
        raise InvalidValueError(f"suggested code changes the signature: expected {want}, got {got}")
    return src


def _to_number(raw: Any) -> float:
    if isinstance(raw, bool):
        raise InvalidValueError(f"expected a number, got a bool ({raw})")
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        text = raw.strip().strip("`'\"").replace(",", "").strip()
        try:
            value = float(text)
        except ValueError:
            # "w = 2.5" or "about 3.0": accept exactly one number inside the text.
            found = _NUMBER.findall(text)
            if len(found) != 1:
                raise InvalidValueError(f"expected a number, got {raw!r}") from None
            value = float(found[0])
    elif isinstance(raw, list) and len(raw) == 1:
        return _to_number(raw[0])
    else:
        raise InvalidValueError(f"expected a number, got {type(raw).__name__} {raw!r}")
    if not math.isfinite(value):
        raise InvalidValueError(f"expected a finite number, got {raw!r}")
    return value


def coerce_value(raw: Any, current: Any, *, is_code: bool | None = None) -> Any:
    """Convert suggested ``raw`` to the kind of ``current`` or raise InvalidValueError.

    ``is_code`` forces (or forbids) the code check; by default a string holding a function
    definition is treated as code.
    """
    if is_code is None:
        is_code = looks_like_code(current)
    if is_code:
        return check_code(raw if isinstance(raw, str) else str(raw), current)
    if isinstance(current, bool):
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().strip("`'\"").lower()
        if text in {"true", "1", "yes"}:
            return True
        if text in {"false", "0", "no"}:
            return False
        raise InvalidValueError(f"expected true or false, got {raw!r}")
    if isinstance(current, int):
        value = _to_number(raw)
        if value != int(value):
            raise InvalidValueError(f"expected an integer, got {raw!r}")
        return int(value)
    if isinstance(current, float):
        return _to_number(raw)
    if isinstance(current, list | dict | tuple):
        value = raw
        if isinstance(raw, str):
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                try:
                    value = ast.literal_eval(raw)
                except (ValueError, SyntaxError):
                    raise InvalidValueError(
                        f"expected a {type(current).__name__} literal, got {raw!r}"
                    ) from None
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        if not isinstance(value, type(current)):
            raise InvalidValueError(
                f"expected a {type(current).__name__}, got {type(value).__name__}"
            )
        return value
    if isinstance(current, str):
        if isinstance(raw, str):
            value = raw
        elif isinstance(raw, int | float | bool):
            value = str(raw)
        else:
            value = json.dumps(raw)
        if not value.strip() and current.strip():
            raise InvalidValueError("suggested an empty string for a non-empty text")
        return value
    if current is None:
        return raw
    raise InvalidValueError(
        f"cannot check a value of type {type(current).__name__}; only numbers, bools, "
        "strings, code, lists and dicts are optimizable"
    )


def same_value(a: Any, b: Any) -> bool:
    """Equality used for 'did it change' and OPRO de-duplication: numbers compare with a
    relative tolerance, strings ignore surrounding and repeated whitespace."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, str) and isinstance(b, str):
        return " ".join(a.split()) == " ".join(b.split())
    return a == b
