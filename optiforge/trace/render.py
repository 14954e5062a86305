"""Render feedback subgraphs into the OptoPrime prompt sections.

The sections are #Code, #Documentation, #Variables, #Constraints, #Inputs, #Others,
#Outputs and #Feedback. #Instruction belongs to the optimizer's own prompt template.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from optiforge.trace.feedback import Subgraph
from optiforge.trace.nodes import ExceptionNode, MessageNode, Node, ParameterNode

__all__ = ["SECTION_NAMES", "Sections", "assign_names", "format_value", "render_sections"]

SECTION_NAMES = (
    "Code",
    "Documentation",
    "Variables",
    "Constraints",
    "Inputs",
    "Others",
    "Outputs",
    "Feedback",
)

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


def _type_label(n: Node) -> str:
    if getattr(n, "kind", "") == "code":
        return "code"
    return type(n._value).__name__


def _line(n: Node, names: dict[Node, str], max_chars: int | None) -> str:
    if isinstance(n, ExceptionNode):
        return f"({type(n._value).__name__}) {names[n]}={n.traceback.rstrip() or n.message}"
    if getattr(n, "kind", "") == "code":
        return f"(code) {names[n]}:{str(n._value).rstrip()}"
    return f"({_type_label(n)}) {names[n]}={format_value(n._value, max_chars)}"


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


@dataclass
class Sections:
    """The rendered sections (text without the ``#Name`` header) and the name mapping.

    ``parameters`` maps each name shown in #Variables to its parameter, so an optimizer can
    turn an LLM reply ``{"offset": 7}`` back into ``parameters["offset"].value = 7``.
    ``names`` maps every rendered name to its node.
    """

    code: str = ""
    documentation: str = ""
    variables: str = ""
    constraints: str = ""
    inputs: str = ""
    others: str = ""
    outputs: str = ""
    feedback: str = ""
    parameters: dict[str, ParameterNode] = field(default_factory=dict)
    names: dict[str, Node] = field(default_factory=dict)

    def as_dict(self) -> dict[str, str]:
        """``{"Code": ..., "Documentation": ..., ...}`` in OptoPrime order."""
        return {s: getattr(self, s.lower()) for s in SECTION_NAMES}

    def text(self, sections: Sequence[str] = SECTION_NAMES) -> str:
        """All sections as ``#Code\\n...\\n\\n#Documentation\\n...`` (empty ones included)."""
        parts = [f"#{s}\n{getattr(self, s.lower())}" for s in sections]
        return "\n\n".join(parts)

    def __str__(self) -> str:
        return self.text()


def render_sections(
    subgraphs: Subgraph | Sequence[Subgraph],
    parameters: Sequence[ParameterNode] | None = None,
    max_value_chars: int | None = 2000,
) -> Sections:
    """Render one or more subgraphs (e.g. from :func:`feedback_subgraphs`) into sections.

    Several subgraphs (a minibatch of outputs) are merged: their code lines are listed in
    order and #Outputs / #Feedback name each output. ``parameters`` (default: those of the
    subgraphs) are shown in #Variables, in full; other values are cut to
    ``max_value_chars``.
    """
    subs = [subgraphs] if isinstance(subgraphs, Subgraph) else list(subgraphs)
    params: list[ParameterNode] = list(
        dict.fromkeys(
            parameters if parameters is not None else [p for s in subs for p in s.parameters]
        )
    )
    all_nodes: list[Node] = list(params)
    for s in subs:
        all_nodes.extend(s.inputs)
        all_nodes.extend(s.nodes)
    names = assign_names(all_nodes)
    in_params = set(params)

    code_lines: list[str] = []
    docs: dict[str, str] = {}
    inputs: dict[Node, None] = {}
    others: dict[Node, None] = {}
    outputs: list[Node] = []
    for s in subs:
        for n in s.nodes:
            if isinstance(n, MessageNode):
                args = ", ".join(
                    f"{a}={names[p]}"
                    for a, p in zip(n.argnames, n.parents, strict=False)
                    if p in names
                )
                line = f"{names[n]} = {n.op.name}({args})"
                if isinstance(n, ExceptionNode):
                    line += f"  # raised {type(n._value).__name__}"
                code_lines.append(line)
                if n.op.name not in docs:
                    docs[n.op.name] = n.op.doc.strip() or "(no documentation)"
                if n is not s.output:
                    others[n] = None
            elif n not in in_params:
                inputs[n] = None
        for n in s.inputs:
            if n not in in_params:
                inputs[n] = None
        if s.output not in outputs:
            outputs.append(s.output)
    for n in outputs:
        others.pop(n, None)

    doc_lines = [f"[{op}] {doc}" for op, doc in docs.items()]
    for p in params:
        if p.description:
            doc_lines.append(f"[{names[p]}] {p.description}")
    var_lines = [_line(p, names, None) for p in params]
    con_lines = [f"({names[p]}) {p.constraint}" for p in params if p.constraint]
    if len(subs) == 1:
        fb_text = feedback_text(subs[0].feedback)
    else:
        fb_text = "\n".join(f"[{names[s.output]}] {feedback_text(s.feedback)}" for s in subs)
    return Sections(
        code="\n".join(code_lines),
        documentation="\n".join(doc_lines),
        variables="\n".join(var_lines),
        constraints="\n".join(con_lines),
        inputs="\n".join(_line(n, names, max_value_chars) for n in inputs),
        others="\n".join(_line(n, names, max_value_chars) for n in others),
        outputs="\n".join(_line(n, names, max_value_chars) for n in outputs),
        feedback=fb_text,
        parameters={names[p]: p for p in params},
        names={v: k for k, v in names.items()},
    )
