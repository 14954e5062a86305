"""``optiforge eval``: run an agent over a benchmark, journaled and resumable."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import signal
import sys
from pathlib import Path
from typing import Any

import typer

from optiforge.cli.app import app


def _start(plan: Any, spec: Any, settings: Any, console: Any) -> tuple[Any, Any, Any, Any]:
    """Wire the plan to an agent: the executor, the LLM client (None when no problem runs or
    a custom agent takes none), its provenance and the per-problem usage scope."""
    from optiforge.agents.spec import BuiltAgent, build_agent, load_agent_fn, wants_llm
    from optiforge.evals.executor import LocalExecutor, RayExecutor

    request = plan.request
    llm = None
    runner_exec: Any
    if plan.pending == 0:
        # Nothing left to run: do not start (or pull) a model, or Ray, to refresh reports.
        async def nothing(problem: Any) -> Any:
            raise AssertionError("no problem should run")

        runner_exec = LocalExecutor(nothing)
    else:
        if not request.agent_fn or wants_llm(load_agent_fn(request.agent_fn)):
            from optiforge.cli.common import connect_llm

            llm = connect_llm(settings, no_cache=spec.no_cache, concurrency=plan.concurrency)
            llm.ensure_server()  # start (and pull) the embedded model before the bar shows
        # Per-problem costs in the journal: each problem runs in a client usage scope, in
        # this process or on the Ray worker that runs it (which sends its counts back).
        from optiforge.llm.usage import usage_scope as client_scope

        scope_fn = client_scope if llm is not None else None
        if request.executor == "local":
            runner_exec = LocalExecutor(BuiltAgent(spec, llm=llm), usage_scope=scope_fn)
        else:
            if llm is not None and llm.route == "local":
                # Workers on this host share the driver's embedded server instead of each
                # loading the model (a remote cluster needs --base-url it can reach).
                spec = dataclasses.replace(spec, base_url=llm.ensure_server())
            with console.status("starting Ray workers"):
                runner_exec = RayExecutor(
                    functools.partial(build_agent, spec),
                    address=request.ray_address,
                    workers=request.ray_workers,
                    concurrency=plan.concurrency,
                    usage_scope=scope_fn,
                ).start()
            console.print(
                f"ray: {runner_exec.worker_count} workers ready in {runner_exec.startup_s:.1f} s"
            )
    provenance = None
    if llm is not None:
        from optiforge.cli.common import llm_provenance

        provenance = llm_provenance(llm, settings)
    return runner_exec, llm, provenance, runner_exec.usage_scope


@app.command("eval")
def eval_command(
    dataset: str = typer.Argument(
        ..., help="Built-in dataset (nl4opt, optibench) or a .jsonl/.csv file."
    ),
    agent: str = typer.Option("team", "--agent", help="Agent: team or direct."),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Model name (default from settings)."
    ),
    base_url: str | None = typer.Option(
        None, "--base-url", help="OpenAI-compatible server URL; omit for the embedded server."
    ),
    concurrency: int | None = typer.Option(
        None, "--concurrency", "-c", help="Problems (and LLM requests) in flight at once."
    ),
    samples: int | None = typer.Option(
        None,
        "--samples",
        "-k",
        help="Formulations sampled per problem for voting (default: the agent's own).",
    ),
    limit: int | None = typer.Option(None, "--limit", "-n", help="Run the first N problems."),
    ids: str | None = typer.Option(None, "--ids", help="Comma-separated problem ids."),
    sample: str | None = typer.Option(
        None,
        "--sample",
        help="A shipped id list (nl4opt-readme40, optibench-readme40) or an id-list file.",
    ),
    category: list[str] | None = typer.Option(
        None,
        "--category",
        help="Keep problems with all these comma-separated labels (linear, nonlinear, table, "
        "no-table, orlm245, llm4or-clean...); repeat to OR.",
    ),
    answer_field: str | None = typer.Option(
        None, "--answer-field", help="Grade against this answer variant (see docs/datasets.md)."
    ),
    column: list[str] | None = typer.Option(
        None, "--column", help="User files: FIELD=COLUMN (fields: id, text, answer, ...)."
    ),
    include_unscored: bool = typer.Option(
        False,
        "--include-unscored",
        help="Also run problems without a usable ground truth (reported, not scored).",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output directory (default runs/eval-DATASET-AGENT-TIME)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="With --resume: re-run problems that hit LLM/agent errors."
    ),
    timeout: float | None = typer.Option(
        None,
        "--timeout",
        help="Seconds per problem: the agent's deadline (it answers with "
        "its best so far); a problem still running a few seconds later is cancelled.",
    ),
    budget: int | None = typer.Option(
        None, "--budget", help="LLM samples one problem may use (default: the agent's own)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not use the LLM response cache."),
    prompts: Path | None = typer.Option(
        None,
        "--prompts",
        help="Tuned prompts (JSON written by 'optiforge tune'); train on problems kept apart "
        "from the ones you evaluate.",
    ),
    levers: str | None = typer.Option(
        None,
        "--levers",
        help="The team's accuracy levers to turn on: comma-separated names (verify, "
        "grounded_critique, hints, experience, weighted_vote, templates), 'all', "
        "'all,-verify' (all but one: an ablation row) or 'none' (the defaults). run.json records every lever's state; "
        "each journal line lists the levers that fired on its problem.",
    ),
    experience_library: Path | None = typer.Option(
        None,
        "--experience-library",
        help="The experience lever's library (a file from 'optiforge experience build' "
        "over eval runs on training problems); needs --levers experience (or all). "
        "run.json records its sha256.",
    ),
    max_failures: int | None = typer.Option(
        None,
        "--max-failures",
        help="Stop after this many LLM/agent failures in a row (default max(5, 2*concurrency)).",
    ),
    agent_fn: str | None = typer.Option(
        None,
        "--agent-fn",
        help="Evaluate your own async agent: module:function or file.py:function taking a "
        "Problem and returning a Solution. It gets the configured LLM client if it has a "
        "parameter named llm; otherwise no LLM is started.",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
    executor: str = typer.Option(
        "local",
        "--executor",
        help="Where problems run: local (this process) or ray (each problem a Ray task on a "
        "worker, agent and sandbox included; pip install -e '.\\[ray]'). The journal, "
        "--resume and Ctrl-C work the same.",
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="With --executor ray: a running cluster (auto, or its HOST:6379); default: "
        "start a private local Ray instance. Cluster workers need optiforge's dependencies "
        "and must reach --base-url.",
    ),
    ray_workers: int | None = typer.Option(
        None,
        "--ray-workers",
        help="With --executor ray: worker processes (default: one per cluster CPU, at most "
        "--concurrency); --concurrency problems are spread over them.",
    ),
) -> None:
    """Evaluate an agent on a benchmark; writes results.jsonl, summary.json, report.md/html."""
    from rich.console import Console

    from optiforge.config import load_settings
    from optiforge.evals.plan import EvalRequest, plan_eval, resume_command

    console = Console(stderr=True)
    lever_state = None
    if levers is not None:
        from optiforge.agents.team.levers import parse_levers

        lever_state = parse_levers(levers)
    elif agent == "team" and agent_fn is None:
        from optiforge.agents.team.levers import default_levers

        lever_state = default_levers()  # run.json records what ran
    prompt_values = None
    prompts_info = None
    if prompts is not None:
        from optiforge.agents.team.prompts import load_prompt_values
        from optiforge.evals.plan import prompts_record

        prompt_values = load_prompt_values(prompts)  # a bad file fails now, not per problem
        prompts_info = prompts_record(prompts, prompt_values)
    request = EvalRequest(
        dataset=dataset,
        agent=agent,
        agent_fn=agent_fn,
        samples=samples,
        budget=budget,
        limit=limit,
        ids=ids,
        sample=sample,
        category=category or None,
        answer_field=answer_field,
        columns=column or None,
        include_unscored=include_unscored,
        out=out,
        resume=resume,
        retry_failed=retry_failed,
        executor=executor,
        ray_address=ray_address,
        ray_workers=ray_workers,
        levers=lever_state,
        prompts=prompts_info,
    )
    from optiforge.agents.team.levers import experience_library as check_library

    library = check_library(lever_state, experience_library)  # fails now, not per problem
    if library is not None:
        request = dataclasses.replace(request, experience=library.model_dump())
    settings = load_settings(model=model, base_url=base_url, concurrency=concurrency)
    plan = plan_eval(
        request,
        concurrency=settings.concurrency,
        model=settings.model,
        base_url=settings.base_url,
        argv=sys.argv[1:],
        note=lambda text: console.print(f"[yellow]note:[/] {text}"),
    )
    conc, out_dir, meta = plan.concurrency, plan.out_dir, plan.meta

    from optiforge.agents.spec import AgentSpec

    spec = AgentSpec(
        agent=agent,
        agent_fn=agent_fn,
        settings=settings,
        no_cache=no_cache,
        llm_concurrency=conc,
        budget=budget,
        samples=samples,
        prompts=prompt_values,
        time_limit=timeout or None,
        levers=lever_state,
        experience_library=str(experience_library.resolve()) if experience_library else None,
    )
    runner_exec, llm, provenance, usage_scope = _start(plan, spec, settings, console)
    console.print(
        f"eval [bold]{meta.dataset}[/]: {len(plan.problems)} problems, agent {meta.agent}"
        f"{', model ' + str(meta.model) if meta.model else ''}, concurrency {conc} -> {out_dir}"
    )

    try:
        outcome = asyncio.run(
            _run(plan, runner_exec, usage_scope, provenance, timeout, max_failures, progress)
        )
    except (KeyboardInterrupt, asyncio.CancelledError):
        from optiforge.evals.journal import read_journal

        done = len(read_journal(out_dir).latest())
        console.print(
            f"\n[yellow]Interrupted.[/] {done} finished problem(s) are saved in "
            f"{out_dir / 'results.jsonl'}.\nResume with:\n  {resume_command(sys.argv[1:], out_dir)}"
        )
        raise typer.Exit(130) from None
    finally:
        runner_exec.close()
        if llm is not None:
            llm.close()
    _print_outcome(console, outcome, out_dir)


async def _run(
    plan: Any,
    runner_exec: Any,
    usage_scope: Any,
    provenance: Any,
    timeout: float | None,
    max_failures: int | None,
    progress: bool,
) -> Any:
    """:func:`~optiforge.evals.runner.run_eval` over the plan, stopped by SIGTERM (a
    scheduler, `timeout`, `kill`) as cleanly as by Ctrl-C."""
    from optiforge.evals.runner import run_eval

    task = asyncio.current_task()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run_eval(
        plan.problems,
        None,
        plan.out_dir,
        meta=plan.meta,
        concurrency=plan.concurrency,
        resume=plan.request.resume,
        retry_failed=plan.request.retry_failed,
        problem_timeout=timeout,
        max_consecutive_failures=max_failures,
        progress=progress,
        usage=runner_exec.usage,
        executor=runner_exec,
        usage_scope=usage_scope,
        provenance=provenance,
    )


def _print_outcome(console: Any, outcome: Any, out_dir: Path) -> None:
    from optiforge.evals.scoring import DEFAULT_RULE

    s = outcome.summary
    acc = s["accuracy"][DEFAULT_RULE]
    pct = "-" if acc["accuracy"] is None else f"{100 * acc['accuracy']:.1f}%"
    rate = s["execution_rate"]
    exec_pct = "-" if rate is None else f"{100 * rate:.1f}%"
    console.print(
        f"done: {outcome.finished} run now, {outcome.skipped_done} already done; accuracy "
        f"({DEFAULT_RULE}, answer field {s['answer_field']!r}) {acc['correct']}/"
        f"{acc['scored']} = {pct}; execution rate {exec_pct}"
    )
    console.print(
        f"reports: {out_dir / 'report.html'}, {out_dir / 'report.md'}, {out_dir / 'summary.json'}"
    )
