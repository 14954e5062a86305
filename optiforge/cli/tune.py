"""``optiforge tune``: train the team's role prompts on training problems.

Argument parsing, one call to :func:`optiforge.evals.tune.run_tune`, and printing.
"""

from __future__ import annotations

from pathlib import Path

import typer

from optiforge.cli.app import app, paragraphs

_HELP = paragraphs(
    """Train the team's prompts on training problems and save them for --prompts.

Each training problem is solved by the team and graded exactly as `optiforge eval` grades
(--rule, answer kinds, --answer-field). The optimizer reads feedback holding the solver's
status and objective, the critic's findings, and whether the answer matched with the
expected answer. Problems of the shipped eval samples (readme40, fresh60 and every other
sample but the -train/-val splits) are refused, and no feedback is ever written for one.

Optimizers: gepa (reflective evolution over a Pareto front of prompt candidates; budget
--max-metric-calls, minibatch --minibatch, --merge), optoprime, opro and textgrad (minibatch
steps of --batch-size over --epochs). Progress is saved after every step or candidate in
OUT.state.json: after Ctrl-C, SIGTERM or kill -9, rerun the same command to resume
(--restart starts over). A rerun that would score differently (other problems, prompts,
samples, levers, --time-limit, model, seed...) is refused: OUT.tune.json records the settings.
A larger --max-metric-calls, other --workers or --executor continue the same search. The
per-step log goes to OUT.log.json.

--executor ray (gepa only; pip install -e '.\\[ray]'): GEPA's evaluations that record no
graph (each child's minibatch, every validation set, merges) run as Ray tasks, the agent
and its sandbox on the worker, as with `optiforge eval --executor ray`; the parent's traced
minibatch and the reflection stay here. A worker that dies is retried once on a fresh one.
optoprime, opro and textgrad run every problem here and refuse --executor ray.
"""
)


@app.command("tune", help=_HELP)
def tune_command(
    dataset: str = typer.Option(
        ..., "--dataset", help="Training set: a .jsonl/.csv file or a built-in dataset name."
    ),
    agent: str = typer.Option("team", "--agent", help="Whose prompts to tune: team or direct."),
    optimizer: str = typer.Option(
        "optoprime", "--optimizer", help="gepa, optoprime, opro or textgrad."
    ),
    out: Path = typer.Option(Path("prompts.json"), "--out", "-o", help="Where to save prompts."),
    params: str = typer.Option(
        "formulator_system",
        "--params",
        help="Comma-separated prompts to train (formulator_system, critic_system, "
        "coder_system, planner_system).",
    ),
    ids: str | None = typer.Option(None, "--ids", help="Comma-separated training ids."),
    limit: int | None = typer.Option(None, "--limit", "-n", help="Use the first N problems."),
    val_fraction: float = typer.Option(
        0.25,
        "--val-fraction",
        min=0.0,
        max=0.9,
        help="Share held out for validation: the last problems (with --ids, the ids listed "
        "last, in their order).",
    ),
    epochs: int = typer.Option(1, "--epochs", min=1, help="Passes over the training set."),
    batch_size: int = typer.Option(
        4, "--batch-size", min=1, help="Problems per step (optoprime, opro, textgrad)."
    ),
    max_metric_calls: int | None = typer.Option(
        None,
        "--max-metric-calls",
        min=1,
        help="gepa: budget in problems solved and graded (default: epochs x (2 x train + "
        "validation)).",
    ),
    minibatch: int = typer.Option(3, "--minibatch", min=1, help="gepa: problems per reflection."),
    merge: bool = typer.Option(False, "--merge", help="gepa: also try merging two lineages."),
    rule: str = typer.Option(
        "strict_1e-6", "--rule", help="Scoring rule, as in eval (see optiforge.evals.RULES)."
    ),
    answer_field: str | None = typer.Option(
        None, "--answer-field", help="Grade against this answer variant, as in eval."
    ),
    drop_overlap: bool = typer.Option(
        False,
        "--drop-overlap",
        help="Leave out training problems that are in a fixed eval sample instead of refusing.",
    ),
    restart: bool = typer.Option(
        False, "--restart", help="Ignore (delete) OUT.state.json and start over."
    ),
    init_prompts: Path | None = typer.Option(
        None, "--prompts", help="Start from these tuned prompts instead of the defaults."
    ),
    model: str | None = typer.Option(None, "--model", help="Model of the team and optimizer."),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible server URL."),
    budget: int | None = typer.Option(None, "--budget", min=1, help="LLM samples per problem."),
    samples: int | None = typer.Option(None, "--samples", min=1, help="First-round samples."),
    time_limit: float | None = typer.Option(
        None,
        "--time-limit",
        help="Seconds each problem may take: the team works to this deadline and is scored "
        "on its best answer by then, as under 'eval --timeout' (default: no limit).",
    ),
    workers: int = typer.Option(2, "--workers", min=1, help="Problems run at once."),
    max_prompt_chars: int = typer.Option(
        9000,
        "--max-prompt-chars",
        min=1000,
        help="The length cap of each optimizer prompt, in characters (about 3 per token on "
        "formulations and tables). What it shows is shortened to fit (gepa and optoprime: the "
        "runs; opro: the fewer best prompts; textgrad: the values and feedback): "
        "9000 fits the embedded server's 4096-token slots with room for the reply; with "
        "'serve --local --ctx 8192' use about 18000, so the reflection sees whole problems.",
    ),
    executor: str = typer.Option(
        "local",
        "--executor",
        help="Where GEPA's unrecorded evaluations (child minibatches, validation) run: local "
        "(this process) or ray (Ray tasks; gepa only; pip install -e '.\\[ray]').",
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="With --executor ray: a running cluster (auto, or its HOST:6379); default: a "
        "private local Ray instance.",
    ),
    ray_workers: int | None = typer.Option(
        None,
        "--ray-workers",
        help="With --executor ray: worker processes (default: one per cluster CPU, at most "
        "--workers).",
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not use the LLM cache."),
    levers: str | None = typer.Option(
        None,
        "--levers",
        help="The team's accuracy levers on while tuning (as in eval: 'verify,hints', 'all', "
        "'all,-LEVER', 'none'); a lever's prompt can be tuned only when it is on.",
    ),
    experience_library: Path | None = typer.Option(
        None,
        "--experience-library",
        help="The experience lever's library while tuning (from 'optiforge experience "
        "build'); needs --levers experience (or all).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the split order, sampling and RNG."),
) -> None:
    import signal

    from rich.console import Console

    from optiforge.agents.team import load_prompt_values
    from optiforge.cli.common import connect_llm
    from optiforge.config import load_settings
    from optiforge.evals.tune import TuneConfig, run_tune, state_path_for

    console = Console(stderr=True)
    lever_state = None
    if levers is not None:
        from optiforge.agents.team.levers import parse_levers

        lever_state = parse_levers(levers)
    elif agent == "team":
        from optiforge.agents.team.levers import default_levers

        lever_state = default_levers()  # run.json records what ran
    from optiforge.agents.team.levers import experience_library as check_library

    library = check_library(lever_state, experience_library)  # fails before any call
    cfg = TuneConfig(
        dataset=dataset,
        out=out,
        agent=agent,
        optimizer=optimizer,
        params=[p.strip() for p in params.split(",") if p.strip()],
        ids=[i.strip() for i in ids.split(",") if i.strip()] if ids else None,
        limit=limit,
        val_fraction=val_fraction,
        epochs=epochs,
        batch_size=batch_size,
        drop_overlap=drop_overlap,
        init_prompts=load_prompt_values(init_prompts) if init_prompts else None,
        budget=budget,
        samples=samples,
        time_limit=time_limit,
        workers=workers,
        max_prompt_chars=max_prompt_chars,
        seed=seed,
        rule=rule,
        answer_field=answer_field,
        max_metric_calls=max_metric_calls,
        minibatch=minibatch,
        merge=merge,
        restart=restart,
        progress=console.is_terminal,
        executor=executor,
        ray_address=ray_address,
        ray_workers=ray_workers,
        no_cache=no_cache,
        levers=lever_state,
        experience_library=str(experience_library.resolve()) if experience_library else None,
        experience=library.model_dump() if library else None,
    )
    settings = load_settings(model=model, base_url=base_url)
    cfg.model = settings.model

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwind like Ctrl-C: the state file is already written

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    llm = connect_llm(settings, no_cache=no_cache)
    try:
        result = run_tune(
            cfg, llm, settings=settings, note=lambda m: console.print(f"[yellow]note:[/] {m}")
        )
    except KeyboardInterrupt:
        console.print(
            f"interrupted; progress is in {state_path_for(out)}: rerun the same command to resume"
        )
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        llm.close()
    on_ray = ""
    if result.executor == "ray":
        on_ray = f", {result.remote_calls} on Ray workers, {result.worker_deaths} worker deaths"
    console.print(
        f"saved {result.out}: validation score {result.initial_val_score} -> "
        f"{result.best_val_score} ({result.calls} LLM calls, {result.tokens} tokens{on_ray}); "
        "use it "
        f"with: optiforge solve --prompts {out} ... / optiforge eval --prompts {out} ..."
    )
