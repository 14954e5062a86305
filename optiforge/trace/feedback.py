"""Backward: propagate feedback from an output to all its ancestors, in linear time.

One pass computes a reverse topological order with an explicit stack (no recursion, so
chains of 100,000 nodes work), then walks it once: each node's feedback for this pass is the
combination of what its children sent, and the propagator turns it into feedback for the
node's parents. Node identity is the dict key everywhere, so there is no value comparison
and nothing quadratic.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from optiforge.trace.errors import FeedbackError, GraphCycleError
from optiforge.trace.nodes import MessageNode, Node, ParameterNode, set_backward_pass

__all__ = [
    "FeedbackRecord",
    "GraphPropagator",
    "Propagator",
    "Subgraph",
    "backward",
    "combine_feedback",
    "feedback_subgraphs",
    "topological_order",
]

_MISSING = object()
_UPDATE_LOCK = threading.Lock()


def combine_feedback(a: Any, b: Any) -> Any:
    """Combine two feedback objects into one.

    Rules: None is neutral; text is joined with a blank line; numbers are summed; dicts are
    merged (keys present in both are combined recursively); lists are concatenated; any other
    type uses ``a.combine(b)`` when it defines ``combine``, else ``a + b``. Anything else
    raises :class:`FeedbackError`.
    """
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, str) and isinstance(b, str):
        if not a:
            return b
        if not b:
            return a
        return f"{a}\n\n{b}"
    if isinstance(a, bool) or isinstance(b, bool):
        raise FeedbackError(
            "two true/false feedbacks cannot be combined (all passed? any passed?); send "
            "text or a number (e.g. 1.0 / 0.0) instead"
        )
    num = (int, float, complex)
    if isinstance(a, num) and isinstance(b, num):
        return a + b
    if isinstance(a, dict) and isinstance(b, dict):
        merged = dict(a)
        for k, v in b.items():
            merged[k] = combine_feedback(merged[k], v) if k in merged else v
        return merged
    if isinstance(a, list) and isinstance(b, list):
        return a + b
    combine = getattr(a, "combine", None)
    if callable(combine):
        return combine(b)
    if type(a) is type(b) and not isinstance(a, (str, *num, dict, list)):
        try:
            return a + b
        except TypeError:
            pass
    raise FeedbackError(
        f"cannot combine feedback of type {type(a).__name__} with {type(b).__name__}; "
        "give every backward() call the same kind of feedback, or use a type that defines "
        "combine(other) or __add__"
    )


class Propagator:
    """Turns a node's feedback into feedback for each of its parents.

    Subclass and override :meth:`propagate` (and optionally :meth:`init` and
    :meth:`combine`). One instance serves one ``backward`` call at a time.
    """

    def init(self, output: Node, feedback: Any) -> Any:
        """Return the feedback placed on ``output`` at the start of a pass."""
        return feedback

    def propagate(self, child: Node, feedback: Any) -> Mapping[Node, Any]:
        """Return ``{parent: feedback_for_parent}`` for (some of) ``child.parents``.

        ``feedback`` is the child's combined feedback in this pass. A parent left out of the
        mapping receives nothing through this edge.
        """
        raise NotImplementedError

    def combine(self, a: Any, b: Any) -> Any:
        """Combine two feedbacks arriving at the same node in one pass."""
        return combine_feedback(a, b)


class GraphPropagator(Propagator):
    """The default: every ancestor receives the output's feedback unchanged.

    The summary that lets an optimizer see *how* a parameter influenced the output is the
    :class:`FeedbackRecord` the pass leaves on each parameter: its
    :meth:`FeedbackRecord.subgraph` is the minimal subgraph from the parameter to the output.
    Feedback that reaches a node twice by different paths in one pass is the same object and
    is kept once (a diamond does not duplicate text or double a score).
    """

    def propagate(self, child: Node, feedback: Any) -> Mapping[Node, Any]:
        """Send ``feedback`` unchanged to every parent."""
        return dict.fromkeys(child.parents, feedback)

    def combine(self, a: Any, b: Any) -> Any:
        """Keep one copy of the same feedback object; otherwise use :func:`combine_feedback`."""
        if a is b:
            return a
        return combine_feedback(a, b)


def topological_order(output: Node) -> list[Node]:
    """Return ``output`` and all its ancestors, each node before all of its parents.

    Runs in O(nodes + edges) with explicit stacks and no per-node allocations beyond two
    dict entries (Kahn's algorithm over the ancestors). Raises :class:`GraphCycleError` when
    a node is its own ancestor (possible only if ``parents`` was edited by hand).
    """
    if not isinstance(output, Node):
        raise TypeError(f"expected a Node, got {type(output).__name__}")
    # 1. Find the ancestors and count, for each, the edges coming from its children.
    waiting: dict[Node, int] = {output: 0}
    stack = [output]
    push, pop = stack.append, stack.pop
    while stack:
        for p in pop().parents:
            c = waiting.get(p)
            if c is None:
                waiting[p] = 1
                push(p)
            else:
                waiting[p] = c + 1
    if waiting[output]:
        raise GraphCycleError(_cycle_message(output))
    # 2. Emit a node once all its children are emitted.
    order = [output]
    emit = order.append
    i = 0
    while i < len(order):
        for p in order[i].parents:
            c = waiting[p] - 1
            waiting[p] = c
            if not c:
                emit(p)
        i += 1
    if len(order) != len(waiting):
        stuck = next(n for n, c in waiting.items() if c)
        raise GraphCycleError(_cycle_message(stuck))
    return order


def _cycle_message(n: Node) -> str:
    return (
        f"node {n.name!r} is its own ancestor; a trace graph must be acyclic: do not edit "
        "node.parents by hand"
    )


@dataclass(eq=False)
class Subgraph:
    """The part of one backward pass that an optimizer shows for some parameters.

    ``nodes`` are the nodes on a path from one of ``parameters`` to ``output``, in
    topological order (parents first, ``output`` last). ``inputs`` are the other parents of
    those nodes (values the computation read but that do not depend on the parameters).
    OptoPrime and GEPA render subgraphs into their prompt sections with
    :func:`optiforge.agents.optim.sections.render_sections`.
    """

    output: Node
    feedback: Any
    parameters: list[ParameterNode]
    nodes: list[Node]
    inputs: list[Node]


@dataclass(eq=False)
class FeedbackRecord:
    """What one ``backward`` call left behind: the output, the feedback given, and the order
    in which it visited ``output`` and its ancestors (output first)."""

    output: Node
    feedback: Any
    order: list[Node] = field(repr=False)

    def subgraph(self, *parameters: ParameterNode) -> Subgraph:
        """Minimal subgraph connecting ``parameters`` to the output (O(size of the pass))."""
        params = list(dict.fromkeys(parameters))
        marked: set[Node] = set(params)
        path: list[Node] = []
        for n in reversed(self.order):  # parents before children
            if n in marked:
                path.append(n)
                continue
            for p in n.parents:
                if p in marked:
                    marked.add(n)
                    path.append(n)
                    break
        if self.output not in marked:
            path = [n for n in path if n in params]
        in_path = set(path)
        inputs: list[Node] = []
        seen: set[Node] = set()
        for n in path:
            if isinstance(n, MessageNode):
                for p in n.parents:
                    if p not in in_path and p not in seen:
                        seen.add(p)
                        inputs.append(p)
        return Subgraph(self.output, self.feedback, params, path, inputs)


def backward(output: Node, feedback: Any, propagator: Propagator | None = None) -> FeedbackRecord:
    """Propagate ``feedback`` about ``output`` to all its ancestors; see :meth:`Node.backward`."""
    if not isinstance(output, Node):
        raise TypeError(f"backward() needs a Node, got {type(output).__name__}")
    prop = propagator if propagator is not None else GraphPropagator()
    order = topological_order(output)
    record = FeedbackRecord(output, feedback, order)
    pending: dict[Node, Any] = {output: prop.init(output, feedback)}
    pop = pending.pop
    combine = prop.combine
    trusted = type(prop) is GraphPropagator  # sends exactly to child.parents
    arrived_nodes: list[Node] = []
    arrived_feedback: list[Any] = []
    # Phase 1: compute every node's feedback for this pass without touching any node, so a
    # failing propagator leaves the graph as it was.
    for n in order:
        fb = pop(n, _MISSING)
        if fb is _MISSING:
            continue  # no path carried feedback here (the propagator left those edges out)
        arrived_nodes.append(n)
        arrived_feedback.append(fb)
        parents = n.parents
        if not parents:
            continue
        if trusted:  # the default propagator, inlined: every parent gets the same object
            for parent in parents:
                old = pending.get(parent, _MISSING)
                if old is _MISSING:
                    pending[parent] = fb
                elif old is not fb:
                    pending[parent] = combine(old, fb)
            continue
        sent = prop.propagate(n, fb)
        if not sent:
            continue
        if not isinstance(sent, Mapping):
            raise FeedbackError(
                f"{type(prop).__name__}.propagate() must return a mapping of parent -> "
                f"feedback, got {type(sent).__name__}"
            )
        for parent, pfb in sent.items():
            if parent not in parents:
                raise FeedbackError(
                    f"{type(prop).__name__}.propagate() sent feedback to "
                    f"{getattr(parent, 'name', parent)!r}, which is not a parent of {n.name!r}"
                )
            old = pending.get(parent, _MISSING)
            pending[parent] = pfb if old is _MISSING else combine(old, pfb)
    # Phase 2: combine with what nodes already hold (all or nothing), then store. Parameters
    # may be shared by backward passes in other threads, hence the lock.
    with _UPDATE_LOCK:
        combined = [
            fb if n.feedback is None else combine_feedback(n.feedback, fb)
            for n, fb in zip(arrived_nodes, arrived_feedback, strict=True)
        ]
        for n, value in zip(arrived_nodes, combined, strict=True):
            n.feedback = value
            if isinstance(n, ParameterNode):
                n.feedback_records.append(record)
    return record


def feedback_subgraphs(parameters: Iterable[ParameterNode]) -> list[Subgraph]:
    """One :class:`Subgraph` per backward pass that reached any of ``parameters``.

    Each subgraph holds the parameters that pass reached and the minimal subgraph connecting
    them to that pass's output. Passes are listed in the order they happened.
    """
    groups: dict[int, tuple[FeedbackRecord, list[ParameterNode]]] = {}
    for p in parameters:
        for rec in p.feedback_records:
            entry = groups.get(id(rec))
            if entry is None:
                groups[id(rec)] = (rec, [p])
            elif p not in entry[1]:
                entry[1].append(p)
    return [rec.subgraph(*params) for rec, params in groups.values()]


set_backward_pass(backward)  # Node.backward runs it (nodes cannot import this module)
