"""The team as a trace :class:`Module`: its role prompts are trainable parameters.

``TeamModule(prompts=None, **solve_kwargs)`` holds one
:class:`~optiforge.trace.ParameterNode` per trainable prompt (``formulator_system``,
``critic_system``, ``coder_system``, ``planner_system``) as attributes. Calling it on a
problem text (``await module(text)``) runs the team with every step as its own bundled op
(see :mod:`optiforge.agents.team.attempt`) and returns the output node, whose value is the
:class:`~optiforge.agents.solution.Solution`. ``output.backward(feedback)`` reaches each
prompt through the steps that used it, so an optimizer (OptoPrime, OPRO, TextGrad, GEPA)
sees, for each role, the subgraph of its own steps and the feedback.

``parameters()`` lists only the prompts some step of the configured run can use (see
:func:`~optiforge.agents.team.state.used_prompts`): with the default settings the planner
model is off, so ``planner_system`` is not offered; with ``agent="direct"`` only
``coder_system`` is. The attribute exists either way (its value is kept and saved).

Other API: ``prompt_values()`` (current texts, for :func:`save_prompts`),
``used_prompts`` (the names ``parameters()`` is drawn from), ``solve_kwargs``. Whether the
run is recorded follows the trace context (``optiforge.trace.no_trace`` turns it off, as
the trainer does for validation). :func:`save_prompts` writes the versioned prompts file
that ``solve(..., prompts=FILE)`` and ``--prompts FILE`` read.
"""

from __future__ import annotations

from typing import Any

from optiforge.agents.team.prompts import (
    TRAINABLE,
    PromptSet,
    load_prompt_values,
    prompt_parameter,
    save_prompts,
)

__all__ = ["TeamModule", "save_prompts"]


class TeamModule:
    """The team with trainable prompts (a :class:`optiforge.trace.Module`).

    Built lazily on the trace package, so importing this module stays cheap.
    """

    def __new__(cls, prompts: dict[str, str] | None = None, **kwargs: Any) -> Any:
        return _make_module(prompts, **kwargs)


def _make_module(prompts: dict[str, str] | None = None, **solve_kwargs: Any) -> Any:
    from optiforge.agents.team.state import TeamConfig, used_prompts
    from optiforge.trace import Module

    values = load_prompt_values(prompts)
    ps = PromptSet(values)
    agent = solve_kwargs.get("agent", "team")
    config = solve_kwargs.get("config") or TeamConfig()
    used = used_prompts(agent, config)

    class _TeamModule(Module):
        """The modelling team; parameters are the roles' system prompts that its steps use."""

        def __init__(self) -> None:
            for name in TRAINABLE:
                setattr(self, name, prompt_parameter(name, ps.text(name)))
            self.solve_kwargs = dict(solve_kwargs)
            self.used_prompts = used
            self.fixed_overrides = {k: v for k, v in values.items() if k not in TRAINABLE}

        def named_parameters(self, include_frozen: bool = False) -> dict[str, Any]:
            """The prompt parameters some step can use (unused prompts are never offered)."""
            found = super().named_parameters(include_frozen)
            return {k: v for k, v in found.items() if k in self.used_prompts}

        def prompt_values(self) -> dict[str, str]:
            """Current text of every trainable prompt (plus fixed overrides)."""
            vals = {name: getattr(self, name).value for name in TRAINABLE}
            return {**self.fixed_overrides, **vals}

        async def forward(self, problem: Any, **kwargs: Any) -> Any:
            """Run the team on ``problem`` (text or a node); returns the output node, whose
            value is the :class:`Solution`."""
            from optiforge.agents.team.team import run_graph

            merged = {**self.solve_kwargs, **kwargs}
            merged.pop("prompts", None)
            return await run_graph(
                problem,
                params={name: getattr(self, name) for name in TRAINABLE},
                prompts=self.fixed_overrides or None,
                **merged,
            )

    return _TeamModule()
