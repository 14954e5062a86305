#!/usr/bin/env python
"""Side by side: optiforge's GEPA, OptoPrime and OPRO against the `gepa` PyPI package.

Every optimizer gets the same task, the same model (task and reflection/optimizer), the
same budget of metric calls (examples run and judged) and the same seeds; the tuned
program is then scored on a held-out test split that no optimizer saw. Prints JSON: per
task and optimizer, test accuracy, metric calls, LLM requests and tokens (all, and the
optimizer's own), per seed and averaged.

Tasks:
- ``ticket``: the ticket-routing example (examples/prompt_classification.py): its
  instruction starts as "Classify this support ticket."; train/val/test 10/10/10 per seed.
- ``formulator``: the team's ``formulator_system`` prompt on NL4Opt problems with agreed
  answers that are in no shipped sample (readme40, fresh60) and in no list of ids named in
  the repository (``fresh60-excluded.ids``); a seeded split, graded by
  ``optiforge.evals.tune.TeamJudge`` (the eval rule).

Optimizers: ``gepa-pypi`` (``gepa.optimize`` with an adapter over optiforge's client and
rollouts; install with ``pip install -e '.[bench]'``), ``gepa`` (``optiforge.agents.GEPA``),
``optoprime`` and ``opro`` (through ``optiforge.agents.trainer.train`` with minibatches of 3
and as many steps as the budget pays for: each step judges 3 + len(val) examples).

Resumable: each finished (task, optimizer, seed) is written to OUT/results/ and skipped on a
rerun; an unfinished one resumes from its state file (optiforge) or run directory (gepa).

    python benchmarks/optimizers_vs_gepa.py --out runs/bench-gepa          # hours of CPU
    python benchmarks/optimizers_vs_gepa.py --smoke --out /tmp/bench-smoke  # SmolLM2, slow CPU: ~1 h
    python benchmarks/optimizers_vs_gepa.py --smoke --scripted --out /tmp/bench-scripted  # seconds
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "prompt_classification.py"
OPTIMIZERS = ("gepa-pypi", "gepa", "optoprime", "opro")
TASKS = ("ticket", "formulator")
MINIBATCH = 3
#: The LLM tag each optimizer's own calls carry.
TAGS = {
    "gepa-pypi": "bench.gepa_pypi",
    "gepa": "optim.gepa",
    "optoprime": "optim.optoprime",
    "opro": "optim.opro",
}
#: Seed of the formulator task's problem draw (the per-run seed shuffles the split).
FORMULATOR_POOL_SEED = 20261201


class CountingJudge:
    """Wraps a judge and counts metric calls (one per example judged)."""

    def __init__(self, judge: Callable[[Any, Any], Any]) -> None:
        self.judge = judge
        self.calls = 0

    def __call__(self, output: Any, target: Any) -> Any:
        self.calls += 1
        return self.judge(output, target)


# -- tasks ---------------------------------------------------------------------------------------
def _example() -> Any:
    spec = importlib.util.spec_from_file_location("prompt_classification", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def ticket_task(llm: Any, seed: int, sizes: dict[str, int]) -> dict[str, Any]:
    ex = _example()
    train, val, test = ex.load_splits(seed)
    train, val, test = train[: sizes["train"]], val[: sizes["val"]], test[: sizes["test"]]
    router = ex.TicketRouter(llm, "Classify this support ticket.")
    every = [t for t, _ in ex.load_splits(0)[0] + ex.load_splits(0)[1] + ex.load_splits(0)[2]]
    return {
        "module": router,
        "judge": ex.make_judge(router, every),
        "train": train,
        "val": val,
        "test": test,
        "opro_task": "Write the system prompt for a model that labels customer messages. Its "
        f"reply must be exactly one of: {', '.join(ex.LABELS)}.",
    }


def formulator_pool(n: int) -> list[Any]:
    """``n`` NL4Opt problems (agreed answers) named nowhere: no sample, no excluded id."""
    from optiforge.datasets import load_dataset
    from optiforge.evals.sample import fresh_excluded
    from optiforge.evals.tune import held_out_ids, is_test_problem

    named = held_out_ids() | fresh_excluded()
    pool = [
        p
        for p in load_dataset("nl4opt")
        if p.answer_status == "agreed" and p.id not in named and not is_test_problem(p)
    ]
    return random.Random(FORMULATOR_POOL_SEED).sample(pool, n)


def formulator_task(llm: Any, seed: int, sizes: dict[str, int], team: dict[str, Any]) -> dict:
    from optiforge.agents.team import TRAINABLE
    from optiforge.agents.team.module import TeamModule
    from optiforge.evals.tune import TeamJudge

    problems = formulator_pool(sizes["train"] + sizes["val"] + sizes["test"])
    random.Random(seed).shuffle(problems)
    items = [(p.text, p) for p in problems]
    a, b = sizes["train"], sizes["train"] + sizes["val"]
    module = TeamModule(None, llm=llm, agent="team", **team)
    for name in TRAINABLE:
        getattr(module, name).trainable = name == "formulator_system"
    return {
        "module": module,
        "judge": TeamJudge(),
        "train": items[:a],
        "val": items[a:b],
        "test": items[b:],
        "opro_task": "Improve the instructions of an LLM that turns optimization word problems "
        "into correct mathematical models. Score = share of problems solved correctly.",
    }


# -- optimizers ----------------------------------------------------------------------------------
def run_optiforge(
    kind: str, task: dict, llm: Any, budget: int, seed: int, state: Path, tokens: int
) -> str:
    """Run optiforge's ``kind`` within ``budget`` metric calls; returns its LLM tag."""
    from optiforge.agents.optim import GEPA, OPRO, OptoPrime
    from optiforge.agents.trainer import train

    module, judge = task["module"], task["judge"]
    if kind == "gepa":
        opt = GEPA(
            module,
            llm,
            max_metric_calls=budget,
            minibatch_size=MINIBATCH,
            seed=seed,
            max_tokens=tokens,
        )
        opt.optimize(module, task["train"], judge, task["val"], state_path=state)
        return opt.tag
    if kind == "opro":
        opt = OPRO(module, llm, n=2, task=task["opro_task"], seed=seed, max_tokens=tokens)
    else:
        opt = OptoPrime(module, llm, memory=2, seed=seed, max_tokens=tokens)
    n_val = len(task["val"])
    steps = max(0, (budget - n_val) // (MINIBATCH + n_val))
    if steps:
        train(
            module,
            task["train"],
            judge,
            opt,
            epochs=1000,
            batch_size=MINIBATCH,
            val_set=task["val"],
            seed=seed,
            max_steps=steps,
            progress=False,
            state_path=state,
        )
    return opt.tag


def run_gepa_pypi(task: dict, llm: Any, budget: int, seed: int, run_dir: Path, tokens: int) -> str:
    """``gepa.optimize`` with an adapter that runs our module through optiforge's rollouts."""
    import gepa
    from gepa.core.adapter import EvaluationBatch

    from optiforge.agents.optim import params as P
    from optiforge.agents.optim.rollouts import Rollouts

    module, judge = task["module"], task["judge"]
    named = {P.name(p): p for p in module.parameters() if getattr(p, "trainable", True)}
    tag = "bench.gepa_pypi"
    # One runner (one event loop) for the whole run: the async client keeps its
    # connections per loop, so a loop per evaluate() call would strand them.
    runner = Rollouts(module, judge, 4, 0.0)

    class Adapter:
        propose_new_texts = None

        def evaluate(self, batch, candidate, capture_traces=False):
            for name, value in candidate.items():
                P.set_value(named[name], value)
            out = runner.run(list(enumerate(batch)), record=False)
            evals = [e for e, _ in out]
            traces = [
                {"input": batch[e.index][0], "output": e.output, "feedback": e.feedback}
                for e in evals
            ]
            return EvaluationBatch(
                outputs=[e.output for e in evals],
                scores=[float(e.score or 0.0) for e in evals],
                trajectories=traces if capture_traces else None,
            )

        def make_reflective_dataset(self, candidate, eval_batch, components_to_update):
            records = [
                {
                    "Inputs": str(t["input"])[:3000],
                    "Generated Outputs": str(t["output"])[:3000],
                    "Feedback": t["feedback"],
                }
                for t in eval_batch.trajectories or []
            ]
            return {c: records for c in components_to_update}

    def reflection_lm(prompt: Any) -> str:
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        return llm.chat(messages, tag=tag, max_tokens=tokens, temperature=0.0, seed=seed).text

    try:
        result = gepa.optimize(
            seed_candidate={n: str(P.value(p)) for n, p in named.items()},
            trainset=task["train"],
            valset=task["val"],
            adapter=Adapter(),
            reflection_lm=reflection_lm,
            reflection_minibatch_size=MINIBATCH,
            candidate_selection_strategy="pareto",
            module_selector="round_robin",
            max_metric_calls=budget,
            run_dir=str(run_dir),
            seed=seed,
            display_progress_bar=False,
        )
    finally:
        runner.close()
    for name, value in result.best_candidate.items():
        P.set_value(named[name], value)
    return tag


# -- a scripted model for --scripted (plumbing only) --------------------------------------------------
LABEL_RULE = "Answer with exactly one word: billing, technical, account or shipping."
DRAFT = json.dumps(
    {
        "variables": [{"name": "x", "description": "amount", "units": "", "domain": "continuous"}],
        "objective": {"sense": "maximize", "expression": "x"},
        "constraints": [{"source": "", "expression": "x <= 10"}],
    }
)


def scripted_reply(messages: list[dict[str, Any]], tag: str | None = None, **kw: Any) -> str:
    """Deterministic replies: the router answers 'billing' once its instruction names the
    labels; every optimizer proposes LABEL_RULE (or a longer formulator prompt)."""
    system = str(messages[0].get("content", "")) if messages else ""
    prompt = "\n".join(str(m.get("content", "")) for m in messages)
    if tag == "router":
        return "billing" if "billing" in system else "I think this is about money"
    if tag == "formulator":
        return DRAFT
    if tag == "critic":
        return json.dumps({"verdict": "correct"})
    if tag and (tag.startswith("optim") or tag.startswith("bench")):
        new = (
            LABEL_RULE if "support ticket" in prompt or "label" in prompt else system + " Be exact."
        )
        if tag in ("optim.gepa", "bench.gepa_pypi"):
            return f"Name the labels.\n```\n{new}\n```"
        name = "formulator_system" if "formulator_system" in prompt else "instruction"
        return json.dumps({"reasoning": "name the labels", "suggestion": {name: new}})
    return ""


# -- one run ---------------------------------------------------------------------------------------
def run_one(args: argparse.Namespace, llm: Any, task_name: str, opt: str, seed: int) -> dict:
    from optiforge.agents.trainer import evaluate

    sizes = args.sizes[task_name]
    team = {"budget": args.team_budget, "samples": args.team_samples}
    task = (
        ticket_task(llm, seed, sizes)
        if task_name == "ticket"
        else formulator_task(llm, seed, sizes, team)
    )
    counter = CountingJudge(task["judge"])
    task["judge"] = counter
    budget = args.budget or args.budgets[task_name]
    work = args.out / "work" / f"{task_name}-{opt}-seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    before = llm.usage.snapshot()
    tag_before = {o: llm.usage.for_tag(t) for o, t in TAGS.items()}
    t0 = time.perf_counter()
    if opt == "gepa-pypi":
        tag = run_gepa_pypi(task, llm, budget, seed, work / "gepa-run", args.tokens)
    else:
        tag = run_optiforge(opt, task, llm, budget, seed, work / "state.json", args.tokens)
    elapsed = time.perf_counter() - t0
    after = llm.usage.snapshot()
    opt_usage, opt_before = llm.usage.for_tag(tag), tag_before[opt]
    metric_calls = counter.calls
    test_score, _ = evaluate(task["module"], task["test"], task["judge"], workers=4)
    values = {n: str(getattr(p, "value", ""))[:4000] for n, p in _named(task["module"]).items()}
    return {
        "task": task_name,
        "optimizer": opt,
        "seed": seed,
        "budget": budget,
        "test_accuracy": test_score,
        "metric_calls": metric_calls,
        "llm_requests": (after.calls + after.cache_hits) - (before.calls + before.cache_hits),
        "llm_calls": after.calls - before.calls,
        "tokens": after.tokens - before.tokens,
        "optimizer_calls": opt_usage.calls - opt_before.calls,
        "optimizer_tokens": (opt_usage.prompt_tokens + opt_usage.completion_tokens)
        - (opt_before.prompt_tokens + opt_before.completion_tokens),
        "elapsed_s": round(elapsed, 1),
        "sizes": sizes,
        "model": args.model,
        "parameters": values,
    }


def _named(module: Any) -> dict[str, Any]:
    return {p.name: p for p in module.parameters() if getattr(p, "trainable", True)}


def summarize(results: list[dict]) -> dict:
    out: dict[str, Any] = {}
    for r in results:
        row = out.setdefault(r["task"], {}).setdefault(r["optimizer"], {"runs": []})
        row["runs"].append(
            {
                k: r[k]
                for k in (
                    "seed",
                    "test_accuracy",
                    "metric_calls",
                    "llm_requests",
                    "tokens",
                    "optimizer_calls",
                    "optimizer_tokens",
                    "elapsed_s",
                )
            }
        )
    for task in out.values():
        for row in task.values():
            runs = row["runs"]
            for key in (
                "test_accuracy",
                "metric_calls",
                "llm_requests",
                "tokens",
                "optimizer_calls",
                "optimizer_tokens",
                "elapsed_s",
            ):
                vals = [r[key] for r in runs if r[key] is not None]
                row[f"mean_{key}"] = round(sum(vals) / len(vals), 4) if vals else None
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-optimizers-vs-gepa"))
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated: ticket,formulator")
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budget", type=int, default=None, help="metric calls (default per task)")
    ap.add_argument("--model", default=None, help="model of the task and the optimizers")
    ap.add_argument("--base-url", default=None)
    ap.add_argument(
        "--tokens", type=int, default=2048, help="max tokens of a reflection/optimizer reply"
    )
    ap.add_argument("--cache", action="store_true", help="reuse the LLM response cache")
    ap.add_argument("--smoke", action="store_true", help="SmolLM2, one seed, tiny budgets")
    ap.add_argument(
        "--scripted", action="store_true", help="a scripted model instead of a real one (plumbing)"
    )
    args = ap.parse_args(argv)
    args.budgets = {"ticket": 80, "formulator": 40}
    args.sizes = {
        "ticket": {"train": 10, "val": 10, "test": 10},
        "formulator": {"train": 8, "val": 6, "test": 10},
    }
    args.team_budget, args.team_samples = None, None
    if args.smoke:
        args.model = args.model or "smollm2-135m"
        args.seeds = "0"
        args.tokens = min(args.tokens, 200)
        args.budgets = {"ticket": 12, "formulator": 7}
        args.sizes = {
            "ticket": {"train": 4, "val": 3, "test": 3},
            "formulator": {"train": 2, "val": 2, "test": 1},
        }
        args.team_budget, args.team_samples = 2, 1
    tasks = [t for t in args.tasks.split(",") if t]
    opts = [o for o in args.optimizers.split(",") if o]
    bad = [t for t in tasks if t not in TASKS] + [o for o in opts if o not in OPTIMIZERS]
    if bad:
        sys.exit(f"error: unknown task or optimizer {bad}; tasks {TASKS}, optimizers {OPTIMIZERS}")
    if "gepa-pypi" in opts and importlib.util.find_spec("gepa") is None:
        sys.exit("error: the gepa package is missing: pip install -e '.[bench]'")

    from optiforge.config import load_settings
    from optiforge.llm.serving import connect

    settings = load_settings(model=args.model, base_url=args.base_url)
    args.model = settings.model
    results_dir = args.out / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    results = []
    if args.scripted:
        from optiforge.llm.testing import ScriptedLLM

        args.model = "scripted"
        client = ScriptedLLM(scripted_reply)
    else:
        client = connect(settings, cache=args.cache)
    with client as llm:
        # Start the embedded server (when no --base-url) now, outside any event loop: the
        # rollouts' loops come and go, the server must not belong to one of them.
        ensure = getattr(llm, "ensure_server", None)
        if callable(ensure):
            ensure()
        for task_name in tasks:
            for seed in [int(s) for s in args.seeds.split(",")]:
                for opt in opts:
                    path = results_dir / f"{task_name}-{opt}-seed{seed}.json"
                    if path.exists():
                        results.append(json.loads(path.read_text()))
                        continue
                    print(f"running {task_name} / {opt} / seed {seed}", file=sys.stderr)
                    r = run_one(args, llm, task_name, opt, seed)
                    tmp = path.with_suffix(".tmp")
                    tmp.write_text(json.dumps(r, indent=2))
                    tmp.replace(path)
                    results.append(r)
    summary = {
        "model": args.model,
        "smoke": args.smoke,
        "scripted": args.scripted,
        "seeds": args.seeds,
        "budgets": {t: args.budget or args.budgets[t] for t in tasks},
        "reply_tokens": args.tokens,
        "sizes": {t: args.sizes[t] for t in tasks},
        "results": summarize(results),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
