"""Graph nodes and the operators that record edges between them.

A node wraps a Python value. ``parents`` (a tuple) points from a node to the nodes it was
computed from; there are no references from parent to child and no global registry, so a
graph is freed as soon as the user drops its output. Node equality and hashing are by
identity: ``a == b`` is ``a is b``. Comparing values is an explicit, recorded operation
(``a.eq(b)``, ``a < b``).
"""

from __future__ import annotations

import operator
import os
import traceback as _traceback
from collections.abc import Callable, Iterator
from typing import Any

from optiforge.trace import values as _values
from optiforge.trace.context import TRACING
from optiforge.trace.errors import ExecutionError, TraceError, ValueTypeError
from optiforge.trace.source import function_source

__all__ = [
    "ExceptionNode",
    "MessageNode",
    "Node",
    "Op",
    "ParameterNode",
    "ValueTypeError",
    "is_node",
    "node",
    "value_of",
]

_new = object.__new__
_NO_PARENTS: tuple = ()
_TRACE_DIR = os.path.dirname(os.path.abspath(__file__))

# The backward pass lives in optiforge.trace.feedback, which builds on this module, so this
# module does not import it: feedback hands its ``backward`` to :func:`set_backward_pass`
# when it is imported, and ``import optiforge.trace`` imports it.
_backward_pass: Callable[..., Any] | None = None


def set_backward_pass(fn: Callable[..., Any]) -> None:
    """Make ``fn(node, feedback, propagator)`` what :meth:`Node.backward` runs.

    Called once by :mod:`optiforge.trace.feedback` with its :func:`backward`.
    """
    global _backward_pass
    _backward_pass = fn


class Op:
    """What produced a :class:`MessageNode`: a bundled function or a recorded operator.

    ``name`` appears in rendered code (``add0 = add(x=a, y=b)``), ``doc`` in #Documentation.
    ``kind`` is ``"operator"`` or ``"bundle"``. ``fn`` is the original Python callable when
    there is one (used only to show its source).
    """

    __slots__ = ("_source", "doc", "fn", "kind", "name", "trainable")

    def __init__(
        self,
        name: str,
        doc: str,
        *,
        kind: str = "operator",
        fn: Callable | None = None,
        trainable: bool = False,
    ) -> None:
        self.name = name
        self.doc = doc
        self.kind = kind
        self.fn = fn
        self.trainable = trainable
        self._source: str | None = None

    @property
    def source(self) -> str | None:
        """Source text of the bundled function (decorators stripped), or None if unavailable."""
        if self._source is None and self.fn is not None:
            try:
                self._source = function_source(self.fn)
            except TraceError:
                self._source = None
        return self._source

    def __repr__(self) -> str:
        return f"Op({self.name!r}, kind={self.kind!r})"


def _type_name(value: Any) -> str:
    return type(value).__name__


class Node:
    """A value in a trace graph.

    Attributes:
        name: a readable base name (the parameter name, the op name, or the value's type).
            Rendering makes names unique within a graph, so it need not be unique.
        description: optional text shown to optimizers.
        parents: the nodes this one was computed from (empty for inputs and parameters).
        feedback: what :meth:`backward` left here (combined over backward calls until
            :meth:`zero_feedback`), or None.
    """

    __slots__ = ("__weakref__", "_value", "description", "feedback", "name", "parents")

    kind = "value"

    def __init__(self, value: Any, name: str | None = None, description: str | None = None):
        if isinstance(value, Node):
            raise TraceError(
                f"cannot wrap node {value.name!r} in another node; pass node.value, "
                "or use node(x), which returns x unchanged when it is already a node"
            )
        self._value = value
        self.name = name or _type_name(value)
        self.description = description
        self.parents: tuple[Node, ...] = _NO_PARENTS
        self.feedback: Any = None

    # ----- value -----------------------------------------------------------------------
    @property
    def value(self) -> Any:
        """The wrapped Python value."""
        return self._value

    @property
    def data(self) -> Any:
        """Alias of :attr:`value` (the name Microsoft Trace uses)."""
        return self._value

    @property
    def trainable(self) -> bool:
        """True for trainable parameters only."""
        return False

    @property
    def is_root(self) -> bool:
        """True when the node has no parents."""
        return not self.parents

    # ----- feedback ----------------------------------------------------------------------
    def backward(self, feedback: Any, propagator: Any = None) -> Any:
        """Propagate ``feedback`` about this node to every ancestor (linear time).

        Every node reached gets ``node.feedback`` (combined with what it already had), and
        every trainable parameter reached appends the returned
        :class:`~optiforge.trace.feedback.FeedbackRecord` to ``param.feedback_records``, from
        which its minimal subgraph is derived. ``propagator`` defaults to
        :class:`~optiforge.trace.feedback.GraphPropagator`.
        """
        run = _backward_pass
        if run is None:
            raise TraceError(
                "the backward pass is not loaded; import optiforge.trace (it loads "
                "optiforge.trace.feedback)"
            )
        return run(self, feedback, propagator)

    def zero_feedback(self) -> None:
        """Forget the feedback this node received."""
        self.feedback = None

    # ----- explicit recorded operations ----------------------------------------------------
    def eq(self, other: Any) -> MessageNode:
        """Recorded value comparison ``self.value == other`` (``==`` itself is identity)."""
        return _binary_apply(_OPS["eq"], operator.eq, self, other)

    def ne(self, other: Any) -> MessageNode:
        """Recorded value comparison ``self.value != other``."""
        return _binary_apply(_OPS["ne"], operator.ne, self, other)

    def contains(self, item: Any) -> MessageNode:
        """Recorded ``item in self.value`` (the ``in`` operator itself is not recorded)."""
        return _binary_apply(_OPS["contains"], operator.contains, self, item)

    def len(self) -> MessageNode:
        """Recorded ``len(self.value)`` (``len(node)`` must return an int, so it is not)."""
        return _apply(_OPS["len"], len, ("x",), (self,), (self._value,))

    def attr(self, name: str) -> MessageNode:
        """Recorded ``getattr(self.value, name)``; also works for names a node itself has."""
        return _apply(
            _OPS["getattr"], getattr, ("x", "name"), (self, Node(name)), (self._value, name)
        )

    def format(self, *args: Any, **kwargs: Any) -> MessageNode:
        """Recorded ``self.value.format(*args, **kwargs)`` with nodes or plain values."""
        return _call_apply(_OPS["format"], _format, self, "template", args, kwargs)

    def call(self, *args: Any, **kwargs: Any) -> MessageNode:
        """Recorded call of the wrapped callable (same as ``node(*args, **kwargs)``)."""
        return _call_apply(_OPS["call"], _call, self, "fn", args, kwargs)

    __call__ = call

    # ----- protocol methods that must return plain Python objects (not recorded) ------------
    def __bool__(self) -> bool:
        return bool(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __contains__(self, item: Any) -> bool:
        return (item._value if isinstance(item, Node) else item) in self._value

    def __str__(self) -> str:
        return str(self._value)

    def __int__(self) -> int:
        return int(self._value)

    def __float__(self) -> float:
        return float(self._value)

    def __format__(self, spec: str) -> str:
        return format(self._value, spec)

    def __repr__(self) -> str:
        text = repr(self._value)
        if len(text) > 80:
            text = text[:77] + "..."
        return f"{type(self).__name__}(name={self.name!r}, value={text})"

    # ----- recorded protocol methods ----------------------------------------------------
    def __getitem__(self, key: Any) -> MessageNode:
        return _binary_apply(_OPS["getitem"], operator.getitem, self, key, ("x", "index"))

    def __getattr__(self, name: str) -> MessageNode:
        # Only reached for names the node does not have. Private and dunder names are never
        # forwarded, so copy/pickle/introspection behave normally.
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            value = getattr(self._value, name)
        except AttributeError:
            raise AttributeError(
                f"node {self.name!r} holds a {_type_name(self._value)} without attribute {name!r}"
            ) from None
        if not TRACING.get():
            return Node(value)
        return message_node(value, _OPS["getattr"], (self, Node(name)), ("x", "name"))

    def __iter__(self) -> Iterator[MessageNode]:
        it = iter(self._value)
        op = _OPS["iter"]
        for i, item in enumerate(it):
            if TRACING.get():
                yield message_node(item, op, (self, Node(i)), ("x", "index"))
            else:
                yield Node(item)

    def __neg__(self) -> MessageNode:
        return _apply(_OPS["neg"], operator.neg, ("x",), (self,), (self._value,))

    def __pos__(self) -> MessageNode:
        return _apply(_OPS["pos"], operator.pos, ("x",), (self,), (self._value,))

    def __abs__(self) -> MessageNode:
        return _apply(_OPS["abs"], abs, ("x",), (self,), (self._value,))

    def __invert__(self) -> MessageNode:
        return _apply(_OPS["invert"], operator.invert, ("x",), (self,), (self._value,))

    def __round__(self, ndigits: int | None = None) -> MessageNode:
        if ndigits is None:
            return _apply(_OPS["round"], round, ("x",), (self,), (self._value,))
        return _binary_apply(_OPS["round"], round, self, ndigits, ("x", "ndigits"))


def _format(template: Any, *args: Any, **kwargs: Any) -> Any:
    return template.format(*args, **kwargs)


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


class ParameterNode(Node):
    """A trainable value: a number, a prompt, a dict, code, ... that an optimizer may change.

    Attributes beyond :class:`Node`: ``constraint`` (text shown in #Constraints),
    ``trainable`` (set False to freeze), ``feedback_records`` (one
    :class:`~optiforge.trace.feedback.FeedbackRecord` per ``backward`` that reached it).
    Assign ``param.value = new`` (or ``param.set(raw)`` to type-check first).
    """

    __slots__ = ("_explicit_name", "_trainable", "constraint", "feedback_records")

    kind = "parameter"

    def __init__(
        self,
        value: Any,
        name: str | None = None,
        description: str | None = None,
        constraint: str | None = None,
        trainable: bool = True,
    ) -> None:
        super().__init__(value, name=name or "param", description=description)
        self._explicit_name = name is not None
        self.constraint = constraint
        self._trainable = bool(trainable)
        self.feedback_records: list = []

    @property
    def value(self) -> Any:
        """The current value; assign to change it (the next run uses the new value)."""
        return self._value

    @value.setter
    def value(self, new: Any) -> None:
        if isinstance(new, Node):
            new = new._value
        self._value = new

    @property
    def trainable(self) -> bool:
        """Whether optimizers should change this parameter (assignable)."""
        return self._trainable

    @trainable.setter
    def trainable(self, flag: bool) -> None:
        self._trainable = bool(flag)

    def zero_feedback(self) -> None:
        """Forget feedback and the feedback records (which keep their graphs alive)."""
        self.feedback = None
        self.feedback_records = []

    def validate(self, raw: Any) -> Any:
        """Return ``raw`` converted to this parameter's type, or raise :class:`ValueTypeError`.

        A number stays a number ("3" -> 3 for an int parameter), a bool a bool ("yes" ->
        True), a list a list (JSON or Python literal text is parsed), text stays text, and
        text holding a def stays a def with the same signature. A parameter whose value is
        None accepts anything. The full rule: :mod:`optiforge.trace.values`.
        """
        return coerce_value(self._value, raw, self.name)

    def set(self, raw: Any, validate: bool = True) -> Any:
        """Set a new value (validated by default) and return it."""
        new = self.validate(raw) if validate else (raw._value if isinstance(raw, Node) else raw)
        self._value = new
        return new


def coerce_value(
    current: Any, raw: Any, name: str = "parameter", *, is_code: bool | None = None
) -> Any:
    """Convert ``raw`` (often text from an LLM; a node counts as its value) to the type of
    ``current``, or raise :class:`ValueTypeError`. The rule is written down in
    :mod:`optiforge.trace.values`, its one owner; :meth:`ParameterNode.validate` and the
    optimizers use it."""
    if isinstance(raw, Node):
        raw = raw._value
    return _values.coerce_value(current, raw, name, is_code=is_code)


class MessageNode(Node):
    """The result of a bundled call or a recorded operator.

    ``op`` says what produced it; ``argnames[i]`` is the argument name under which
    ``parents[i]`` was passed (used to render ``name = op(arg=parent, ...)``).
    """

    __slots__ = ("argnames", "op")

    kind = "message"

    def __init__(
        self,
        value: Any,
        op: Op,
        parents: tuple[Node, ...] = (),
        argnames: tuple[str, ...] | None = None,
        name: str | None = None,
        description: str | None = None,
    ) -> None:
        super().__init__(value, name=name or op.name, description=description)
        parents = tuple(parents)
        if argnames is None:
            argnames = tuple(f"arg{i}" for i in range(len(parents)))
        if len(argnames) != len(parents):
            raise TraceError("argnames and parents must have the same length")
        for p in parents:
            if not isinstance(p, Node):
                raise TraceError(f"a parent must be a Node, got {_type_name(p)}")
        self.parents = parents
        self.op = op
        self.argnames = tuple(argnames)


class ExceptionNode(MessageNode):
    """An exception raised by a bundled function, a recorded operator, or by compiling new
    code for a trainable bundle. ``value`` is the exception object; ``traceback`` is the
    formatted traceback (frames of the trace engine removed); ``message`` is one line."""

    __slots__ = ("message", "traceback")

    kind = "exception"

    @classmethod
    def from_exception(
        cls,
        exc: BaseException,
        op: Op,
        parents: tuple[Node, ...],
        argnames: tuple[str, ...],
        message: str | None = None,
    ) -> ExceptionNode:
        """Build the node for ``exc`` raised while running ``op`` on ``parents``."""
        n = _new(cls)
        n._value = exc
        n.name = op.name
        n.description = None
        n.parents = parents if TRACING.get() else _NO_PARENTS
        n.argnames = argnames if TRACING.get() else ()
        n.feedback = None
        n.op = op
        detail = str(exc)
        n.message = message or (
            f"{op.name} raised {type(exc).__name__}" + (f": {detail}" if detail else "")
        )
        n.traceback = format_user_traceback(exc)
        return n

    def __bool__(self) -> bool:
        return False


def format_user_traceback(exc: BaseException) -> str:
    """Format ``exc`` with its traceback, leaving out frames of the trace engine itself."""
    frames = [
        f
        for f in _traceback.extract_tb(exc.__traceback__)
        if not os.path.abspath(f.filename).startswith(_TRACE_DIR + os.sep)
    ]
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += _traceback.format_list(frames)
    lines += _traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


def message_node(value: Any, op: Op, parents: tuple, argnames: tuple) -> MessageNode:
    """The recorded node of one call of ``op``: ``value`` computed from ``parents`` (named by
    ``argnames``). Used by :mod:`optiforge.trace.bundle` and the node operators."""
    # Hot path of every recorded call: fill slots directly instead of running __init__.
    n = _new(MessageNode)
    n._value = value
    n.name = op.name
    n.description = None
    n.parents = parents
    n.feedback = None
    n.op = op
    n.argnames = argnames
    return n


def _apply(op: Op, fn: Callable, argnames: tuple, parents: tuple, values: tuple) -> Node:
    try:
        value = fn(*values)
    except Exception as exc:
        raise ExecutionError(ExceptionNode.from_exception(exc, op, parents, argnames)) from exc
    if not TRACING.get():
        return Node(value)
    return message_node(value, op, parents, argnames)


def _as_node(x: Any) -> Node:
    return x if isinstance(x, Node) else Node(x)


def _binary_apply(
    op: Op, fn: Callable, left: Any, right: Any, argnames: tuple = ("x", "y")
) -> Node:
    a = _as_node(left)
    b = _as_node(right)
    return _apply(op, fn, argnames, (a, b), (a._value, b._value))


def _call_apply(op: Op, fn: Callable, first: Node, first_name: str, args: tuple, kwargs: dict):
    parents = [first]
    names = [first_name]
    values = []
    for i, a in enumerate(args):
        n = _as_node(a)
        parents.append(n)
        names.append(f"args[{i}]")
        values.append(n._value)
    kw = {}
    for k, v in kwargs.items():
        n = _as_node(v)
        parents.append(n)
        names.append(k)
        kw[k] = n._value
    try:
        value = fn(first._value, *values, **kw)
    except Exception as exc:
        raise ExecutionError(
            ExceptionNode.from_exception(exc, op, tuple(parents), tuple(names))
        ) from exc
    if not TRACING.get():
        return Node(value)
    return message_node(value, op, tuple(parents), tuple(names))


_OPS: dict[str, Op] = {
    "eq": Op("eq", "Returns x == y (value equality)."),
    "ne": Op("ne", "Returns x != y (value inequality)."),
    "contains": Op("contains", "Returns y in x."),
    "len": Op("len", "Returns len(x)."),
    "getattr": Op("getattr", "Returns the attribute `name` of x."),
    "getitem": Op("getitem", "Returns x[index]."),
    "iter": Op("iter", "Returns the item number `index` when iterating over x."),
    "format": Op("format", "Returns template.format(*args, **kwargs)."),
    "call": Op("call", "Returns fn(*args, **kwargs)."),
    "neg": Op("neg", "Returns -x."),
    "pos": Op("pos", "Returns +x."),
    "abs": Op("abs", "Returns abs(x)."),
    "invert": Op("invert", "Returns ~x."),
    "round": Op("round", "Returns round(x, ndigits)."),
}


def _install_binary(name: str, fn: Callable, symbol: str, reflect: bool) -> None:
    op = Op(name, f"Returns x {symbol} y.")
    _OPS[name] = op

    def method(self: Node, other: Any) -> Node:
        b = other if isinstance(other, Node) else Node(other)
        return _apply(op, fn, ("x", "y"), (self, b), (self._value, b._value))

    method.__name__ = f"__{name}__"
    method.__doc__ = f"Recorded ``x {symbol} y``."
    setattr(Node, f"__{name}__", method)
    if reflect:

        def rmethod(self: Node, other: Any) -> Node:
            a = other if isinstance(other, Node) else Node(other)
            return _apply(op, fn, ("x", "y"), (a, self), (a._value, self._value))

        rmethod.__name__ = f"__r{name}__"
        rmethod.__doc__ = f"Recorded ``y {symbol} x`` with a plain left operand."
        setattr(Node, f"__r{name}__", rmethod)


for _name, _fn, _sym in (
    ("add", operator.add, "+"),
    ("sub", operator.sub, "-"),
    ("mul", operator.mul, "*"),
    ("truediv", operator.truediv, "/"),
    ("floordiv", operator.floordiv, "//"),
    ("mod", operator.mod, "%"),
    ("pow", operator.pow, "**"),
    ("matmul", operator.matmul, "@"),
    ("and", operator.and_, "&"),
    ("or", operator.or_, "|"),
    ("xor", operator.xor, "^"),
    ("lshift", operator.lshift, "<<"),
    ("rshift", operator.rshift, ">>"),
):
    _install_binary(_name, _fn, _sym, reflect=True)
for _name, _fn, _sym in (
    ("lt", operator.lt, "<"),
    ("le", operator.le, "<="),
    ("gt", operator.gt, ">"),
    ("ge", operator.ge, ">="),
):
    _install_binary(_name, _fn, _sym, reflect=False)
del _name, _fn, _sym


def node(
    value: Any,
    name: str | None = None,
    trainable: bool = False,
    description: str | None = None,
    constraint: str | None = None,
) -> Node:
    """Wrap ``value`` in a node; with ``trainable=True`` it is a :class:`ParameterNode`.

    A node passed in is returned unchanged (asking to make a plain node trainable is an
    error: wrap its value instead).
    """
    if isinstance(value, Node):
        if trainable and not isinstance(value, ParameterNode):
            raise TraceError(
                f"node {value.name!r} is already a non-trainable node; "
                "use node(x.value, trainable=True) to make a parameter from its value"
            )
        return value
    if trainable:
        return ParameterNode(value, name=name, description=description, constraint=constraint)
    if constraint is not None:
        raise TraceError("constraint= is only meaningful with trainable=True")
    return Node(value, name=name, description=description)


def is_node(x: Any) -> bool:
    """Return True when ``x`` is a trace node."""
    return isinstance(x, Node)


def value_of(x: Any) -> Any:
    """The value of a node, or ``x`` itself when it is not a node."""
    return x._value if isinstance(x, Node) else x
