"""The modelling team: word problem -> formulation (model IR) -> solver -> checked answer.

- :func:`solve` / :func:`asolve`: ``agent="team"`` (formulator, planner, coder, critic under
  a UCB scheduler with self-consistency voting) or ``agent="direct"`` (one prompt -> Pyomo
  code -> sandbox run, the baseline). No graph is recorded.
- :func:`solve_graph` / :func:`asolve_graph`: the same run recorded as a trace graph (a
  node per role call and step); returns the output node, whose value is the Solution.
- :class:`TeamBudget`, :class:`TeamConfig`: what a run may spend and how it behaves.
- :class:`TeamModule` (:mod:`optiforge.agents.team.module`): the team's prompts as trainable
  trace parameters, for ``optiforge tune``; :func:`save_prompts` writes a prompts file.

Modules: :mod:`.state` (run state and plans), :mod:`.attempt` (the steps as bundled ops and
the attempts they make), :mod:`.team` (entry points). See docs/team.md.
"""

from __future__ import annotations

from optiforge.agents.team.module import TeamModule
from optiforge.agents.team.prompts import (
    TRAINABLE,
    PromptFileError,
    PromptSet,
    load_prompt_values,
    save_prompts,
)
from optiforge.agents.team.state import TeamBudget, TeamConfig, TeamError, used_prompts
from optiforge.agents.team.team import asolve, asolve_graph, solve, solve_graph

__all__ = [
    "TRAINABLE",
    "PromptFileError",
    "PromptSet",
    "TeamBudget",
    "TeamConfig",
    "TeamError",
    "TeamModule",
    "asolve",
    "asolve_graph",
    "load_prompt_values",
    "save_prompts",
    "solve",
    "solve_graph",
    "used_prompts",
]
