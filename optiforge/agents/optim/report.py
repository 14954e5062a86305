"""What one optimizer step did: :class:`StepReport` and its :class:`Change` records."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Change(BaseModel):
    """One parameter that a step changed."""

    name: str
    old: Any
    new: Any
    reason: str = ""


class StepReport(BaseModel):
    """What one :meth:`Optimizer.step` did: changes, the model's reasoning, and the cost."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    step: int
    optimizer: str
    ok: bool = True
    changes: list[Change] = Field(default_factory=list)
    reasoning: str = ""
    #: Replies asked for in this step (1 when the first reply was usable).
    attempts: int = 0
    #: Why replies were rejected, one message per rejected reply or value.
    errors: list[str] = Field(default_factory=list)
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    elapsed_s: float = 0.0
    #: Optimizer-specific details (OPRO: candidates and scores; TextGrad: gradients).
    detail: dict[str, Any] = Field(default_factory=dict)

    @property
    def changed(self) -> dict[str, Any]:
        """``{parameter name: new value}`` for every change."""
        return {c.name: c.new for c in self.changes}

    def __str__(self) -> str:
        head = f"{self.optimizer} step {self.step}: "
        if not self.ok:
            return head + f"no change after {self.attempts} unusable replies: {self.errors[-1:]}"
        if not self.changes:
            return (
                head
                + "no parameter changed"
                + (f" ({self.reasoning[:200]})" if self.reasoning else "")
            )
        lines = [head + f"{len(self.changes)} change(s)"]
        for c in self.changes:
            lines.append(f"  {c.name}: {_short(c.old)} -> {_short(c.new)}")
        if self.reasoning:
            lines.append(f"  why: {self.reasoning[:400]}")
        return "\n".join(lines)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
