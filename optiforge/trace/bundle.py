"""``@bundle``: record calls of a Python function as graph nodes.

A bundled function is called with plain values (nodes are unwrapped), runs with recording
off, and returns a :class:`~optiforge.trace.nodes.MessageNode` whose parents are the nodes
it was given. With ``trainable=True`` the function's source text is a
:class:`CodeParameter`; assigning new source to it makes the next call compile and use it.

Security note: compiling new source runs it in this Python process, exactly like the
original function. That is the point (the user's own workflow code is being optimized, as in
Microsoft Trace), so only optimize code you would run yourself. Generated *solver model*
code is different and goes through ``optiforge.solvers``' sandbox, never through here.
"""

from __future__ import annotations

import ast
import functools
import inspect
import itertools
import linecache
import textwrap
import weakref
from collections.abc import Callable
from typing import Any

from optiforge.trace.context import TRACING
from optiforge.trace.errors import BundleError, CodeError, ExecutionError, ValueTypeError
from optiforge.trace.nodes import ExceptionNode, Node, Op, ParameterNode, message_node
from optiforge.trace.source import function_source

__all__ = ["BoundBundle", "Bundle", "CodeParameter", "bundle", "function_source"]

_STATE_ATTR = "_optiforge_code_"
_compile_ids = itertools.count()  # only makes linecache file names unique


def _signature_key(fn: Callable) -> tuple[tuple[str, int], ...] | None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    return tuple((p.name, int(p.kind)) for p in sig.parameters.values())


def _format_signature(key: tuple[tuple[str, int], ...] | None) -> str:
    if key is None:
        return "(?)"
    parts = []
    for name, kind in key:
        k = inspect._ParameterKind(kind)
        if k is inspect.Parameter.VAR_POSITIONAL:
            parts.append("*" + name)
        elif k is inspect.Parameter.VAR_KEYWORD:
            parts.append("**" + name)
        else:
            parts.append(name)
    return "(" + ", ".join(parts) + ")"


class CodeParameter(ParameterNode):
    """The source code of a trainable bundle: a text parameter whose value is a ``def``.

    :meth:`validate` compiles the text and checks the signature, raising
    :class:`~optiforge.trace.errors.CodeError` if it is unusable, so an optimizer can reject
    a bad proposal before setting it. Setting an invalid value is allowed: the next call then
    raises :class:`~optiforge.trace.errors.ExecutionError` with an ExceptionNode.
    """

    __slots__ = ("_bundle",)

    kind = "code"

    def validate(self, raw: Any) -> Any:
        """Return ``raw`` if it compiles to a function with the same signature."""
        if isinstance(raw, Node):
            raw = raw._value
        if not isinstance(raw, str):
            raise ValueTypeError(
                f"the code parameter {self.name!r} needs source text (a def), "
                f"got {type(raw).__name__}"
            )
        self._bundle.compile_source(raw)
        return raw

    @property
    def bundle(self) -> Bundle:
        """The bundled function this code belongs to."""
        return self._bundle


class _CodeState:
    """The code parameter of one bundled function (or of one instance for a method) and the
    function compiled from its current value."""

    __slots__ = ("_compiled_source", "_error", "_fn", "code")

    def __init__(self, owner: Bundle) -> None:
        self.code = CodeParameter(
            owner.source,
            name=f"__code_{owner.op.name}",
            description=(
                f"The source code of the function {owner.op.name}. A new value must be a "
                "complete def statement with the same name and parameters."
            ),
            constraint=owner.constraint,
        )
        self.code._bundle = owner
        self._compiled_source: Any = self.code._value
        self._fn: Callable = owner.fn
        self._error: CodeError | None = None

    def function(self) -> Callable:
        src = self.code._value
        if src is not self._compiled_source and src != self._compiled_source:
            owner = self.code._bundle
            # Publish the source last: a concurrent caller either compiles too (harmless) or
            # sees the finished function, never a half-updated state.
            try:
                fn, error = owner.compile_source(src), None
            except CodeError as exc:
                fn, error = self._fn, exc
            self._fn, self._error = fn, error
            self._compiled_source = src
        if self._error is not None:
            raise self._error
        return self._fn


class Bundle:
    """A bundled function. Call it like the function; it returns a node.

    Attributes: ``op`` (name and documentation shown to optimizers), ``fn`` (the original
    function), ``trainable``, ``source``. For a trainable function, ``code`` is its
    :class:`CodeParameter` (for methods, each instance has its own: ``obj.method.code``).
    """

    def __init__(
        self,
        fn: Callable,
        *,
        trainable: bool = False,
        name: str | None = None,
        doc: str | None = None,
        constraint: str | None = None,
    ) -> None:
        if isinstance(fn, (Bundle, BoundBundle)):
            raise BundleError(f"{fn.op.name} is already bundled; apply @bundle once")
        if isinstance(fn, (staticmethod, classmethod)):
            raise BundleError("put @bundle below @staticmethod / @classmethod, not above")
        if not callable(fn):
            raise BundleError(f"@bundle needs a function, got {type(fn).__name__}")
        self.fn = fn
        self.trainable = bool(trainable)
        self.constraint = constraint
        fname = getattr(fn, "__name__", None) or type(fn).__name__
        self.op = Op(
            name or ("lambda" if fname == "<lambda>" else fname),
            doc if doc is not None else (inspect.getdoc(fn) or ""),
            kind="bundle",
            fn=fn,
            trainable=self.trainable,
        )
        self.is_async = inspect.iscoroutinefunction(fn)
        functools.update_wrapper(self, fn)
        if self.is_async:
            # Let inspect.iscoroutinefunction(bundle) answer True, as it does for the function
            # (callers such as trainers decide from it whether to await).
            inner = inspect.unwrap(fn)
            self.__code__ = inner.__code__
            self.__defaults__ = getattr(inner, "__defaults__", None)
            self.__kwdefaults__ = getattr(inner, "__kwdefaults__", None)
        self._signature = _signature_key(fn)
        pos, varargs = [], None
        for pname, kind in self._signature or ():
            if kind in (0, 1):  # positional-only, positional-or-keyword
                pos.append(pname)
            elif kind == 2:  # *args
                varargs = pname
        self._posnames = tuple(pos)
        self._varargs = varargs or "args"
        self._state: _CodeState | None = None
        if self.trainable:
            self.op._source = function_source(fn)
            self._state = _CodeState(self)

    @property
    def source(self) -> str | None:
        """The original source text (from the def line), or None when unavailable."""
        return self.op.source

    # ----- code ---------------------------------------------------------------------------
    @property
    def code(self) -> CodeParameter | None:
        """The code parameter of a trainable function (None when not trainable)."""
        return self._state.code if self._state is not None else None

    def parameters(self) -> list[ParameterNode]:
        """The trainable parameters of this function: its code, if trainable."""
        return [self._state.code] if self._state is not None else []

    def compile_source(self, source: Any) -> Callable:
        """Compile ``source`` into a function with this bundle's name and signature.

        Raises :class:`~optiforge.trace.errors.CodeError` (syntax errors, no def, a changed
        signature or sync/async kind, an exception while defining it).
        """
        name = self.op.name
        if not isinstance(source, str):
            raise CodeError(
                f"the code of {name} must be text holding a def statement, "
                f"got {type(source).__name__}"
            )
        text = textwrap.dedent(source)
        filename = f"<optiforge code of {name} #{next(_compile_ids)}>"
        try:
            tree = ast.parse(text, filename=filename)
        except SyntaxError as exc:
            raise CodeError(
                f"the new code of {name} has a syntax error at line {exc.lineno}: {exc.msg}"
            ) from exc
        defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        target = next((d for d in defs if d.name == self.fn.__name__), None)
        if target is None:
            if len(defs) == 1:
                target = defs[0]
            elif not defs:
                raise CodeError(
                    f"the new code of {name} defines no function; it must be a complete "
                    f"`def {self.fn.__name__}(...):` statement"
                )
            else:
                raise CodeError(
                    f"the new code of {name} defines {', '.join(d.name for d in defs)} but "
                    f"not {self.fn.__name__}"
                )
        if isinstance(target, ast.AsyncFunctionDef) != self.is_async:
            want = "an async def" if self.is_async else "a plain def (not async def)"
            raise CodeError(f"the new code of {name} must stay {want}")
        target.decorator_list = []  # a proposal may repeat @bundle(...): never re-bundle
        original = inspect.unwrap(self.fn)
        fn_globals = getattr(original, "__globals__", None)
        if fn_globals is None:
            fn_globals = {"__builtins__": __builtins__}
        freevars = tuple(getattr(getattr(original, "__code__", None), "co_freevars", ()))
        cells = getattr(original, "__closure__", None) or ()
        # Wrap the proposal in a factory function whose parameters are the original's free
        # variables (including __class__, so zero-argument super() keeps working). Imports
        # and helpers of the proposal become locals of the factory: nothing leaks into the
        # user's module, and the new function still reads the live module globals.
        factory_name = "__optiforge_factory__"
        factory = ast.FunctionDef(
            name=factory_name,
            args=ast.arguments(
                posonlyargs=[],
                args=[ast.arg(arg=v) for v in freevars],
                vararg=None,
                kwonlyargs=[],
                kw_defaults=[],
                kwarg=None,
                defaults=[],
            ),
            body=[*tree.body, ast.Return(value=ast.Name(id=target.name, ctx=ast.Load()))],
            decorator_list=[],
            returns=None,
            type_comment=None,
        )
        module = ast.Module(body=[factory], type_ignores=[])
        ast.copy_location(factory, tree.body[0])
        ast.fix_missing_locations(module)
        try:
            code = compile(module, filename, "exec")
        except (SyntaxError, ValueError) as exc:
            raise CodeError(f"the new code of {name} does not compile: {exc}") from exc
        linecache.cache[filename] = (len(text), None, text.splitlines(keepends=True), filename)
        scratch: dict[str, Any] = {}
        try:
            exec(code, fn_globals, scratch)
            values = []
            for var, cell in zip(freevars, cells, strict=False):
                try:
                    values.append(cell.cell_contents)
                except ValueError:  # an empty cell: the name is not bound yet
                    raise CodeError(
                        f"the new code of {name} cannot be built: the variable {var!r} it "
                        "closes over has no value yet"
                    ) from None
            new_fn = scratch[factory_name](*values)
        except CodeError:
            linecache.cache.pop(filename, None)
            raise
        except Exception as exc:
            linecache.cache.pop(filename, None)
            raise CodeError(
                f"defining the new code of {name} raised {type(exc).__name__}: {exc}"
            ) from exc
        new_fn.__qualname__ = getattr(original, "__qualname__", new_fn.__name__)
        # Keep the source visible to tracebacks while the function lives, then drop it, so
        # the linecache does not grow with every proposal an optimizer makes.
        weakref.finalize(new_fn, linecache.cache.pop, filename, None)
        new_key = _signature_key(new_fn)
        if self._signature is not None and new_key != self._signature:
            raise CodeError(
                f"the new code of {name} changes its signature from "
                f"{_format_signature(self._signature)} to {_format_signature(new_key)}; "
                "keep the parameters as they are"
            )
        return new_fn

    # ----- calling --------------------------------------------------------------------------
    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return BoundBundle(self, instance)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.is_async:
            return self._ainvoke(_UNBOUND, args, kwargs)
        return self._invoke(_UNBOUND, args, kwargs)

    def state_for(self, instance: Any) -> _CodeState | None:
        """The code state used when called on ``instance`` (per instance for methods)."""
        if self._state is None:
            return None
        if instance is _UNBOUND:
            return self._state
        d = getattr(instance, "__dict__", None)
        if d is None:  # __slots__ classes cannot hold per-instance code: share the function's
            return self._state
        states = d.get(_STATE_ATTR)
        if states is None:
            states = d.setdefault(_STATE_ATTR, {})  # setdefault: atomic if threads race
        st = states.get(self)
        if st is None:
            st = states.setdefault(self, _CodeState(self))
        return st

    def _collect(self, instance: Any, args: tuple, kwargs: dict):
        posnames = self._posnames[1:] if instance is not _UNBOUND else self._posnames
        npos = len(posnames)
        parents: list[Node] = []
        names: list[str] = []
        values: list[Any] = []
        for i, a in enumerate(args):
            argname = posnames[i] if i < npos else f"{self._varargs}[{i - npos}]"
            values.append(self._take(a, argname, parents, names))
        kw: dict[str, Any] = {}
        for k, a in kwargs.items():
            kw[k] = self._take(a, k, parents, names)
        return parents, names, values, kw

    @staticmethod
    def _take(a: Any, argname: str, parents: list, names: list) -> Any:
        if isinstance(a, Node):
            parents.append(a)
            names.append(argname)
            return a._value
        if type(a) in (list, tuple) and any(isinstance(x, Node) for x in a):
            out = []
            for j, x in enumerate(a):
                if isinstance(x, Node):
                    parents.append(x)
                    names.append(f"{argname}[{j}]")
                    out.append(x._value)
                else:
                    out.append(x)
            return type(a)(out)
        if type(a) is dict and any(isinstance(x, Node) for x in a.values()):
            out_d = {}
            for k, x in a.items():
                if isinstance(x, Node):
                    parents.append(x)
                    names.append(f"{argname}[{k!r}]")
                    out_d[k] = x._value
                else:
                    out_d[k] = x
            return out_d
        parents.append(Node(a))
        names.append(argname)
        return a

    def _prepare(self, instance: Any, args: tuple, kwargs: dict):
        parents, names, values, kw = self._collect(instance, args, kwargs)
        fn = self.fn
        if self._state is not None:
            state = self.state_for(instance)
            parents.append(state.code)
            names.append("__code")
            try:
                fn = state.function()
            except CodeError as exc:
                raise ExecutionError(
                    ExceptionNode.from_exception(
                        exc, self.op, tuple(parents), tuple(names), message=str(exc)
                    )
                ) from exc
        if instance is not _UNBOUND:
            values.insert(0, instance)
        return fn, tuple(parents), tuple(names), values, kw

    def _finish(self, result: Any, parents: tuple, names: tuple) -> Node:
        if isinstance(result, Node):
            result = result._value
        if not TRACING.get():
            return Node(result)
        return message_node(result, self.op, parents, names)

    def _fail(self, exc: Exception, parents: tuple, names: tuple) -> ExecutionError:
        return ExecutionError(ExceptionNode.from_exception(exc, self.op, parents, names))

    def _invoke(self, instance: Any, args: tuple, kwargs: dict) -> Node:
        fn, parents, names, values, kw = self._prepare(instance, args, kwargs)
        token = TRACING.set(False)  # the body works on plain values; do not record inside
        try:
            result = fn(*values, **kw)
        except Exception as exc:
            TRACING.reset(token)
            raise self._fail(exc, parents, names) from exc
        TRACING.reset(token)
        return self._finish(result, parents, names)

    async def _ainvoke(self, instance: Any, args: tuple, kwargs: dict) -> Node:
        fn, parents, names, values, kw = self._prepare(instance, args, kwargs)
        token = TRACING.set(False)
        try:
            result = await fn(*values, **kw)
        except Exception as exc:
            TRACING.reset(token)
            raise self._fail(exc, parents, names) from exc
        TRACING.reset(token)
        return self._finish(result, parents, names)

    def __copy__(self) -> Bundle:
        return self

    def __deepcopy__(self, memo: dict) -> Bundle:
        # A bundle is part of a function or class definition, like the function itself:
        # copying a Module must keep pointing at it (its per-instance code is copied).
        return self

    def __repr__(self) -> str:
        kind = "trainable " if self.trainable else ""
        return f"<{kind}bundle {self.op.name}>"


class _Unbound:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<unbound>"


_UNBOUND = _Unbound()


class BoundBundle:
    """A bundled method bound to an instance (what ``obj.method`` returns)."""

    __slots__ = ("__self__", "bundle")

    def __init__(self, bundle: Bundle, instance: Any) -> None:
        self.bundle = bundle
        self.__self__ = instance

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        b = self.bundle
        if b.is_async:
            return b._ainvoke(self.__self__, args, kwargs)
        return b._invoke(self.__self__, args, kwargs)

    @property
    def code(self) -> CodeParameter | None:
        """This instance's code parameter (None when the method is not trainable)."""
        st = self.bundle.state_for(self.__self__)
        return st.code if st is not None else None

    def parameters(self) -> list[ParameterNode]:
        """This instance's trainable parameters of the method: its code, if trainable."""
        c = self.code
        return [c] if c is not None else []

    @property
    def op(self) -> Op:
        """Name and documentation of the bundled method."""
        return self.bundle.op

    _FORWARDED = frozenset(
        {"__name__", "__qualname__", "__wrapped__", "__code__", "__defaults__", "__kwdefaults__"}
    )

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name not in BoundBundle._FORWARDED:
            raise AttributeError(name)
        return getattr(self.bundle, name)

    @property
    def __signature__(self) -> inspect.Signature | None:
        """The signature without ``self``, as for a bound method."""
        try:
            sig = inspect.signature(self.bundle.fn)
        except (TypeError, ValueError):
            return None
        return sig.replace(parameters=list(sig.parameters.values())[1:])

    def __repr__(self) -> str:
        return f"<bound {self.bundle!r} of {type(self.__self__).__name__}>"


def bundle(
    fn: Callable | None = None,
    *,
    trainable: bool = False,
    name: str | None = None,
    doc: str | None = None,
    constraint: str | None = None,
) -> Any:
    """Record calls of ``fn`` in the trace graph. Use as ``@bundle`` or ``@bundle(...)``.

    Args:
        trainable: make the function's source a :class:`CodeParameter` that optimizers can
            rewrite; new source is compiled and used on the next call.
        name: the op name shown to optimizers (default: the function's name).
        doc: documentation shown in #Documentation (default: the docstring).
        constraint: text shown in #Constraints for the code parameter.

    Works on functions and methods, sync and async. The function receives plain values
    (nodes unwrapped, also inside list/tuple/dict arguments) and its result is wrapped in a
    MessageNode. An exception inside it raises :class:`~optiforge.trace.errors.ExecutionError`
    whose ``exception_node`` carries the traceback and can receive feedback.
    """

    def wrap(f: Callable) -> Bundle:
        return Bundle(f, trainable=trainable, name=name, doc=doc, constraint=constraint)

    if fn is None:
        return wrap
    return wrap(fn)
