"""Structured replies of the team's roles (pydantic models used as ``response_format``).

The schemas are deliberately small and flat: the server turns them into a grammar, and a
1.5B model fills a short, fixed shape far more reliably than a rich one. Field order is the
order the model writes in, so each variable's description and units come before the
integrality decision (the model reasons about "kg" before it picks ``continuous``), and each
constraint's source sentence comes before its expression.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class DraftVariable(BaseModel):
    """One scalar decision variable as the formulator writes it."""

    name: str = Field(max_length=32, description="short identifier, e.g. 'chairs'")
    description: str = Field(default="", max_length=120)
    units: str = Field(default="", max_length=30)
    domain: Literal["integer", "continuous", "binary"] = "continuous"


class DraftObjective(BaseModel):
    """What to optimize, e.g. ``maximize 200*color + 70*bw``."""

    sense: Literal["maximize", "minimize"]
    expression: str = Field(max_length=600)


class DraftConstraint(BaseModel):
    """One constraint with the words of the problem it comes from."""

    source: str = Field(default="", max_length=200)
    expression: str = Field(max_length=400)


class FormulationDraft(BaseModel):
    """The formulator's reply: a compact model that :mod:`.formulation` turns into ModelIR."""

    variables: list[DraftVariable] = Field(min_length=1, max_length=30)
    objective: DraftObjective
    constraints: list[DraftConstraint] = Field(default_factory=list, max_length=40)


class Critique(BaseModel):
    """The critic's reply on one formulation and its solver result."""

    verdict: Literal["correct", "wrong"]
    problems: list[str] = Field(default_factory=list, max_length=4)
    fixes: list[str] = Field(default_factory=list, max_length=4)


class PlanChoice(BaseModel):
    """The planner's optional LLM advice (used with larger models)."""

    integer_variables: Literal["yes", "no", "unclear"]
    nonlinear: bool = False
    reason: str = Field(default="", max_length=200)
