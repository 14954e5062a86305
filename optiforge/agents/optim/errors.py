"""Errors raised by the optimizers and the trainer."""

from __future__ import annotations

from optiforge.errors import OptiforgeError


class OptimizerError(OptiforgeError):
    """An optimizer was misused (no parameters, unknown parameter name, bad state file)."""


class ReplyError(OptimizerError):
    """An LLM reply could not be turned into usable parameter values.

    The optimizer catches it, logs it, changes nothing and counts it toward its retry
    limit; it only reaches the caller through :class:`StepReport.errors`.
    """


class InvalidValueError(ReplyError):
    """A suggested value fails the parameter's type check (not a number, code that does
    not compile or changes the function's signature, ...)."""
