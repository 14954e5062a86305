"""``optiforge experience build``: the experience library of the team's formulator.

Argument parsing, :func:`optiforge.evals.experience.select_experience` (the solved, checked
training problems of the runs), :func:`optiforge.agents.team.experience.make_library` (the
entries and their insights), and printing. See docs/team.md, "### experience".
"""

from __future__ import annotations

from pathlib import Path

import typer

from optiforge.cli.app import app, paragraphs

experience_app = typer.Typer(
    help=(
        "The experience library (TeamConfig(experience=True)): worked formulations and "
        "insights of solved training problems, which the formulator gets as few-shot "
        "examples for similar problems."
    ),
    no_args_is_help=True,
)
app.add_typer(experience_app, name="experience")

_BUILD_HELP = paragraphs(
    """Build an experience library from `optiforge eval` run directories.

Keeps each problem of the runs' journals (results.jsonl) that was solved on the
formulation route AND checked correct against its answer under --rule. Only training
problems may enter: a problem of a shipped held-out sample (readme40, fresh60, the -test
samples: every sample but the -train/-val splits; OptiBench copies of such NL4Opt problems
and identical texts count too) makes the build fail, or with --drop-held-out is left out.

Each entry holds the problem's id and text, its formulation as the formulator writes it
(the FormulationDraft JSON) and a one- or two-sentence insight distilled by the model
(the experience_insight prompt; --model / --base-url as for eval, default: the embedded
local model), or with --no-llm derived from the constraint kinds. The file is JSON lines:
a header (format version, the runs and the commit it was built from), then one entry per
line. Use it with TeamConfig(experience=True, experience_library=FILE).
"""
)


@experience_app.command("build", help=_BUILD_HELP)
def build_command(
    run_dirs: list[Path] = typer.Argument(
        ..., metavar="RUN_DIR...", help="Eval run directories (written by `optiforge eval`)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="The library file to write (.jsonl)."),
    drop_held_out: bool = typer.Option(
        False,
        "--drop-held-out",
        help="Leave out problems of held-out samples instead of refusing the runs.",
    ),
    no_llm: bool = typer.Option(
        False, "--no-llm", help="No model: insights from the constraint kinds (deterministic)."
    ),
    rule: str = typer.Option(
        "strict_1e-6", "--rule", help="The scoring rule an answer must pass (as in eval)."
    ),
    model: str | None = typer.Option(None, "--model", help="Model that distils the insights."),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible server URL."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not use the LLM cache."),
) -> None:
    from rich.console import Console

    from optiforge.agents.team.experience import make_library
    from optiforge.evals.experience import select_experience
    from optiforge.evals.provenance import git_state

    console = Console(stderr=True)

    def note(msg: str) -> None:
        console.print(msg, highlight=False, markup=False)

    selection = select_experience(run_dirs, rule=rule, drop_held_out=drop_held_out, note=note)
    llm = None
    if not no_llm and selection.candidates:
        from optiforge.cli.common import connect_llm
        from optiforge.config import load_settings

        llm = connect_llm(load_settings(model=model, base_url=base_url), no_cache=no_cache)
    try:
        report = make_library(selection, llm=llm, provenance=git_state(), note=note)
    finally:
        if llm is not None:
            llm.close()
    report.library.save(out)
    for why, ids in report.skipped.items():
        shown = ", ".join(ids[:6]) + (" ..." if len(ids) > 6 else "")
        note(f"left out {len(ids)}: {why} ({shown})")
    failed = f", {report.llm_failures} model call(s) failed (rule used)" if llm else ""
    typer.echo(
        f"wrote {out}: {report.kept} entries from {report.read} problem(s) in "
        f"{len(run_dirs)} run(s){failed}"
    )
