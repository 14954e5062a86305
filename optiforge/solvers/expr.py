"""A safe expression language for the model IR: parsed with :mod:`ast`, never evaluated.

Allowed: numbers; names of variables, parameters and bound indices; subscripts ``x[i]``,
``cost[i, j]``, ``x['chair']``, ``x[t - 1]``; ``+ - * / **`` and unary minus;
``sum(<expr> for i in SET [for j in SET2] [if <condition>])``, ``sum(x)`` (all components of an
indexed variable or parameter); ``range(a, b)`` as a loop source; the functions ``exp``,
``log``, ``log10``, ``sqrt``, ``abs``, ``min``, ``max``, ``sin``, ``cos``. A constraint is one
comparison ``<=``, ``>=``, ``==`` (chains like ``0 <= x <= 5`` allowed). Strict ``<`` and ``>``
are read as ``<=`` and ``>=`` with a warning (a solver cannot enforce strictness). A single
``=`` is read as ``==``, and unicode ``≤ ≥ − × ·`` as ``<= >= - * *``.

Anything else (attributes, calls to other names, lambdas, strings outside subscripts,
``^``, ...) is rejected with a message that says what to write instead.

The evaluator is generic: variables map to any objects that support Python arithmetic (our
:class:`Poly` for analysis and HiGHS, pyscipopt expressions for SCIP), and a small backend
supplies ``sum`` and the math functions.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

FUNCTIONS = frozenset({"exp", "log", "log10", "sqrt", "abs", "min", "max", "sin", "cos"})
MAX_EXPRESSION_CHARS = 20_000
MAX_EXPANSION = 2_000_000  # index bindings visited per expression: stops runaway sums


class ExprError(ValueError):
    """An expression is invalid; the message says what to write instead."""


class BrokenReference(ExprError):
    """The expression uses a name whose own declaration is invalid (reported there)."""


_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_CMP_CONSTRAINT = {ast.LtE: "<=", ast.GtE: ">=", ast.Eq: "==", ast.Lt: "<", ast.Gt: ">"}
_CMP_FILTER = {**_CMP_CONSTRAINT, ast.NotEq: "!="}
_BINOP_HINTS = {
    ast.BitXor: "'^' is not a power; write x**2",
    ast.Mod: "'%' is not supported",
    ast.FloorDiv: "'//' is not supported; use '/'",
    ast.MatMult: "'@' is not supported",
}


def _node_text(node: ast.AST) -> str:
    try:
        return ast.unparse(node)
    except Exception:  # pragma: no cover - unparse handles every node we accept
        return type(node).__name__


_UNICODE = {
    "≤": "<=",
    "≦": "<=",
    "≥": ">=",
    "≧": ">=",
    "−": "-",
    "–": "-",
    "×": "*",
    "·": "*",
    "⋅": "*",
    "∗": "*",
}
_SINGLE_EQ = re.compile(r"(?<![<>=!])=(?!=)")
_IMPLICIT_MULT = re.compile(r"\b(\d+(?:\.\d+)?)(?![eE][-+]?\d)([A-Za-z_]\w*)")


def normalize(text: str) -> str:
    """One line; unicode operators to ASCII (≤ -> <=, − -> -, × -> *); a single '=' to '=='."""
    src = " ".join(text.strip().splitlines())
    for u, a in _UNICODE.items():
        src = src.replace(u, a)
    return _SINGLE_EQ.sub("==", src)


def parse(text: str) -> ast.expr:
    """Parse and whitelist-check one expression; raise :class:`ExprError` if not allowed."""
    if not isinstance(text, str) or not text.strip():
        raise ExprError("expression is empty")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExprError(f"expression is longer than {MAX_EXPRESSION_CHARS} characters")
    src = normalize(text)
    try:
        tree = ast.parse(src, mode="eval")
    except SyntaxError as e:
        col = f" at column {e.offset}" if e.offset else ""
        hint = ""
        m = _IMPLICIT_MULT.search(src)
        if m:
            hint = f"; write {m.group(1)}*{m.group(2)}, not {m.group(0)}"
        raise ExprError(f"syntax error{col}: {e.msg} in {src!r}{hint}") from None
    _check(tree.body)
    return tree.body


def _check(node: ast.AST) -> None:
    """Reject every node type outside the grammar."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float, str)):
            raise ExprError(f"constant {node.value!r} is not allowed; use numbers")
        return
    if isinstance(node, ast.Name):
        return
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            hint = _BINOP_HINTS.get(type(node.op), "operator is not supported")
            raise ExprError(f"{hint} (in {_node_text(node)!r})")
        _check(node.left)
        _check(node.right)
        return
    if isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
            raise ExprError(f"unary operator in {_node_text(node)!r} is not supported")
        _check(node.operand)
        return
    if isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op) not in _CMP_FILTER:
                raise ExprError(f"comparison {_node_text(node)!r} is not supported")
        _check(node.left)
        for c in node.comparators:
            _check(c)
        return
    if isinstance(node, ast.BoolOp):
        for v in node.values:
            _check(v)
        return
    if isinstance(node, ast.Subscript):
        if not isinstance(node.value, ast.Name):
            raise ExprError(f"only names can be indexed, e.g. x[i] (in {_node_text(node)!r})")
        idx = node.slice
        parts = idx.elts if isinstance(idx, ast.Tuple) else [idx]
        for p in parts:
            if isinstance(p, ast.Slice):
                raise ExprError(f"slices are not supported (in {_node_text(node)!r})")
            _check(p)
        return
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise ExprError(
                f"call {_node_text(node)!r} is not allowed; only sum(), range() and "
                f"{', '.join(sorted(FUNCTIONS))} can be called"
            )
        fname = node.func.id
        if fname not in FUNCTIONS and fname not in ("sum", "range"):
            raise ExprError(
                f"function {fname!r} is not allowed; only sum(), range() and "
                f"{', '.join(sorted(FUNCTIONS))} can be called"
            )
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise ExprError(f"{fname}() takes plain positional arguments only")
        for a in node.args:
            _check(a)
        return
    if isinstance(node, ast.GeneratorExp):
        _check_generators(node.generators)
        _check(node.elt)
        return
    if isinstance(node, ast.ListComp):  # sum([... for ...]) is common; treat like a generator
        _check_generators(node.generators)
        _check(node.elt)
        return
    if isinstance(node, ast.Attribute):
        raise ExprError(
            f"attribute access {_node_text(node)!r} is not allowed; use plain names like x[i]"
        )
    raise ExprError(f"{type(node).__name__} {_node_text(node)!r} is not allowed in expressions")


def _check_generators(gens: list[ast.comprehension]) -> None:
    for g in gens:
        if g.is_async:
            raise ExprError("async comprehensions are not allowed")
        targets = g.target.elts if isinstance(g.target, ast.Tuple) else [g.target]
        if isinstance(g.target, ast.Tuple) or not all(isinstance(t, ast.Name) for t in targets):
            raise ExprError(
                f"loop variable {_node_text(g.target)!r} must be one name: "
                "write 'for i in A for j in B'"
            )
        _check(g.iter)
        for cond in g.ifs:
            _check(cond)


def parse_for_all(text: str) -> list[ast.comprehension]:
    """Parse a constraint's ``for_all``: ``i in A``, ``i in A, j in B``, ``i in A if i != 'x'``."""
    s = " ".join(text.strip().splitlines())
    s = re.sub(r"^for\s+", "", s)
    s = re.sub(r"(?:,|\s+and)\s*(?:for\s+)?([A-Za-z_]\w*)\s+in\s+", r" for \1 in ", s)
    try:
        tree = ast.parse(f"[0 for {s}]", mode="eval")
    except SyntaxError:
        raise ExprError(
            f"for_all {text!r} is not understood; write e.g. 'i in ITEMS' or "
            "'i in PLANTS, j in MARKETS'"
        ) from None
    comp = tree.body
    if not isinstance(comp, ast.ListComp):  # pragma: no cover - the wrapper guarantees it
        raise ExprError(f"for_all {text!r} is not understood")
    _check_generators(comp.generators)
    return comp.generators


# ---------------------------------------------------------------------------------------------
# Symbols and evaluation


@dataclass
class Indexed:
    """An indexed parameter or variable: index set names and a component per key tuple."""

    name: str
    kind: str  # "parameter" | "variable"
    index_sets: list[str]
    items: dict[tuple[str, ...], Any]


@dataclass
class Symbols:
    """Everything an expression can refer to."""

    sets: dict[str, list[str]] = field(default_factory=dict)
    scalars: dict[str, Any] = field(default_factory=dict)  # scalar params (float) and vars
    scalar_kind: dict[str, str] = field(default_factory=dict)  # name -> parameter|variable
    indexed: dict[str, Indexed] = field(default_factory=dict)
    variable_names: list[str] = field(default_factory=list)
    #: Declared names whose declaration was invalid (reported on their own).
    broken: set[str] = field(default_factory=set)


class Backend:
    """Arithmetic hooks: how to sum many terms and apply math functions to non-constants."""

    name = "generic"

    def sum(self, terms: Iterator[Any]) -> Any:
        total: Any = 0.0
        for t in terms:
            total = total + t
        return total

    def func(self, name: str, args: list[Any]) -> Any:  # pragma: no cover - overridden
        raise ExprError(f"{name}() of a variable expression is not supported here")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _const_func(name: str, args: list[float]) -> float:
    try:
        if name in ("min", "max"):
            return float(min(args) if name == "min" else max(args))
        (a,) = args
        if name == "abs":
            return abs(a)
        if name == "log10":
            return math.log10(a)
        return float(getattr(math, name)(a))
    except ValueError as e:
        raise ExprError(f"{name}({', '.join(map(repr, args))}): {e}") from None
    except OverflowError:
        raise ExprError(f"{name}({', '.join(map(repr, args))}) overflows") from None


def _int_like(s: str) -> int | None:
    try:
        f = float(s)
    except (TypeError, ValueError):
        return None
    return int(f) if f.is_integer() else None


class Evaluator:
    """Evaluates checked ASTs against :class:`Symbols` using a :class:`Backend`."""

    def __init__(self, symbols: Symbols, backend: Backend):
        self.sym = symbols
        self.backend = backend
        self._budget = MAX_EXPANSION

    # -- entry points --------------------------------------------------------------------
    def value(self, node: ast.AST, env: dict[str, str]) -> Any:
        """The value of an arithmetic expression (float, or a backend expression)."""
        self._budget = MAX_EXPANSION
        return self._val(node, env)

    def bindings(self, gens: list[ast.comprehension], env: dict[str, str]) -> Iterator[dict]:
        """Every index binding produced by ``for ... in ... if ...`` clauses."""
        yield from self._iter(gens, 0, env)

    # -- internals -----------------------------------------------------------------------
    def _iter(self, gens: list[ast.comprehension], k: int, env: dict[str, str]) -> Iterator[dict]:
        if k == len(gens):
            yield env
            return
        g = gens[k]
        name = g.target.id  # type: ignore[attr-defined]
        if name in self.sym.scalars or name in self.sym.indexed or name in self.sym.sets:
            raise ExprError(f"loop variable {name!r} hides a declared name; use e.g. 'i'")
        for elem in self._source(g.iter, env):
            self._budget -= 1
            if self._budget < 0:
                raise ExprError(f"expression expands to more than {MAX_EXPANSION} terms")
            inner = {**env, name: elem}
            if all(self._cond(c, inner) for c in g.ifs):
                yield from self._iter(gens, k + 1, inner)

    def _source(self, node: ast.AST, env: dict[str, str]) -> list[str]:
        if isinstance(node, ast.Name):
            if node.id in self.sym.sets:
                return self.sym.sets[node.id]
            raise ExprError(
                f"'{node.id}' after 'in' is not a set; declared sets: "
                f"{', '.join(self.sym.sets) or '(none)'}"
            )
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "range"
        ):
            args = [self._val(a, env) for a in node.args]
            if not args or len(args) > 3 or not all(_is_num(a) and a == int(a) for a in args):
                raise ExprError("range() takes 1 to 3 whole numbers, e.g. range(1, 13)")
            return [str(v) for v in range(*[int(a) for a in args])]
        raise ExprError(f"cannot loop over {_node_text(node)!r}; loop over a set name")

    def _cond(self, node: ast.AST, env: dict[str, str]) -> bool:
        if isinstance(node, ast.BoolOp):
            vals = (self._cond(v, env) for v in node.values)
            return all(vals) if isinstance(node.op, ast.And) else any(vals)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not self._cond(node.operand, env)
        if isinstance(node, ast.Compare):
            left = self._scalar(node.left, env)
            for op, comp in zip(node.ops, node.comparators, strict=False):
                right = self._scalar(comp, env)
                if not _compare(type(op), left, right):
                    return False
                left = right
            return True
        raise ExprError(f"condition {_node_text(node)!r} must be a comparison like i != j")

    def _scalar(self, node: ast.AST, env: dict[str, str]) -> float | str:
        """A constant value for filters: a number or a set element."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name) and node.id in env:
            return env[node.id]
        v = self._val(node, env)
        if not _is_num(v):
            raise ExprError(f"condition uses {_node_text(node)!r}, which depends on variables")
        return v

    def _element(self, node: ast.AST, env: dict[str, str]) -> str:
        """An index value: a bound index, a literal, or integer arithmetic on them."""
        if isinstance(node, ast.Constant):
            if isinstance(node.value, float) and node.value.is_integer():
                return str(int(node.value))
            return str(node.value)
        if isinstance(node, ast.Name):
            if node.id in env:
                return env[node.id]
            if self.sym.scalar_kind.get(node.id) == "parameter":
                v = self.sym.scalars[node.id]
                if float(v).is_integer():
                    return str(int(v))
            raise ExprError(
                f"index {node.id!r} is not bound; add it to for_all (e.g. '{node.id} in SET') "
                f"or loop over it in sum(... for {node.id} in SET), or quote a literal "
                f"element like '{node.id}'"
            )
        if isinstance(node, (ast.BinOp, ast.UnaryOp)):
            v = self._val(node, env, index_mode=True)
            if _is_num(v) and float(v).is_integer():
                return str(int(v))
            raise ExprError(f"index {_node_text(node)!r} must be a whole number")
        raise ExprError(f"index {_node_text(node)!r} is not supported")

    def _lookup(self, node: ast.Subscript, env: dict[str, str]) -> Any:
        name = node.value.id  # type: ignore[attr-defined]
        idx = node.slice
        parts = idx.elts if isinstance(idx, ast.Tuple) else [idx]
        ent = self.sym.indexed.get(name)
        if ent is None:
            if name in self.sym.scalars:
                raise ExprError(f"'{name}' is not indexed; write {name} without [...]")
            if name in self.sym.sets:
                raise ExprError(f"'{name}' is a set; it cannot be indexed")
            raise self._unknown(name)
        if len(parts) != len(ent.index_sets):
            raise ExprError(
                f"{ent.kind} '{name}' is indexed by [{', '.join(ent.index_sets)}]: it needs "
                f"{len(ent.index_sets)} index(es), got {len(parts)} in {_node_text(node)!r}"
            )
        key = tuple(self._element(p, env) for p in parts)
        try:
            return ent.items[key]
        except KeyError:
            for k, s in zip(key, ent.index_sets, strict=False):
                if k not in self.sym.sets.get(s, ()):
                    raise ExprError(
                        f"{_node_text(node)}: {k!r} is not an element of set {s} "
                        f"({', '.join(self.sym.sets.get(s, [])[:8])}{'...' if len(self.sym.sets.get(s, [])) > 8 else ''})"
                    ) from None
            raise ExprError(f"{_node_text(node)} has no value") from None

    def _unknown(self, name: str) -> ExprError:
        if name in self.sym.broken:
            return BrokenReference(f"{name!r} is declared but invalid (see its own error)")
        kinds = ", ".join(self.sym.variable_names[:12]) or "(none)"
        return ExprError(
            f"unknown variable {name!r} (no variable, parameter or index has this name; "
            f"variables are: {kinds})"
        )

    def _val(self, node: ast.AST, env: dict[str, str], index_mode: bool = False) -> Any:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                raise ExprError(f"text {node.value!r} can only be an index, e.g. x[{node.value!r}]")
            return float(node.value)
        if isinstance(node, ast.Name):
            n = node.id
            if n in env:
                iv = _int_like(env[n])
                if iv is None:
                    raise ExprError(
                        f"index {n!r} = {env[n]!r} is not a number; it can only be used "
                        f"inside [...], e.g. x[{n}]"
                    )
                return float(iv)
            if n in self.sym.scalars:
                if index_mode and self.sym.scalar_kind.get(n) == "variable":
                    raise ExprError(f"variable '{n}' cannot be used inside an index")
                return self.sym.scalars[n]
            if n in self.sym.indexed:
                ent = self.sym.indexed[n]
                raise ExprError(
                    f"{ent.kind} '{n}' is indexed by [{', '.join(ent.index_sets)}]; "
                    f"write {n}[{', '.join('ijkl'[k] for k in range(len(ent.index_sets)))}] "
                    f"or sum({n}[i] for i in {ent.index_sets[0]})"
                )
            if n in self.sym.sets:
                raise ExprError(f"set '{n}' can only follow 'in', e.g. for i in {n}")
            if n in FUNCTIONS or n in ("sum", "range"):
                raise ExprError(f"'{n}' is a function; call it, e.g. {n}(...)")
            raise self._unknown(n)
        if isinstance(node, ast.Subscript):
            v = self._lookup(node, env)
            if index_mode and not _is_num(v):
                raise ExprError(f"variable {_node_text(node)!r} cannot be used inside an index")
            return v
        if isinstance(node, ast.UnaryOp):
            v = self._val(node.operand, env, index_mode)
            if isinstance(node.op, ast.USub):
                return -v
            if isinstance(node.op, ast.UAdd):
                return v
            raise ExprError(f"'not' is only allowed in conditions ({_node_text(node)!r})")
        if isinstance(node, ast.BinOp):
            a = self._val(node.left, env, index_mode)
            b = self._val(node.right, env, index_mode)
            return self._binop(node, a, b)
        if isinstance(node, ast.Call):
            return self._call(node, env)
        if isinstance(node, ast.Compare):
            raise ExprError(
                f"comparison {_node_text(node)!r} can only be the whole constraint, "
                "not part of an expression"
            )
        if isinstance(node, (ast.GeneratorExp, ast.ListComp)):
            raise ExprError(f"{_node_text(node)!r}: a loop must be inside sum(...)")
        raise ExprError(f"{_node_text(node)!r} is not allowed here")

    def _binop(self, node: ast.BinOp, a: Any, b: Any) -> Any:
        op = type(node.op)
        try:
            if op is ast.Add:
                return a + b
            if op is ast.Sub:
                return a - b
            if op is ast.Mult:
                return a * b
            if op is ast.Div:
                if _is_num(b) and b == 0:
                    raise ExprError(f"division by zero in {_node_text(node)!r}")
                return a / b
            if _is_num(a) and _is_num(b):
                if a == 0 and b < 0:
                    raise ExprError(f"0 to a negative power in {_node_text(node)!r}")
                r = a**b
                if isinstance(r, complex):
                    raise ExprError(f"{_node_text(node)!r} is not a real number")
                return float(r)
            return a**b
        except OverflowError:
            raise ExprError(f"{_node_text(node)!r} overflows") from None

    def _call(self, node: ast.Call, env: dict[str, str]) -> Any:
        fname = node.func.id  # type: ignore[attr-defined]
        if fname == "range":
            raise ExprError("range() can only follow 'in', e.g. for t in range(1, 13)")
        if fname == "sum" or (fname in ("min", "max") and len(node.args) == 1):
            if len(node.args) != 1:
                raise ExprError("sum() takes one argument: sum(x[i] for i in SET)")
            arg = node.args[0]
            if isinstance(arg, (ast.GeneratorExp, ast.ListComp)):
                terms: Iterator[Any] = (
                    self._val(arg.elt, b) for b in self._iter(arg.generators, 0, env)
                )
            elif isinstance(arg, ast.Name) and arg.id in self.sym.indexed:
                terms = iter(self.sym.indexed[arg.id].items.values())
            else:
                raise ExprError(
                    f"{fname}() needs a loop, e.g. {fname}(x[i] for i in SET), or an indexed name"
                )
            if fname == "sum":
                return self.backend.sum(terms)
            args = list(terms)
            if not args:
                raise ExprError(f"{fname}() over an empty loop")
        else:
            args = [self._val(a, env) for a in node.args]
        if fname in ("min", "max"):
            if not args:
                raise ExprError(f"{fname}() needs at least one argument")
        elif len(args) != 1:
            raise ExprError(f"{fname}() takes exactly one argument")
        if all(_is_num(a) for a in args):
            return _const_func(fname, args)
        return self.backend.func(fname, args)


def _compare(op: type, a: float | str, b: float | str) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        ai = _int_like(a) if isinstance(a, str) else a
        bi = _int_like(b) if isinstance(b, str) else b
        if ai is not None and bi is not None:
            a, b = ai, bi
        elif op in (ast.Eq, ast.NotEq):
            a, b = str(a), str(b)
        else:
            raise ExprError(f"cannot order {a!r} and {b!r}; only == and != compare text")
    table: dict[type, Callable[[Any, Any], bool]] = {
        ast.LtE: lambda x, y: x <= y,
        ast.GtE: lambda x, y: x >= y,
        ast.Lt: lambda x, y: x < y,
        ast.Gt: lambda x, y: x > y,
        ast.Eq: lambda x, y: x == y,
        ast.NotEq: lambda x, y: x != y,
    }
    return table[op](a, b)


def comparison_parts(node: ast.AST) -> list[tuple[ast.AST, str, ast.AST]]:
    """Split a constraint ``a <= b <= c`` into ``[(a, '<=', b), (b, '<=', c)]``."""
    if not isinstance(node, ast.Compare):
        raise ExprError(
            "a constraint must compare two sides with <=, >= or ==, e.g. '3*x + 2*y <= 100'"
        )
    parts = []
    left = node.left
    for op, right in zip(node.ops, node.comparators, strict=False):
        sym = _CMP_CONSTRAINT.get(type(op))
        if sym is None:
            raise ExprError(
                f"'{_CMP_FILTER.get(type(op), '?')}' cannot be a constraint; use <=, >= or =="
            )
        parts.append((left, sym, right))
        left = right
    return parts
