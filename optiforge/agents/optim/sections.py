"""Render feedback subgraphs into OptoPrime's prompt sections (OptoPrime and GEPA use them).

The sections are #Code, #Documentation, #Variables, #Constraints, #Inputs, #Others,
#Outputs and #Feedback. #Instruction belongs to the optimizer's own prompt template. Node
names and value text come from :mod:`optiforge.trace.render`, so they are the names the
rest of optiforge shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from optiforge.trace.feedback import Subgraph
from optiforge.trace.nodes import ExceptionNode, MessageNode, Node, ParameterNode
from optiforge.trace.render import assign_names, feedback_text, format_value

__all__ = ["SECTION_NAMES", "Sections", "render_sections"]

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
    max_input_chars: int | None = None,
) -> Sections:
    """Render one or more subgraphs (e.g. from :func:`feedback_subgraphs`) into sections.

    Several subgraphs (a minibatch of outputs) are merged: their code lines are listed in
    order and #Outputs / #Feedback name each output. ``parameters`` (default: those of the
    subgraphs) are shown in #Variables, in full; other values are cut to
    ``max_value_chars``, and #Inputs to ``max_input_chars`` when given (an input such as a
    word problem may deserve more room than the steps' values).
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
        # The output is named even when no parameter reaches it (a run stopped before any
        # step read the parameter), so its value and feedback are still shown.
        all_nodes.append(s.output)
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
    input_chars = max_value_chars if max_input_chars is None else max_input_chars
    return Sections(
        code="\n".join(code_lines),
        documentation="\n".join(doc_lines),
        variables="\n".join(var_lines),
        constraints="\n".join(con_lines),
        inputs="\n".join(_line(n, names, input_chars) for n in inputs),
        others="\n".join(_line(n, names, max_value_chars) for n in others),
        outputs="\n".join(_line(n, names, max_value_chars) for n in outputs),
        feedback=fb_text,
        parameters={names[p]: p for p in params},
        names={v: k for k, v in names.items()},
    )
