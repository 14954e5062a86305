"""``optiforge solve``: turn one word problem into a solved optimization model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from optiforge.cli.app import app


def read_problem(source: str) -> str:
    """The problem text from ``source``: ``-`` (stdin), a readable file, or the text itself.

    Raises :class:`TeamError` for empty input or a path-like argument that cannot be read.
    """
    from optiforge.agents import TeamError

    if source == "-":
        text = sys.stdin.read()
        if not text.strip():
            raise TeamError("no problem text on stdin; pipe the word problem in or pass it as TEXT")
        return text
    looks_like_path = (
        "\n" not in source
        and len(source) < 4096
        and (source.endswith((".txt", ".md", ".json")) or "/" in source or "\\" in source)
        and len(source.split()) <= 3
    )
    p = Path(source).expanduser() if "\n" not in source and len(source) < 4096 else None
    try:
        is_file = p is not None and p.is_file()
    except (OSError, ValueError):  # e.g. a long problem text is not a valid file name
        is_file = False
    if p is not None and is_file:
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TeamError(f"cannot read problem file {p}: {exc}") from None
        if not text.strip():
            raise TeamError(f"problem file {p} is empty")
        return text
    if looks_like_path:
        raise TeamError(
            f"{source!r} looks like a file path but no such readable file exists; pass an "
            "existing file, '-' for stdin, or the problem text in quotes"
        )
    if not source.strip():
        raise TeamError("the problem text is empty; give the word problem to solve")
    return source


def _print_solution(sol: Any, show_code: bool, expanded: bool = False) -> None:
    from rich.console import Console
    from rich.markdown import Markdown
    from rich.syntax import Syntax
    from rich.table import Table

    from optiforge.solvers import ir_plaintext

    out = Console()
    if sol.formulation:
        out.rule("Formulation")
        indexed = bool(sol.formulation.sets or sol.formulation.parameters)
        text = ir_plaintext(sol.formulation, expanded=expanded and indexed)
        out.print(text, markup=False, highlight=False)
    elif sol.formulation_markdown:
        out.rule("Formulation")
        out.print(Markdown(sol.formulation_markdown))
    if show_code and sol.code:
        out.rule("Code")
        out.print(Syntax(sol.code, "python", word_wrap=True))
    out.rule("Result")
    r = sol.result
    status = r.status.value if r is not None else "no result"
    out.print(f"[bold]agent[/]: {sol.agent}    [bold]status[/]: {status}")
    if getattr(sol, "levers", None):
        out.print(f"[bold]levers that fired[/]: {', '.join(sol.levers)}")
    if sol.stopped:
        why = {"deadline": "the time limit cancelled the work in flight"}.get(
            sol.stopped, "no next step fitted the time left"
        )
        out.print(f"[yellow]stopped early[/] ({sol.stopped}): {why}; best answer so far below")
    if sol.answer is not None:
        out.print(f"[bold green]objective[/]: {sol.answer:.10g}")
    else:
        out.print(f"[bold red]no answer[/] ({sol.failure_class}): {sol.error or ''}")
    if r is not None and r.variables:
        t = Table("variable", "value", show_header=True)
        for k, v in r.variables.items():
            t.add_row(k, f"{v:.10g}")
        out.print(t)
    out.print(
        f"[dim]{sol.calls} LLM calls, {sol.prompt_tokens}+{sol.completion_tokens} tokens, "
        f"{sol.elapsed_s:.1f} s[/]"
    )


@app.command("solve")
def solve_command(
    problem: str = typer.Argument(
        ..., help="The problem text, a file containing it, or '-' to read stdin."
    ),
    agent: str = typer.Option("team", "--agent", help="team (the modelling team) or direct."),
    model: str | None = typer.Option(
        None, "--model", help="Model name (store name, .gguf path, served id, provider/model)."
    ),
    base_url: str | None = typer.Option(
        None, "--base-url", help="OpenAI-compatible server URL; omit to run the embedded model."
    ),
    budget: int | None = typer.Option(
        None, "--budget", min=1, help="LLM samples the team may spend (default 8)."
    ),
    samples: int | None = typer.Option(
        None, "--samples", min=1, help="Formulations in the team's first round (default 3)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the Solution as JSON."),
    show_code: bool = typer.Option(False, "--show-code", help="Also print the model code."),
    expanded: bool = typer.Option(
        False,
        "--expanded",
        help="Also print an indexed model written out row by row (every constraint per "
        "element of its sets, at most 200 rows).",
    ),
    save_graph: Path | None = typer.Option(
        None,
        "--save-graph",
        help="Record the run as a trace graph and save it (JSON, or .html/.dot/.mmd): a node "
        "per role call (plan, formulate, critique, repair, code) and step (build_model, solve, "
        "run_code, check, vote, decide), the prompts as trainable parameters. View a JSON "
        "graph with 'optiforge graph FILE'. Without this option nothing is recorded.",
    ),
    prompts: Path | None = typer.Option(
        None, "--prompts", help="Tuned prompts (JSON written by 'optiforge tune')."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not use the LLM response cache."),
    levers: str | None = typer.Option(
        None,
        "--levers",
        help="The team's accuracy levers to turn on: comma-separated names (verify, "
        "grounded_critique, hints, experience, weighted_vote, templates), 'all', "
        "'all,-LEVER' or 'none' (the defaults). See docs/team.md, 'Accuracy levers'.",
    ),
    experience_library: Path | None = typer.Option(
        None,
        "--experience-library",
        help="The experience lever's library (from 'optiforge experience build'); needs "
        "--levers experience (or all).",
    ),
    time_limit: float | None = typer.Option(
        None,
        "--time-limit",
        min=0.001,
        help="Seconds the agent may take: it starts no step that would not fit the time left, "
        "and at the limit cancels its requests and prints its best answer so far.",
    ),
) -> None:
    """Solve an optimization word problem: formulation, code, status, objective, values."""
    from optiforge.agents import TeamError, load_prompt_values, solve, solve_graph
    from optiforge.config import load_settings

    if agent not in ("team", "direct"):
        raise TeamError(f"--agent must be team or direct, got {agent!r}")
    text = read_problem(problem)
    config = None
    if levers is not None:
        from optiforge.agents.team.levers import parse_levers, team_config

        if agent != "team" and any(parse_levers(levers).values()):
            raise TeamError(
                "--levers switches the team's accuracy levers; use it with --agent team"
            )
        lib = {"experience_library": str(experience_library)} if experience_library else {}
        config = team_config(levers, **lib)
    from optiforge.agents.team.levers import experience_library as check_library

    check_library(levers, experience_library)  # a missing or bad library fails before any call
    prompt_values = load_prompt_values(prompts) if prompts is not None else None
    settings = load_settings(model=model, base_url=base_url)
    from optiforge.cli.common import connect_llm

    llm = connect_llm(settings, no_cache=no_cache)
    kwargs = dict(llm=llm, agent=agent, budget=budget, samples=samples, prompts=prompt_values)
    kwargs["time_limit"] = time_limit
    if config is not None:
        kwargs["config"] = config
    graph_output = None
    try:
        if save_graph is not None:
            graph_output = solve_graph(text, **kwargs)
            sol = graph_output.value
        else:
            sol = solve(text, **kwargs)
    finally:
        llm.close()
    if save_graph is not None:
        _save_graph(graph_output, save_graph)
    if json_out:
        typer.echo(sol.model_dump_json(indent=2))
    else:
        _print_solution(sol, show_code, expanded)
    if sol.answer is None:
        raise typer.Exit(1)


def _save_graph(output: Any, path: Path) -> None:
    from optiforge.trace import save_graph, to_dot, to_html, to_mermaid

    suffix = path.suffix.lower()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix in (".html", ".htm"):
            path.write_text(to_html(output), encoding="utf-8")
        elif suffix in (".dot", ".gv"):
            path.write_text(to_dot(output), encoding="utf-8")
        elif suffix in (".mmd", ".mermaid"):
            path.write_text(to_mermaid(output), encoding="utf-8")
        else:
            save_graph(output, path)
    except OSError as exc:
        from optiforge.agents import TeamError

        raise TeamError(f"cannot write the graph to {path}: {exc}") from None
