"""``optiforge tune``: train the team's role prompts on a training set (OptoPrime or OPRO)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from optiforge.cli.app import app


def eval_overlap(ids: list[str]) -> dict[str, list[str]]:
    """Training ids that are in a shipped fixed eval sample, by sample name.

    OptiBench copies of NL4Opt problems count too (``same_problem_as_nl4opt``), so a
    training set cannot leak eval problems under another id.
    """
    from optiforge.evals.sample import builtin_samples, load_sample

    out: dict[str, list[str]] = {}
    wanted = set(ids)
    for name in builtin_samples():
        hit = sorted(wanted & set(load_sample(name)))
        if hit:
            out[name] = hit
    return out


def _copies_of(problem: Any) -> str | None:
    same = (problem.extra or {}).get("same_problem_as_nl4opt")
    if isinstance(same, dict):
        return same.get("id")
    return None


def make_judge(agent: str) -> Any:
    """Score 1/0 with textual feedback that tells the optimizer what went wrong."""

    def judge(output: Any, target: Any) -> tuple[float, str]:
        if hasattr(output, "summary"):  # the team's output node holds its Solution
            output = output.summary()
        answer = output.get("answer") if isinstance(output, dict) else None
        gt = float(target)
        if answer is not None and abs(answer - gt) / (abs(gt) + 1) < 1e-6:
            return 1.0, f"Correct: the optimal objective {answer:g} matches the ground truth."
        parts = [
            f"Wrong: the {agent} answered {answer!r} but the correct optimal objective is {gt:g}."
        ]
        if isinstance(output, dict):
            if output.get("failure"):
                parts.append(f"Failure: {output['failure']}: {output.get('error') or ''}")
            if output.get("formulation"):
                parts.append("The chosen formulation was:\n" + str(output["formulation"])[:1500])
            if output.get("critic_findings"):
                parts.append("The critic noted: " + "; ".join(output["critic_findings"]))
        parts.append(
            "Change the instructions so that formulations of problems like this one get the "
            "variables' integrality, the constraint directions and the objective right."
        )
        return 0.0, "\n".join(parts)

    return judge


@app.command("tune")
def tune_command(
    dataset: str = typer.Option(
        ..., "--dataset", help="Training set: a .jsonl/.csv file or a built-in dataset name."
    ),
    agent: str = typer.Option("team", "--agent", help="Whose prompts to tune: team or direct."),
    optimizer: str = typer.Option("optoprime", "--optimizer", help="optoprime or opro."),
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
        0.25, "--val-fraction", min=0.0, max=0.9, help="Share held out for validation."
    ),
    epochs: int = typer.Option(1, "--epochs", min=1),
    batch_size: int = typer.Option(4, "--batch-size", min=1),
    drop_overlap: bool = typer.Option(
        False,
        "--drop-overlap",
        help="Leave out training problems that are in a fixed eval sample instead of refusing.",
    ),
    init_prompts: Path | None = typer.Option(
        None, "--prompts", help="Start from these tuned prompts instead of the defaults."
    ),
    model: str | None = typer.Option(None, "--model", help="Model of the team and optimizer."),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible server URL."),
    budget: int | None = typer.Option(None, "--budget", min=1, help="LLM samples per problem."),
    samples: int | None = typer.Option(None, "--samples", min=1, help="First-round samples."),
    workers: int = typer.Option(2, "--workers", min=1, help="Problems run at once."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not use the LLM cache."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train the team's prompts on a training set and save them for solve/eval --prompts."""
    from rich.console import Console

    from optiforge.agents.team import TRAINABLE, TeamError, load_prompt_values
    from optiforge.config import load_settings
    from optiforge.datasets import load_dataset

    console = Console(stderr=True)
    if agent not in ("team", "direct"):
        raise TeamError(f"--agent must be team or direct, got {agent!r}")
    if optimizer not in ("optoprime", "opro"):
        raise TeamError(f"--optimizer must be optoprime or opro, got {optimizer!r}")
    chosen = [p.strip() for p in params.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(TRAINABLE))
    if unknown or not chosen:
        raise TeamError(f"--params: unknown {unknown}; choose from {', '.join(TRAINABLE)}")
    if agent == "direct" and chosen != ["coder_system"]:
        console.print("[yellow]note:[/] the direct agent only uses coder_system; tuning that.")
        chosen = ["coder_system"]

    id_list = [i.strip() for i in ids.split(",") if i.strip()] if ids else None
    problems = [p for p in load_dataset(dataset, ids=id_list) if p.answer is not None]
    if limit is not None:
        problems = problems[:limit]
    # Keep training data apart from what is evaluated: the fixed eval samples.
    all_ids = [p.id for p in problems] + [c for p in problems if (c := _copies_of(p))]
    overlap = eval_overlap(all_ids)
    if overlap:
        listed = "; ".join(
            f"{k}: {', '.join(v[:8])}{' ...' if len(v) > 8 else ''}" for k, v in overlap.items()
        )
        if not drop_overlap:
            raise TeamError(
                f"the training set overlaps the fixed eval samples ({listed}). Training on eval "
                "problems inflates the reported accuracy; pick other ids or pass --drop-overlap "
                "to leave them out."
            )
        bad = {i for v in overlap.values() for i in v}
        problems = [p for p in problems if p.id not in bad and _copies_of(p) not in bad]
        console.print(f"[yellow]note:[/] left out {len(bad)} problem(s) of the eval samples.")
    if len(problems) < 2:
        raise TeamError("need at least 2 training problems with answers after filtering")

    n_val = round(len(problems) * val_fraction)
    val = problems[len(problems) - n_val :] if n_val else []
    train_set = problems[: len(problems) - n_val]
    pairs = [(p.text, p.answer) for p in train_set]
    val_pairs = [(p.text, p.answer) for p in val] or None

    settings = load_settings(model=model, base_url=base_url)
    from optiforge.agents.optim import OPRO
    from optiforge.agents.team.module import TeamModule, save_prompts
    from optiforge.agents.trainer import train
    from optiforge.cli.common import connect_llm

    start = load_prompt_values(init_prompts) if init_prompts else None
    llm = connect_llm(settings, no_cache=no_cache)
    try:
        module = TeamModule(start, llm=llm, agent=agent, budget=budget, samples=samples)
        for name in TRAINABLE:
            getattr(module, name).trainable = name in chosen
        if optimizer == "opro":
            opt = OPRO(
                module,
                llm,
                task="Improve the instructions of an LLM that turns optimization word problems "
                "into correct mathematical models. Score = share of problems solved correctly.",
                max_tokens=1500,
            )
        else:
            from optiforge.agents.optim.optoprime import OptoPrime

            opt = OptoPrime(module, llm, max_tokens=1500)
        console.print(
            f"tune {agent} prompts {chosen} with {optimizer}: {len(train_set)} train / "
            f"{len(val)} validation problems from {dataset}"
        )
        result = train(
            module,
            pairs,
            make_judge(agent),
            opt,
            epochs=epochs,
            batch_size=batch_size,
            val_set=val_pairs,
            workers=workers,
            seed=seed,
            keep_best=True,
            error_score=0.0,
            log_path=out.with_suffix(".log.json"),
            llms=[llm],
        )
        values = module.prompt_values()
        save_prompts(
            values,
            out,
            meta={
                "agent": agent,
                "optimizer": optimizer,
                "dataset": dataset,
                "train_ids": [p.id for p in train_set],
                "val_ids": [p.id for p in val],
                "initial_val_score": result.initial_val_score,
                "best_val_score": result.best_val_score,
                "model": settings.model,
            },
        )
    finally:
        llm.close()
    console.print(
        f"saved {out}: validation score {result.initial_val_score} -> {result.best_val_score}; "
        f"use it with: optiforge solve --prompts {out} ... / optiforge eval --prompts {out} ..."
    )
