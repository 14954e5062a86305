#!/usr/bin/env python
"""Side by side: optiforge's GEPA, OptoPrime and OPRO against the `gepa` PyPI package.

Every optimizer gets the same task, the same model (task and reflection/optimizer, one
OpenAI-compatible server), the same budget of metric calls (examples run and judged) and
the same seeds; the tuned program is then scored on a held-out test split that no optimizer
saw. Prints JSON (and writes it to ``--out``): per task and optimizer, test accuracy, metric
calls, LLM calls and tokens (all, and the optimizer's own), per seed and averaged, with the
model, the settings and the git commit.

Tasks (``--task``):
- ``ticket``: the ticket-routing example (examples/prompt_classification.py): its
  instruction starts as "Classify this support ticket."; the example's own seeded
  train/val/test split (10/10/10) for each seed.
- ``formulator``: the team's ``formulator_system`` prompt. Train and validation are drawn
  (per seed) from ``nl4opt-tune-train``, the test split is ``nl4opt-tune-val`` (no optimizer
  sees it); graded by ``optiforge.evals.tune.TeamJudge``, the eval rule that ``optiforge
  tune`` uses. The metric runs the formulator-only path by default
  (``--formulator-path formulator``: the team without the LLM critic and the code route, 2
  LLM samples per problem); ``--formulator-path team`` runs the full default team per
  metric call (several times costlier). The output names the path.

Optimizers: ``gepa-pypi`` (``gepa.optimize`` with an adapter that runs our module through
optiforge's client and rollouts; ``pip install -e '.[bench]'``), ``gepa``
(``optiforge.agents.GEPA``), ``optoprime`` and ``opro`` (through
``optiforge.agents.trainer.train`` with minibatches of 3 and as many steps as the budget
pays for: each step judges 3 + len(val) examples, after one initial validation).

Resumable: each finished (task, optimizer, seed) is written to WORK/results/ (WORK defaults
to ``--out`` without its suffix, plus ``.work``) and not re-run; an unfinished one resumes
from its state file (optiforge) or run directory (gepa).

    optiforge serve --local --port 18650 &          # or any OpenAI-compatible server
    python benchmarks/optimizers_vs_gepa.py --base-url http://127.0.0.1:18650/v1 --model qwen2.5-coder-1.5b --out benchmarks/results/optimizers-vs-gepa.json  # hours
    python benchmarks/optimizers_vs_gepa.py --scripted --smoke --out /tmp/bench.json  # seconds
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import subprocess
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
#: The formulator task's samples: train/val are drawn from the first, test is the second.
FORMULATOR_TRAIN, FORMULATOR_TEST = "nl4opt-tune-train", "nl4opt-tune-val"
#: ``--formulator-path``: the team settings one metric call of the formulator task runs.
FORMULATOR_PATHS = {
    "formulator": {
        "config": {"llm_critic": False, "code_route": False},
        "budget": 2,
        "description": "formulator-only: the team without the LLM critic and the code route "
        "(formulate, deterministic checks, solve), 2 LLM samples per problem",
    },
    "team": {
        "config": {},
        "budget": None,
        "description": "the full default team per problem (critic, code route, repairs)",
    },
}


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


def formulator_problems() -> tuple[list[Any], list[Any]]:
    """(pool, test): the problems of ``nl4opt-tune-train`` and ``nl4opt-tune-val``, checked
    by :func:`optiforge.evals.tune.select_training` (answers usable, no eval sample)."""
    from optiforge.evals.sample import load_sample
    from optiforge.evals.tune import select_training

    pool = select_training("nl4opt", ids=load_sample(FORMULATOR_TRAIN))
    test = select_training("nl4opt", ids=load_sample(FORMULATOR_TEST))
    return pool, test


def formulator_task(llm: Any, seed: int, sizes: dict[str, int], path: str) -> dict:
    from optiforge.agents.team.module import TeamModule
    from optiforge.agents.team.state import TeamConfig
    from optiforge.evals.tune import TeamJudge

    pool, test = formulator_problems()
    if sizes["train"] + sizes["val"] > len(pool):
        raise SystemExit(
            f"error: the formulator task has {len(pool)} training problems "
            f"({FORMULATOR_TRAIN}), fewer than train + val = {sizes['train'] + sizes['val']}"
        )
    random.Random(seed).shuffle(pool)
    a, b = sizes["train"], sizes["train"] + sizes["val"]
    settings = FORMULATOR_PATHS[path]
    module = TeamModule(
        None,
        llm=llm,
        agent="team",
        config=TeamConfig(**settings["config"]),
        budget=settings["budget"],
    )
    for name, param in module.named_parameters().items():
        param.trainable = name == "formulator_system"
    return {
        "module": module,
        "judge": TeamJudge(),
        "train": [(p.text, p) for p in pool[:a]],
        "val": [(p.text, p) for p in pool[a:b]],
        "test": [(p.text, p) for p in test[: sizes["test"]]],
        "opro_task": "Improve the instructions of an LLM that turns optimization word problems "
        "into correct mathematical models. Score = share of problems solved correctly.",
    }


# -- optimizers ----------------------------------------------------------------------------------
def run_optiforge(
    kind: str, task: dict, llm: Any, budget: int, seed: int, state: Path, tokens: int, cap: int
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
            max_prompt_chars=cap,
        )
        opt.optimize(module, task["train"], judge, task["val"], state_path=state)
        return opt.tag
    if kind == "opro":
        opt = OPRO(module, llm, n=2, task=task["opro_task"], seed=seed, max_tokens=tokens)
    else:
        opt = OptoPrime(module, llm, memory=2, seed=seed, max_tokens=tokens, max_prompt_chars=cap)
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


def record_chars(cap: int, values: dict[str, str]) -> int:
    """How long each field (input, output, feedback) of the ``gepa`` package's reflective
    records may be, so that a minibatch of them, the current values and its own prompt
    template (about 1,500 characters) stay within ``cap``, as optiforge's prompts do."""
    room = cap - 1500 - sum(len(v) for v in values.values())
    return max(200, room // (3 * MINIBATCH))


def run_gepa_pypi(
    task: dict, llm: Any, budget: int, seed: int, run_dir: Path, tokens: int, cap: int
) -> str:
    """``gepa.optimize`` with an adapter that runs our module through optiforge's rollouts."""
    import gepa
    from gepa.core.adapter import EvaluationBatch

    from optiforge.agents.optim.rollouts import Rollouts

    module, judge = task["module"], task["judge"]
    named = _named(module)
    tag = "bench.gepa_pypi"
    # One runner (one event loop) for the whole run: the async client keeps its
    # connections per loop, so a loop per evaluate() call would strand them.
    runner = Rollouts(module, judge, 4, 0.0)

    class Adapter:
        propose_new_texts = None

        def evaluate(self, batch, candidate, capture_traces=False):
            for name, value in candidate.items():
                named[name].set(value)
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
            n = record_chars(cap, {k: str(v) for k, v in candidate.items()})
            records = [
                {
                    "Inputs": str(t["input"])[:n],
                    "Generated Outputs": str(t["output"])[:n],
                    "Feedback": str(t["feedback"])[:n],
                }
                for t in eval_batch.trajectories or []
            ]
            return {c: records for c in components_to_update}

    def reflection_lm(prompt: Any) -> str:
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        return llm.chat(messages, tag=tag, max_tokens=tokens, temperature=0.0, seed=seed).text

    try:
        result = gepa.optimize(
            seed_candidate={n: str(p.value) for n, p in named.items()},
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
        named[name].set(value)
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


KEYWORDS = {
    "billing": ("charg", "refund", "fee", "invoice", "payment", "bill", "price", "pay"),
    "shipping": ("package", "deliver", "tracking", "arriv", "box", "ship", "courier", "order"),
    "account": ("account", "password", "email", "profile", "user", "username", "sign"),
}


def scripted_label(text: str) -> str:
    """The scripted router's label for a ticket once its instruction names every label: a
    keyword rule (right on most tickets, not all)."""
    low = text.lower()
    for label, words in KEYWORDS.items():
        if any(w in low for w in words):
            return label
    return "technical"


def scripted_reply(messages: list[dict[str, Any]], tag: str | None = None, **kw: Any) -> str:
    """Deterministic replies: the router labels a ticket by :func:`scripted_label` once its
    instruction names the four labels (free text before); every optimizer proposes
    LABEL_RULE (or a longer formulator prompt)."""
    system = str(messages[0].get("content", "")) if messages else ""
    prompt = "\n".join(str(m.get("content", "")) for m in messages)
    if tag == "router":
        if all(label in system for label in ("billing", "technical", "account", "shipping")):
            return scripted_label(str(messages[-1].get("content", "")))
        return "I think this is about money"
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
    task = (
        ticket_task(llm, seed, sizes)
        if task_name == "ticket"
        else formulator_task(llm, seed, sizes, args.formulator_path)
    )
    counter = CountingJudge(task["judge"])
    task["judge"] = counter
    budget = args.budget or args.budgets[task_name]
    work = args.work / "work" / f"{task_name}-{opt}-seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    before = llm.usage.snapshot()
    tag_before = {o: llm.usage.for_tag(t) for o, t in TAGS.items()}
    t0 = time.perf_counter()
    if opt == "gepa-pypi":
        tag = run_gepa_pypi(
            task, llm, budget, seed, work / "gepa-run", args.tokens, args.max_prompt_chars
        )
    else:
        tag = run_optiforge(
            opt, task, llm, budget, seed, work / "state.json", args.tokens, args.max_prompt_chars
        )
    elapsed = time.perf_counter() - t0
    after = llm.usage.snapshot()
    opt_usage, opt_before = llm.usage.for_tag(tag), tag_before[opt]
    metric_calls = counter.calls
    test_score, _ = evaluate(task["module"], task["test"], task["judge"], workers=4)
    values = {n: str(p.value)[:4000] for n, p in _named(task["module"]).items()}
    return {
        "task": task_name,
        "optimizer": opt,
        "seed": seed,
        "budget": budget,
        "max_prompt_chars": args.max_prompt_chars,
        "test_accuracy": test_score,
        "test_size": len(task["test"]),
        # Metric calls the optimizer spent (the test scoring after it is not counted).
        "metric_calls": metric_calls,
        # LLM calls and tokens of the whole run (task and optimizer), and the optimizer's own.
        "llm_requests": (after.calls + after.cache_hits) - (before.calls + before.cache_hits),
        "llm_calls": after.calls - before.calls,
        "tokens": after.tokens - before.tokens,
        "optimizer_calls": opt_usage.calls - opt_before.calls,
        "optimizer_tokens": (opt_usage.prompt_tokens + opt_usage.completion_tokens)
        - (opt_before.prompt_tokens + opt_before.completion_tokens),
        "elapsed_s": round(elapsed, 1),
        "sizes": sizes,
        "model": args.model,
        # The code this run was made with (a resumed benchmark may mix commits).
        "git": git_commit(),
        "parameters": values,
    }


def _named(module: Any) -> dict[str, Any]:
    """The module's trainable parameters by path (``instruction``, ``formulator_system``)."""
    return dict(module.named_parameters())


SUMMED = (
    "test_accuracy",
    "metric_calls",
    "llm_requests",
    "llm_calls",
    "tokens",
    "optimizer_calls",
    "optimizer_tokens",
    "elapsed_s",
)


def summarize(results: list[dict]) -> dict:
    """``{task: {optimizer: {"runs": [...], "mean_<key>": ...}}}`` over the seeds run."""
    out: dict[str, Any] = {}
    for r in sorted(results, key=lambda r: (r["task"], r["optimizer"], r["seed"])):
        row = out.setdefault(r["task"], {}).setdefault(r["optimizer"], {"runs": []})
        row["runs"].append(
            {
                "seed": r["seed"],
                **{k: r.get(k) for k in SUMMED},
                "commit": (r.get("git") or {}).get("commit"),
            }
        )
    for task in out.values():
        for row in task.values():
            runs = row["runs"]
            row["seeds"] = len(runs)
            for key in SUMMED:
                vals = [r[key] for r in runs if r[key] is not None]
                row[f"mean_{key}"] = round(sum(vals) / len(vals), 4) if vals else None
    return out


def git_commit() -> dict[str, Any]:
    """The commit of this checkout and whether its tracked files differ from it."""

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(ROOT), *cmd], capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    commit = git("rev-parse", "HEAD")
    return {
        "commit": commit or None,
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument(
        "--out",
        type=Path,
        default=Path("runs/optimizers-vs-gepa.json"),
        help="the JSON result file (also printed)",
    )
    ap.add_argument(
        "--work",
        type=Path,
        default=None,
        help="finished runs and state files, for resuming (default: OUT without suffix + .work)",
    )
    ap.add_argument(
        "--task", "--tasks", dest="tasks", default=",".join(TASKS), help="ticket,formulator"
    )
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    ap.add_argument(
        "--budget", type=int, default=None, help="metric calls (default: ticket 80, formulator 40)"
    )
    ap.add_argument("--model", default=None, help="model of the task and the optimizers")
    ap.add_argument("--base-url", default=None, help="an OpenAI-compatible server (.../v1)")
    ap.add_argument(
        "--tokens", type=int, default=2048, help="max tokens of a reflection/optimizer reply"
    )
    ap.add_argument(
        "--max-prompt-chars",
        type=int,
        default=9000,
        help="every optimizer's prompt cap in characters (optiforge's max_prompt_chars; the "
        "gepa package's records are cut to fit the same): 9000 fits 4096-token slots",
    )
    ap.add_argument(
        "--formulator-path",
        choices=sorted(FORMULATOR_PATHS),
        default="formulator",
        help="what one metric call of the formulator task runs",
    )
    ap.add_argument("--cache", action="store_true", help="reuse the LLM response cache")
    ap.add_argument("--smoke", action="store_true", help="one seed, tiny splits and budgets")
    ap.add_argument(
        "--scripted", action="store_true", help="a scripted model instead of a real one (plumbing)"
    )
    args = ap.parse_args(argv)
    args.budgets = {"ticket": 80, "formulator": 40}
    args.sizes = {
        "ticket": {"train": 10, "val": 10, "test": 10},
        "formulator": {"train": 12, "val": 8, "test": 10},
    }
    if args.smoke:
        args.seeds = "0" if args.seeds == "0,1,2" else args.seeds
        args.tokens = min(args.tokens, 300)
        args.budgets = {"ticket": 12, "formulator": 7}
        args.sizes = {
            "ticket": {"train": 4, "val": 3, "test": 3},
            "formulator": {"train": 2, "val": 2, "test": 1},
        }
    if args.budget is not None and args.budget < 1:
        ap.error("--budget must be at least 1")
    try:
        args.seed_list = [int(x) for x in args.seeds.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--seeds takes comma-separated integers, got {args.seeds!r}")
    args.task_list = [t for t in args.tasks.split(",") if t]
    args.opt_list = [o for o in args.optimizers.split(",") if o]
    bad = [t for t in args.task_list if t not in TASKS]
    bad += [o for o in args.opt_list if o not in OPTIMIZERS]
    if bad:
        ap.error(f"unknown task or optimizer {bad}; tasks {TASKS}, optimizers {OPTIMIZERS}")
    if not args.seed_list or not args.task_list or not args.opt_list:
        ap.error("--seeds, --task and --optimizers must each name at least one")
    args.work = args.work or args.out.parent / f"{args.out.stem}.work"
    return args


def require_gepa() -> None:
    """Exit with the install command when the ``gepa`` package is missing."""
    if importlib.util.find_spec("gepa") is None:
        sys.exit(
            "error: the gepa package is not installed (it is only a benchmark dependency): "
            "pip install -e '.[bench]'  (or leave it out: --optimizers gepa,optoprime,opro)"
        )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if "gepa-pypi" in args.opt_list:
        require_gepa()

    from optiforge.config import load_settings
    from optiforge.llm.serving import connect

    settings = load_settings(model=args.model, base_url=args.base_url)
    args.model = settings.model
    results_dir = args.work / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    results, reused = [], []
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
        for task_name in args.task_list:
            for seed in args.seed_list:
                for opt in args.opt_list:
                    path = results_dir / f"{task_name}-{opt}-seed{seed}.json"
                    if path.exists():
                        done = json.loads(path.read_text())
                        same = done.get("budget") == (args.budget or args.budgets[task_name])
                        if same and done.get("sizes") == args.sizes[task_name]:
                            results.append(done)
                            reused.append(path.name)
                            continue
                        sys.exit(
                            f"error: {path} was run with other settings (budget "
                            f"{done.get('budget')}, sizes {done.get('sizes')}); use another "
                            "--out/--work or delete it"
                        )
                    print(f"running {task_name} / {opt} / seed {seed}", file=sys.stderr)
                    r = run_one(args, llm, task_name, opt, seed)
                    tmp = path.with_suffix(".tmp")
                    tmp.write_text(json.dumps(r, indent=2))
                    tmp.replace(path)
                    results.append(r)
    summary = {
        "benchmark": "optimizers_vs_gepa",
        "model": args.model,
        "base_url": None if args.scripted else (settings.base_url or "embedded llama.cpp"),
        "git": git_commit(),
        "gepa_version": _gepa_version() if "gepa-pypi" in args.opt_list else None,
        "settings": {
            "tasks": args.task_list,
            "optimizers": args.opt_list,
            "seeds": args.seed_list,
            "budgets_metric_calls": {t: args.budget or args.budgets[t] for t in args.task_list},
            "minibatch": MINIBATCH,
            "reply_tokens": args.tokens,
            "sizes": {t: args.sizes[t] for t in args.task_list},
            "formulator_path": (
                {"name": args.formulator_path, **FORMULATOR_PATHS[args.formulator_path]}
                if "formulator" in args.task_list
                else None
            ),
            "formulator_splits": {"train_val": FORMULATOR_TRAIN, "test": FORMULATOR_TEST},
            "smoke": args.smoke,
            "scripted": args.scripted,
            "cache": args.cache,
        },
        "reused_runs": reused,
        "work": str(args.work),
        "results": summarize(results),
    }
    text = json.dumps(summary, indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(args.out)
    print(text)
    return summary


def _gepa_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gepa")
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
