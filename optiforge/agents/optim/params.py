"""Which trace parameters an optimizer holds.

Optimizers work on :class:`~optiforge.trace.nodes.ParameterNode` directly (``p.value``,
``p.description``, ``p.constraint``, ``p.kind == "code"``, ``p.validate``/``p.set``);
this module only gathers them from what the user passed.

The small helpers at the end (:func:`value`, :func:`set_value`, :func:`description`,
:func:`constraint`, :func:`backward`) are the typed remainder of an older attribute-lookup
layer, kept while ``gepa.py`` still calls them; new code uses the node's attributes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from optiforge.agents.optim.errors import OptimizerError
from optiforge.trace import Module, Node, ParameterNode, assign_names


def collect(parameters: Module | Iterable[Node] | Any) -> list[ParameterNode]:
    """Trainable parameters from a list of nodes, a Module, or anything with
    ``parameters()``; order kept, duplicates (same object) and frozen or plain (not
    trainable) nodes dropped."""
    if hasattr(parameters, "parameters") and callable(parameters.parameters):
        parameters = parameters.parameters()
    if not isinstance(parameters, Iterable) or isinstance(parameters, str | bytes):
        raise OptimizerError(
            f"parameters must be a list of trainable nodes or a Module, got {type(parameters).__name__}"
        )
    seen: set[int] = set()
    out: list[ParameterNode] = []
    for p in parameters:
        if not isinstance(p, Node):
            raise OptimizerError(
                f"{p!r} is not a trace node; wrap values with node(value, trainable=True)"
            )
        if not isinstance(p, ParameterNode) or not p.trainable:
            continue
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def unique_names(params: list[ParameterNode]) -> dict[ParameterNode, str]:
    """``{parameter: unique name}``, exactly as the trace renderer names them in prompts."""
    return assign_names(params)


def description(p: ParameterNode) -> str:
    """The parameter's description, or ''."""
    return p.description or ""


def constraint(p: ParameterNode) -> str:
    """The constraint text attached to the parameter, or ''."""
    return "" if p.constraint is None else str(p.constraint)


def value(p: ParameterNode) -> Any:
    """The parameter's current value (``p.value``)."""
    return p.value


def set_value(p: ParameterNode, new: Any) -> None:
    """``p.set(new)``: validated again (code recompiled); a failure raises the trace
    engine's error and leaves the value unchanged."""
    p.set(new)


def backward(output: Any, fb: Any, *, propagator: Any = None, **kwargs: Any) -> Any:
    """``output.backward(fb)`` with ``propagator`` when one is given; a clear error when
    ``output`` is not a traced node."""
    if not isinstance(output, Node):
        raise OptimizerError(
            f"cannot send feedback from {type(output).__name__}: the output must be a traced "
            "node (returned by a @bundle function or node(...))"
        )
    if propagator is not None:
        kwargs["propagator"] = propagator
    return output.backward(fb, **kwargs)
