"""``optiforge graph FILE.json``: render a saved trace graph."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path

import typer

from optiforge.cli.app import app


class GraphFormat(str, Enum):
    """Output formats of ``optiforge graph``."""

    html = "html"
    dot = "dot"
    mermaid = "mermaid"


@app.command("graph")
def graph(
    file: Path = typer.Argument(
        ...,
        help="Graph JSON written by 'optiforge solve PROBLEM --save-graph FILE.json' or "
        "optiforge.trace.save_graph(output, 'FILE.json').",
        show_default=False,
    ),
    fmt: GraphFormat = typer.Option(
        GraphFormat.html,
        "--format",
        "-f",
        help="html: one self-contained page to open in a browser; dot: Graphviz text "
        "(render with `dot -Tsvg`); mermaid: a flowchart for Markdown.",
        case_sensitive=False,
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Where to write. Default: FILE.html next to the input for html, standard "
        "output for dot and mermaid. Use - for standard output.",
    ),
) -> None:
    """Render a saved trace graph as HTML, Graphviz DOT or Mermaid.

    A trace graph records one run of a traced workflow: its inputs, trainable parameters (values and code), every bundled call and operator, exceptions with their tracebacks, and the feedback each node received.

    Record a team run with [bold]optiforge solve PROBLEM --save-graph run.json[/bold] (a node per role call and step: formulate, critique, repair, code, build_model, solve, check, vote, decide; the role prompts as trainable parameters), or save any output node from Python with [bold]optiforge.trace.save_graph(output_node, "run.json")[/bold]. Then run [bold]optiforge graph run.json[/bold] and open run.html in a browser (it needs no network).
    """
    from optiforge.trace.export import load_graph, to_dot, to_html, to_mermaid

    doc = load_graph(file)
    if fmt is GraphFormat.html:
        text = to_html(doc, title=f"optiforge trace graph: {file.name}")
        if output is None:
            output = file.with_suffix(".html")
    elif fmt is GraphFormat.dot:
        text = to_dot(doc)
    else:
        text = to_mermaid(doc)
    if output is None or str(output) == "-":
        sys.stdout.write(text)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {output} ({len(doc['nodes'])} nodes)", err=True)
