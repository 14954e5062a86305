"""Agents: LLM optimizers on trace graphs, a trainer, and the modelling team.

Names are imported lazily so that ``import optiforge.agents`` stays cheap:

- ``Optimizer``, ``OptoPrime``, ``OPRO``, ``TextGrad``, ``GEPA`` (``optiforge.agents.optim``)
- ``train`` (``optiforge.agents.trainer``)
- ``solve``, ``asolve`` (``optiforge.agents.team``): word problem -> :class:`Solution`;
  ``solve_graph``, ``asolve_graph``: the same run recorded (output node, value: Solution);
  ``TeamModule``, ``TeamError``, ``load_prompt_values``, ``save_prompts``
- ``Solution``, ``StepRecord`` (``optiforge.agents.solution``)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Optimizer": "optiforge.agents.optim",
    "OptoPrime": "optiforge.agents.optim",
    "OPRO": "optiforge.agents.optim",
    "TextGrad": "optiforge.agents.optim",
    "GEPA": "optiforge.agents.optim",
    "train": "optiforge.agents.trainer",
    "solve": "optiforge.agents.team",
    "asolve": "optiforge.agents.team",
    "solve_graph": "optiforge.agents.team",
    "asolve_graph": "optiforge.agents.team",
    "TeamModule": "optiforge.agents.team",
    "TeamError": "optiforge.agents.team",
    "load_prompt_values": "optiforge.agents.team",
    "save_prompts": "optiforge.agents.team",
    "Solution": "optiforge.agents.solution",
    "StepRecord": "optiforge.agents.solution",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'optiforge.agents' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
