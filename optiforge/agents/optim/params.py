"""Which trace parameters an optimizer holds.

Optimizers work on :class:`~optiforge.trace.nodes.ParameterNode` directly (``p.value``,
``p.description``, ``p.constraint``, ``p.kind == "code"``, ``p.validate``/``p.set``);
this module only gathers them from what the user passed.

:func:`backward` sends feedback from an output, with a clear error when the output is not
a traced node.
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
