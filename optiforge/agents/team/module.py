"""The team as a trace :class:`Module`: its role prompts are trainable parameters.

``TeamModule`` holds one :class:`~optiforge.trace.ParameterNode` per trainable prompt
(``formulator_system``, ``critic_system``, ``coder_system``, ``planner_system``). Calling
it on a problem runs the team as a bundled step whose parents are those prompts, so
``output.backward(feedback)`` reaches every prompt and OptoPrime or OPRO can propose new
text for them (``optiforge tune``). ``save_prompts`` writes the values in the format that
``solve(..., prompts=FILE)`` and ``--prompts FILE`` read.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from optiforge.agents.solution import Solution
from optiforge.agents.team.prompts import TRAINABLE, PromptSet

_DESCRIPTIONS = {
    "formulator_system": "System prompt of the formulator: instructions and examples for turning "
    "a word problem into a JSON optimization model (variables with domains, objective, "
    "constraints). Keep the JSON field names.",
    "critic_system": "System prompt of the critic: how to review a model and its solver result "
    "and give concrete fixes.",
    "coder_system": "System prompt of the coder: how to write a Pyomo program that ends with "
    "report(model=m, results=res).",
    "planner_system": "System prompt of the planner: how to decide integrality and nonlinearity.",
}

_SUMMARY_DOC = (
    "Runs the modelling team on the problem: the formulator writes JSON models with the "
    "formulator_system prompt, a solver solves them, the critic (critic_system) checks them "
    "and asks for repairs, the coder (coder_system) writes Pyomo code as an alternative, and "
    "the answers are voted on. Returns the chosen objective value, the solver status, the "
    "formulation and what the critic found."
)


def _summary(sol: Solution) -> dict[str, Any]:
    issues = []
    for s in sol.steps:
        for i in s.detail.get("issues", []) if isinstance(s.detail, dict) else []:
            issues.append(i.get("message", ""))
    return {
        "answer": sol.answer,
        "status": sol.result.status.value if sol.result is not None else None,
        "failure": sol.failure_class,
        "error": (sol.error or "")[:400] or None,
        "formulation": sol.formulation_markdown,
        "critic_findings": sorted(set(issues))[:8],
    }


class TeamModule:
    """The team with trainable prompts (a :class:`optiforge.trace.Module`).

    Built lazily on the trace package, so importing this module stays cheap.
    """

    def __new__(cls, prompts: dict[str, str] | None = None, **kwargs: Any) -> Any:
        return _make_module(prompts, **kwargs)


def _make_module(prompts: dict[str, str] | None = None, **solve_kwargs: Any) -> Any:
    from optiforge.trace import Module, bundle, node

    ps = PromptSet(prompts)

    class _TeamModule(Module):
        """The modelling team; parameters are the roles' system prompts."""

        def __init__(self) -> None:
            for name in TRAINABLE:
                setattr(
                    self,
                    name,
                    node(
                        ps.text(name),
                        name=name,
                        trainable=True,
                        description=_DESCRIPTIONS[name],
                    ),
                )
            self.solve_kwargs = dict(solve_kwargs)
            self.last_solution: Solution | None = None
            self.fixed_overrides = {k: v for k, v in (prompts or {}).items() if k not in TRAINABLE}

        def prompt_values(self) -> dict[str, str]:
            """Current text of every trainable prompt (plus fixed overrides)."""
            vals = {name: getattr(self, name).value for name in TRAINABLE}
            return {**self.fixed_overrides, **vals}

        async def forward(self, problem: Any, **kwargs: Any) -> Any:
            """Run the team on ``problem``; returns the output node (value: a summary dict).

            The full :class:`Solution` is in ``self.last_solution``.
            """
            from optiforge.agents.team.team import asolve

            merged = {**self.solve_kwargs, **kwargs}
            sink: list[Solution] = []

            async def modelling_team(
                problem: str,
                formulator_system: str,
                critic_system: str,
                coder_system: str,
                planner_system: str,
            ) -> dict[str, Any]:
                values = {
                    **self.fixed_overrides,
                    "formulator_system": formulator_system,
                    "critic_system": critic_system,
                    "coder_system": coder_system,
                    "planner_system": planner_system,
                }
                sol = await asolve(problem, prompts=values, **merged)
                sink.append(sol)
                return _summary(sol)

            op = bundle(modelling_team, name="modelling_team", doc=_SUMMARY_DOC)
            out = await op(
                node(problem, name="problem") if not hasattr(problem, "value") else problem,
                *(getattr(self, name) for name in TRAINABLE),
            )
            self.last_solution = sink[0] if sink else None
            return out

    return _TeamModule()


def _run_sync(coro: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def solve_traced(
    problem_text: str,
    *,
    llm: Any = None,
    agent: str = "team",
    budget: Any = None,
    samples: int | None = None,
    prompts: dict[str, str] | None = None,
    roles: dict[str, Any] | None = None,
) -> tuple[Solution, Any]:
    """:func:`solve` that also returns the run's trace output node (for ``--save-graph``)."""
    from optiforge.errors import OptiforgeError
    from optiforge.trace import ExecutionError

    module = TeamModule(prompts, llm=llm, agent=agent, budget=budget, samples=samples, roles=roles)
    try:
        out = _run_sync(module.forward(problem_text))
    except ExecutionError as exc:
        inner = getattr(getattr(exc, "exception_node", None), "value", None)
        if isinstance(inner, OptiforgeError):
            raise inner from None
        raise
    sol = module.last_solution
    assert sol is not None
    return sol, out


def save_prompts(
    values: dict[str, str], path: str | Path, meta: dict[str, Any] | None = None
) -> None:
    """Write tuned prompts atomically as ``{"format": ..., "prompts": {...}, "meta": {...}}``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": "optiforge.team-prompts/1", "prompts": values, "meta": meta or {}}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
