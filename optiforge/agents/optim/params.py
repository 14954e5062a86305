"""How the optimizers read and write trace parameter nodes.

Kept in one place so the optimizers depend on a handful of operations only: a parameter's
name, value, description, whether it holds code, and setting a new value.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from optiforge.agents.optim.errors import OptimizerError


def collect(parameters: Any) -> list[Any]:
    """Trainable parameters from a list of nodes, a Module, or anything with
    ``parameters()``; order kept, duplicates (same object) dropped."""
    if hasattr(parameters, "parameters") and callable(parameters.parameters):
        parameters = parameters.parameters()
    if not isinstance(parameters, Iterable) or isinstance(parameters, str | bytes):
        raise OptimizerError(
            f"parameters must be a list of trainable nodes or a Module, got {type(parameters).__name__}"
        )
    seen: set[int] = set()
    out: list[Any] = []
    for p in parameters:
        if not hasattr(p, "name"):
            raise OptimizerError(
                f"{p!r} is not a trace node; wrap values with node(value, trainable=True)"
            )
        if not getattr(p, "trainable", True):
            continue
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def name(p: Any) -> str:
    """The parameter's own name (not necessarily unique)."""
    return str(p.name)


def unique_names(params: list[Any]) -> dict[Any, str]:
    """``{parameter: unique name}``, exactly as the trace renderer names them in prompts."""
    from optiforge.trace.render import assign_names

    return assign_names(params)


def value(p: Any) -> Any:
    """The parameter's current value."""
    return p.value


def set_value(p: Any, new: Any) -> None:
    """Give the parameter a new, already checked value.

    ``ParameterNode.set`` validates again and, for a trainable function, recompiles it; a
    failure there raises the trace engine's error and leaves the value unchanged.
    """
    setter = getattr(p, "set", None)
    if callable(setter):
        setter(new)
    else:
        p.value = new


def description(p: Any) -> str:
    """The parameter's description, or ''."""
    return str(getattr(p, "description", "") or "")


def constraint(p: Any) -> str:
    """The constraint text attached to the parameter, or ''."""
    c = getattr(p, "constraint", None)
    return "" if c is None else str(c)


def is_code(p: Any) -> bool | None:
    """True if the parameter holds function source code; None if unknown (decided by
    looking at the value)."""
    if getattr(p, "kind", None) == "code":  # optiforge.trace.bundle.CodeParameter
        return True
    return None


def zero_feedback(p: Any) -> None:
    """Clear the parameter's feedback."""
    fn = getattr(p, "zero_feedback", None)
    if callable(fn):
        fn()


def feedback(p: Any) -> Any:
    """The feedback collected on the parameter (engine-specific structure)."""
    return getattr(p, "feedback", None)


def backward(output: Any, fb: Any, *, propagator: Any = None, **kwargs: Any) -> Any:
    """Call ``output.backward(fb)`` with ``propagator`` when one is given."""
    if not hasattr(output, "backward"):
        raise OptimizerError(
            f"cannot send feedback from {type(output).__name__}: the output must be a traced "
            "node (returned by a @bundle function or node(...))"
        )
    if propagator is not None:
        kwargs["propagator"] = propagator
    return output.backward(fb, **kwargs)
