"""LLM optimizers on trace graphs: OptoPrime, OPRO, GEPA and a TextGrad-style optimizer.

All share :class:`Optimizer`: ``zero_feedback()``, ``backward(output, feedback)``,
``step() -> StepReport`` and JSON state with ``save(path)`` / ``load(path)``.
:func:`render_sections` renders feedback subgraphs into OptoPrime's prompt sections.
"""

from __future__ import annotations

from optiforge.agents.optim.base import Change, Optimizer, StepReport, suggestion_schema
from optiforge.agents.optim.errors import InvalidValueError, OptimizerError, ReplyError
from optiforge.agents.optim.gepa import GEPA, GEPAResult
from optiforge.agents.optim.opro import OPRO
from optiforge.agents.optim.optoprime import OptoPrime
from optiforge.agents.optim.sections import SECTION_NAMES, Sections, render_sections
from optiforge.agents.optim.textgrad import TextGrad, TextualGradientPropagator

__all__ = [
    "GEPA",
    "OPRO",
    "SECTION_NAMES",
    "Change",
    "GEPAResult",
    "InvalidValueError",
    "Optimizer",
    "OptimizerError",
    "OptoPrime",
    "ReplyError",
    "Sections",
    "StepReport",
    "TextGrad",
    "TextualGradientPropagator",
    "render_sections",
    "suggestion_schema",
]
