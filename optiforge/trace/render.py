"""Nodes and values as text: the unique names nodes get, values and feedback as prompt text.

The same names appear wherever a graph is shown: in the optimizers' prompts (OptoPrime's
sections are rendered in :mod:`optiforge.agents.optim.sections`), TextGrad's edge prompts
and the exported graph (:mod:`optiforge.trace.export`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from optiforge.trace.nodes import Node, ParameterNode

__all__ = ["assign_names", "feedback_text", "format_value"]

_NOT_IDENT = re.compile(r"\W+")


def _ident(name: str) -> str:
    s = _NOT_IDENT.sub("_", name).rstrip("_") or "node"
    return s if not s[0].isdigit() else f"n{s}"


def assign_names(nodes: Iterable[Node]) -> dict[Node, str]:
    """Give each node a unique identifier, stable for a given order of ``nodes``.

    Parameters keep their own name (``offset``, ``__code_scale``); a second parameter with
    the same name gets a number (``offset1``). Other nodes get their base name plus a
    counter (``add0``, ``int1``).
    """
    nodes = list(dict.fromkeys(nodes))
    names: dict[Node, str] = {}
    used: set[str] = set()
    counters: dict[str, int] = {}
    for n in nodes:  # parameters first, so they keep their exact names
        if isinstance(n, ParameterNode):
            base = _ident(n.name)
            name, k = base, 1
            while name in used:
                name, k = f"{base}{k}", k + 1
            names[n] = name
            used.add(name)
    for n in nodes:
        if n in names:
            continue
        base = _ident(n.name)
        k = counters.get(base, 0)
        while f"{base}{k}" in used:
            k += 1
        counters[base] = k + 1
        names[n] = f"{base}{k}"
        used.add(names[n])
    return names


def format_value(value: Any, max_chars: int | None = None) -> str:
    """Show a value to an LLM: text as-is, exceptions as their message, others by repr."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, BaseException):
        text = f"{type(value).__name__}: {value}"
    else:
        try:
            text = repr(value)
        except Exception as exc:  # a broken __repr__ must not break rendering
            text = f"<{type(value).__name__} (repr failed: {exc})>"
    if max_chars is not None and len(text) > max_chars:
        text = text[: max_chars - 20] + f"... [{len(text) - max_chars + 20} more chars]"
    return text


def feedback_text(fb: Any) -> str:
    """Feedback (a string, or a mapping or list of them) as one text for a prompt."""
    if isinstance(fb, str):
        return fb
    if isinstance(fb, (dict, list)):
        try:
            return json.dumps(fb, ensure_ascii=False, indent=1, default=str)
        except (TypeError, ValueError):
            pass
    return format_value(fb)
