"""Errors raised by :mod:`optiforge.trace`. Each message says what to do next."""

from __future__ import annotations

from typing import Any

from optiforge.errors import OptiforgeError


class TraceError(OptiforgeError):
    """Base class of every error raised by the trace engine."""


class BundleError(TraceError):
    """A function cannot be bundled (no source for a trainable bundle, not callable, ...)."""


class ValueTypeError(TraceError):
    """A proposed new value does not fit the parameter (wrong type, unparsable text)."""


class CodeError(ValueTypeError):
    """New source code for a trainable bundle does not compile or changes the signature."""


class GraphCycleError(TraceError):
    """The graph has a cycle, so there is no order in which to propagate feedback."""


class FeedbackError(TraceError):
    """Two feedback objects cannot be combined, or a propagator returned something invalid."""


class SerializationError(TraceError):
    """A value cannot be written to, or read from, JSON."""


class ExecutionError(TraceError):
    """A bundled function or a recorded operator raised an exception.

    The exception is recorded in the graph as :attr:`exception_node` (an
    :class:`~optiforge.trace.nodes.ExceptionNode` whose parents are the call's inputs, and for
    a trainable bundle its code parameter). Call ``err.exception_node.backward(feedback)`` so
    an optimizer can repair the code or the inputs. The original exception is ``__cause__``
    and ``err.exception_node.value``.
    """

    # ``Any``, not ExceptionNode: importing nodes here (even for typing) would put errors.py,
    # which every trace module imports, into a cycle with them.
    def __init__(self, exception_node: Any) -> None:
        self.exception_node = exception_node
        super().__init__(exception_node.message)
