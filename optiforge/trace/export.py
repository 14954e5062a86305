"""Export a trace graph: a JSON document, networkx, Graphviz DOT, Mermaid and HTML.

Every renderer accepts an output node, a list of output nodes, or a graph document (the
dict from :func:`graph_to_dict` / :func:`load_graph`), so a saved graph renders exactly like
a live one. networkx is imported only inside :func:`to_networkx`.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optiforge.fileio import write_text_atomic
from optiforge.trace.errors import GraphCycleError, SerializationError, TraceError
from optiforge.trace.feedback import topological_order
from optiforge.trace.nodes import ExceptionNode, MessageNode, Node, ParameterNode
from optiforge.trace.render import assign_names, feedback_text, format_value

__all__ = [
    "GRAPH_FORMAT",
    "graph_to_dict",
    "load_graph",
    "save_graph",
    "to_dot",
    "to_html",
    "to_mermaid",
    "to_networkx",
    "validate_graph",
]

GRAPH_FORMAT = "optiforge.graph/1"
GraphLike = Node | Sequence[Node] | dict


def _json_data(value: Any) -> tuple[bool, Any]:
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False, None
    return True, json.loads(text) if len(text) <= 100_000 else None


def graph_to_dict(outputs: Node | Sequence[Node], max_value_chars: int | None = 20_000) -> dict:
    """Describe ``outputs`` and all their ancestors as a JSON-ready dict.

    Nodes are listed parents first. Each has ``id`` (unique), ``name``, ``kind`` (value,
    parameter, code, message, exception), ``type``, ``value`` (display text), ``data`` (the
    value itself when it is JSON data), ``parents`` / ``argnames``, and when present
    ``description``, ``constraint``, ``trainable``, ``op``, ``doc``, ``code``, ``traceback``
    and ``feedback``.
    """
    outs = [outputs] if isinstance(outputs, Node) else list(outputs)
    order: dict[Node, None] = {}
    for o in outs:
        for n in reversed(topological_order(o)):
            order.setdefault(n, None)
    nodes = list(order)
    names = assign_names(nodes)
    items = []
    for n in nodes:
        kind = getattr(n, "kind", "value")
        d: dict[str, Any] = {
            "id": names[n],
            "name": n.name,
            "kind": kind,
            "type": type(n._value).__name__,
            "value": format_value(n._value, max_value_chars),
        }
        ok, data = _json_data(n._value)
        if ok and data is not None:
            d["data"] = data
        if n.description:
            d["description"] = n.description
        if isinstance(n, ParameterNode):
            d["trainable"] = n.trainable
            if n.constraint:
                d["constraint"] = n.constraint
            if kind == "code":
                d["code"] = n._value
        if isinstance(n, MessageNode):
            d["op"] = n.op.name
            d["doc"] = n.op.doc
            src = n.op.source if n.op.kind == "bundle" else None
            if src and not n.op.trainable:
                d["code"] = src
        if isinstance(n, ExceptionNode):
            d["traceback"] = n.traceback
            d["value"] = n.message
        if n.feedback is not None:
            d["feedback"] = feedback_text(n.feedback)
        d["parents"] = [names[p] for p in n.parents]
        d["argnames"] = list(getattr(n, "argnames", ()))
        items.append(d)
    return {"format": GRAPH_FORMAT, "outputs": [names[o] for o in outs], "nodes": items}


def validate_graph(doc: Any, source: str = "graph") -> dict:
    """Check a graph document's structure; raise a clear error, else return it."""
    if not isinstance(doc, dict) or doc.get("format") != GRAPH_FORMAT:
        raise SerializationError(
            f'{source} is not an optiforge graph (expected "format": "{GRAPH_FORMAT}"); '
            "save one with optiforge.trace.save_graph(output, path)"
        )
    nodes = doc.get("nodes")
    if not isinstance(nodes, list):
        raise SerializationError(f'{source} has no "nodes" list')
    ids: dict[str, dict] = {}
    for i, n in enumerate(nodes):
        if not isinstance(n, dict) or not isinstance(n.get("id"), str):
            raise SerializationError(f'{source}: node #{i} has no text "id"')
        if n["id"] in ids:
            raise SerializationError(f"{source}: node id {n['id']!r} appears twice")
        parents = n.setdefault("parents", [])
        if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
            raise SerializationError(f'{source}: node {n["id"]!r} has a bad "parents" list')
        argnames = n.setdefault("argnames", [""] * len(parents))
        if not isinstance(argnames, list) or len(argnames) != len(parents):
            raise SerializationError(
                f'{source}: node {n["id"]!r} needs one "argnames" entry per parent'
            )
        n["argnames"] = [str(a) for a in argnames]
        n.setdefault("kind", "value")
        n.setdefault("name", n["id"])
        n.setdefault("value", "")
        n.setdefault("type", "")
        ids[n["id"]] = n
    for n in nodes:
        for p in n["parents"]:
            if p not in ids:
                raise SerializationError(f"{source}: node {n['id']!r} has unknown parent {p!r}")
    outputs = doc.setdefault("outputs", [])
    for o in outputs:
        if o not in ids:
            raise SerializationError(f"{source}: output {o!r} is not a node")
    # Kahn's algorithm: anything left over sits on a cycle.
    indeg = {k: len(set(v["parents"])) for k, v in ids.items()}
    children: dict[str, list[str]] = {k: [] for k in ids}
    for k, v in ids.items():
        for p in set(v["parents"]):
            children[p].append(k)
    ready = [k for k, d in indeg.items() if d == 0]
    seen = 0
    while ready:
        k = ready.pop()
        seen += 1
        for c in children[k]:
            indeg[c] -= 1
            if indeg[c] == 0:
                ready.append(c)
    if seen != len(ids):
        stuck = sorted(k for k, d in indeg.items() if d > 0)[:5]
        raise GraphCycleError(f"{source} has a cycle through {stuck}; a trace graph is acyclic")
    return doc


def save_graph(outputs: Node | Sequence[Node], path: str | os.PathLike) -> Path:
    """Write the graph of ``outputs`` to ``path`` as JSON (see :func:`graph_to_dict`)."""
    target = Path(path)
    doc = graph_to_dict(outputs)
    return write_text_atomic(target, json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def load_graph(path: str | os.PathLike) -> dict:
    """Read and validate a graph saved by :func:`save_graph`."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SerializationError(f"no such graph file: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SerializationError(f"cannot read {p}: {exc}") from None
    except ValueError as exc:
        raise SerializationError(f"{p} is not valid JSON: {exc}") from None
    return validate_graph(doc, str(p))


def _doc(graph: GraphLike) -> dict:
    if isinstance(graph, dict):
        return validate_graph(graph)
    return graph_to_dict(graph)


def to_networkx(graph: GraphLike) -> Any:
    """Return a ``networkx.DiGraph``: one node per graph node (keyed by id, with every
    attribute of :func:`graph_to_dict` except parents), edges parent -> child with an
    ``argname`` attribute; ``G.graph["outputs"]`` lists the output ids.

    networkx is an optional extra (``pip install 'optiforge[graph]'``); without it this raises
    :class:`~optiforge.trace.errors.TraceError` saying so. The other exports need nothing.
    """
    try:
        import networkx as nx
    except ImportError:
        raise TraceError(
            "to_networkx needs networkx, an optional extra: pip install 'optiforge[graph]' "
            "(to_json, to_dot, to_mermaid and to_html need nothing extra)"
        ) from None

    doc = _doc(graph)
    g = nx.DiGraph(outputs=list(doc["outputs"]))
    for n in doc["nodes"]:
        g.add_node(
            n["id"], **{k: v for k, v in n.items() if k not in ("id", "parents", "argnames")}
        )
    for n in doc["nodes"]:
        for p, a in zip(n["parents"], n["argnames"], strict=False):
            g.add_edge(p, n["id"], argname=a)
    return g


_STYLE = {  # kind -> (dot shape, fill colour)
    "value": ("box", "#e5e7eb"),
    "parameter": ("box", "#fde68a"),
    "code": ("box3d", "#fdba74"),
    "message": ("ellipse", "#bfdbfe"),
    "exception": ("octagon", "#fca5a5"),
}


def _short(text: str, n: int = 40) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _label_lines(n: dict) -> list[str]:
    head = (
        n["id"] if n["kind"] not in ("message", "exception") else f"{n['id']} = {n.get('op', '')}"
    )
    shown = "def ..." if n["kind"] == "code" else n.get("value", "")
    return [head, f"({n.get('type', '')}) {_short(shown)}"]


def _dot_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_dot(graph: GraphLike) -> str:
    """Render as Graphviz DOT text (``dot -Tsvg``); outputs have a thick border."""
    doc = _doc(graph)
    outs = set(doc["outputs"])
    lines = [
        "digraph trace {",
        "  rankdir=TB;",
        '  node [fontname="Helvetica", fontsize=10, style=filled];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    for n in doc["nodes"]:
        shape, fill = _STYLE.get(n["kind"], _STYLE["value"])
        label = "\\n".join(_dot_escape(x) for x in _label_lines(n))
        extra = ", penwidth=3" if n["id"] in outs else ""
        lines.append(
            f'  "{_dot_escape(n["id"])}" [label="{label}", shape={shape}, fillcolor="{fill}"{extra}];'
        )
    for n in doc["nodes"]:
        for p, a in zip(n["parents"], n["argnames"], strict=False):
            lines.append(
                f'  "{_dot_escape(p)}" -> "{_dot_escape(n["id"])}" [label="{_dot_escape(a)}"];'
            )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_escape(s: str) -> str:
    return (
        s.replace("&", "#amp;")
        .replace('"', "#quot;")
        .replace("<", "#lt;")
        .replace(">", "#gt;")
        .replace("|", "#124;")
    )


def to_mermaid(graph: GraphLike) -> str:
    """Render as a Mermaid flowchart (paste into Markdown inside a ```mermaid block)."""
    doc = _doc(graph)
    outs = set(doc["outputs"])
    key = {n["id"]: f"n{i}" for i, n in enumerate(doc["nodes"])}
    lines = ["flowchart TD"]
    for n in doc["nodes"]:
        label = "<br/>".join(_mermaid_escape(x) for x in _label_lines(n))
        cls = n["kind"] if n["kind"] in _STYLE else "value"
        lines.append(f'  {key[n["id"]]}["{label}"]:::{cls}')
    for n in doc["nodes"]:
        for p, a in zip(n["parents"], n["argnames"], strict=False):
            arrow = f"-->|{_mermaid_escape(a)}|" if a else "-->"
            lines.append(f"  {key[p]} {arrow} {key[n['id']]}")
    for kind, (_, fill) in _STYLE.items():
        lines.append(f"  classDef {kind} fill:{fill},stroke:#374151,color:#111827")
    if outs:
        lines.append("  classDef output stroke-width:3px")
        lines.append("  class " + ",".join(key[o] for o in doc["outputs"]) + " output")
    return "\n".join(lines) + "\n"


def to_html(graph: GraphLike, title: str = "optiforge trace graph") -> str:
    """Render a self-contained HTML page (no network access needed) that draws the graph
    and shows each node's value, code, documentation, traceback and feedback on click."""
    from importlib.resources import files

    doc = _doc(graph)
    payload = json.dumps(doc, ensure_ascii=False).replace("</", "<\\/")
    template = files("optiforge.trace").joinpath("graph_page.html").read_text(encoding="utf-8")
    return template.replace("__TITLE__", html.escape(title)).replace("__GRAPH_JSON__", payload)
