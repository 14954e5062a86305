"""The modelling team: word problem -> formulation (model IR) -> solver -> checked answer.

- :func:`solve` / :func:`asolve`: ``agent="team"`` (formulator, planner, coder, critic under
  a UCB scheduler with self-consistency voting) or ``agent="direct"`` (one prompt -> Pyomo
  code -> sandbox run, the baseline).
- :class:`TeamBudget`, :class:`TeamConfig`: what a run may spend and how it behaves.
- :class:`TeamModule` (:mod:`optiforge.agents.team.module`): the team's prompts as trainable
  trace parameters, for ``optiforge tune``.

See docs/team.md.
"""

from __future__ import annotations

from optiforge.agents.team.prompts import TRAINABLE, PromptSet, load_prompt_values
from optiforge.agents.team.team import TeamBudget, TeamConfig, TeamError, asolve, solve

__all__ = [
    "TRAINABLE",
    "PromptSet",
    "TeamBudget",
    "TeamConfig",
    "TeamError",
    "asolve",
    "load_prompt_values",
    "solve",
]
