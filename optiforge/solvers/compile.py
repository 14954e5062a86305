"""Check a :class:`ModelIR`, expand it into rows, and classify it (LP, MILP, QP, ..., MINLP).

Expansion uses :class:`Poly`, an exact polynomial over the flattened variables, so the same
pass validates every name, gives the model class, and yields the coefficients HiGHS needs.
Anything that is not a polynomial (``exp``, division by a variable, ...) becomes :class:`NL`,
which only remembers the variables it touches.
"""

from __future__ import annotations

import ast
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from optiforge.solvers.errors import IRValidationError
from optiforge.solvers.expr import (
    Backend,
    BrokenReference,
    Evaluator,
    ExprError,
    Indexed,
    Symbols,
    comparison_parts,
    parse,
    parse_for_all,
)
from optiforge.solvers.schema import ModelIRBase

MAX_POLY_TERMS = 200_000


class NL:
    """A non-polynomial expression; only its variables are kept (for classification)."""

    __slots__ = ("vars",)

    def __init__(self, vars_: frozenset[int]):
        self.vars = vars_

    def _join(self, other: Any) -> NL:
        return NL(self.vars | _vars_of(other))

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _join
    __truediv__ = __rtruediv__ = __pow__ = __rpow__ = _join

    def __neg__(self) -> NL:
        return self


def _vars_of(v: Any) -> frozenset[int]:
    if isinstance(v, Poly):
        return frozenset(i for k in v.t for i in k)
    if isinstance(v, NL):
        return v.vars
    return frozenset()


class Poly:
    """A polynomial: monomial (sorted tuple of variable indices) -> coefficient."""

    __slots__ = ("t",)

    def __init__(self, terms: dict[tuple[int, ...], float]):
        self.t = terms

    @classmethod
    def var(cls, i: int) -> Poly:
        return cls({(i,): 1.0})

    def degree(self) -> int:
        return max((len(k) for k, c in self.t.items() if c != 0.0), default=0)

    def constant(self) -> float:
        return self.t.get((), 0.0)

    def __add__(self, o: Any) -> Any:
        if isinstance(o, (int, float)):
            t = dict(self.t)
            t[()] = t.get((), 0.0) + o
            return Poly(t)
        if isinstance(o, Poly):
            t = dict(self.t)
            for k, c in o.t.items():
                t[k] = t.get(k, 0.0) + c
            return Poly(t)
        if isinstance(o, NL):
            return o._join(self)
        return NotImplemented

    __radd__ = __add__

    def __neg__(self) -> Poly:
        return Poly({k: -c for k, c in self.t.items()})

    def __sub__(self, o: Any) -> Any:
        return self + (-o)

    def __rsub__(self, o: Any) -> Any:
        return (-self) + o

    def __mul__(self, o: Any) -> Any:
        if isinstance(o, (int, float)):
            if o == 0:
                return 0.0
            return Poly({k: c * o for k, c in self.t.items()})
        if isinstance(o, Poly):
            if len(self.t) * len(o.t) > MAX_POLY_TERMS:
                return NL(_vars_of(self) | _vars_of(o))
            t: dict[tuple[int, ...], float] = {}
            for (k1, c1), (k2, c2) in itertools.product(self.t.items(), o.t.items()):
                k = tuple(sorted(k1 + k2))
                t[k] = t.get(k, 0.0) + c1 * c2
            return Poly(t)
        if isinstance(o, NL):
            return o._join(self)
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, o: Any) -> Any:
        if isinstance(o, (int, float)):
            return self * (1.0 / o)
        return NL(_vars_of(self) | _vars_of(o))

    def __rtruediv__(self, o: Any) -> Any:
        return NL(_vars_of(self))

    def __pow__(self, o: Any) -> Any:
        if isinstance(o, (int, float)) and float(o).is_integer() and 0 <= o <= 8:
            out: Any = 1.0
            for _ in range(int(o)):
                out = out * self
            return out
        return NL(_vars_of(self) | _vars_of(o))

    def __rpow__(self, o: Any) -> Any:
        return NL(_vars_of(self))


class PolyBackend(Backend):
    """Sums in place (fast for long sums); math functions of variables become NL."""

    name = "poly"

    def sum(self, terms: Iterator[Any]) -> Any:
        const = 0.0
        acc: dict[tuple[int, ...], float] = {}
        nl: frozenset[int] | None = None
        for v in terms:
            if isinstance(v, (int, float)):
                const += v
            elif isinstance(v, Poly):
                for k, c in v.t.items():
                    acc[k] = acc.get(k, 0.0) + c
            elif isinstance(v, NL):
                nl = v.vars if nl is None else nl | v.vars
            else:  # pragma: no cover - the evaluator only produces these
                raise ExprError(f"cannot sum {type(v).__name__}")
        if nl is not None:
            return NL(nl | frozenset(i for k in acc for i in k))
        if not acc:
            return const
        if const:
            acc[()] = acc.get((), 0.0) + const
        return Poly(acc)

    def func(self, name: str, args: list[Any]) -> Any:
        vs: frozenset[int] = frozenset()
        for a in args:
            vs = vs | _vars_of(a)
        return NL(vs)


def var_label(name: str, key: tuple[str, ...]) -> str:
    """Display name of one variable component: ``x``, ``x[chair]``, ``flow[a,b]``."""
    return f"{name}[{','.join(key)}]" if key else name


@dataclass
class Row:
    """One expanded constraint ``body <sense> 0`` (``body = lhs - rhs``)."""

    label: str
    item: str
    body: Any  # Poly | NL | float
    sense: str  # "<=", ">=", "=="
    lhs: ast.AST
    rhs: ast.AST
    env: dict[str, str]


@dataclass
class VarInfo:
    label: str
    item: str
    kind: str  # "C" | "I" | "B"
    lb: float | None
    ub: float | None


@dataclass
class CompiledIR:
    """An IR checked and expanded into flat variables and rows."""

    ir: ModelIRBase
    symbols: Symbols
    variables: list[VarInfo]
    sense: str  # "minimize" | "maximize"
    objective: Any  # Poly | NL | float
    objective_node: ast.AST
    rows: list[Row]
    #: Constraints whose sides contain no variables and are violated.
    violated_constants: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


ProblemClass = Literal["LP", "MILP", "QP", "MIQP", "QCP", "MIQCP", "NLP", "MINLP"]


class IRClass(BaseModel):
    """What kind of model an IR is, and which solver ``solver="auto"`` picks for it."""

    problem_class: ProblemClass
    has_integers: bool
    objective_degree: int | None  # None = not polynomial
    constraint_degree: int | None
    #: For quadratic objectives: convex for the sense (PSD when minimizing). None otherwise.
    convex_objective: bool | None = None
    solver: Literal["highs", "scip"]
    num_variables: int
    num_constraints: int


def _symbols(ir: ModelIRBase, errors: list[str]) -> tuple[Symbols, list[VarInfo]]:
    sym = Symbols()
    seen: dict[str, str] = {}

    def claim(kind: str, name: str) -> bool:
        if name in seen:
            errors.append(f"{kind} {name!r}: name already used by a {seen[name]}")
            return False
        seen[name] = kind
        return True

    for s in ir.sets:
        if claim("set", s.name):
            sym.sets[s.name] = list(s.elements)

    def keys_for(kind: str, name: str, index_sets: list[str]) -> list[tuple[str, ...]] | None:
        bad = [s for s in index_sets if s not in sym.sets]
        if bad:
            errors.append(
                f"{kind} {name!r}: unknown index set(s) {', '.join(map(repr, bad))} "
                f"(declared sets: {', '.join(sym.sets) or 'none'})"
            )
            return None
        return list(itertools.product(*(sym.sets[s] for s in index_sets)))

    for p in ir.parameters:
        if not claim("parameter", p.name):
            continue
        keys = keys_for("parameter", p.name, p.index_sets)
        sym.broken.add(p.name)  # until it is fully valid
        if keys is None:
            continue
        bad_vals = [v for v in p.values if not math.isfinite(v)]
        if bad_vals:
            errors.append(f"parameter {p.name!r}: values must be finite numbers")
            continue
        if not p.index_sets:
            if len(p.values) != 1:
                errors.append(
                    f"parameter {p.name!r}: a scalar needs exactly 1 value, got {len(p.values)}"
                )
                continue
            sym.scalars[p.name] = float(p.values[0])
            sym.scalar_kind[p.name] = "parameter"
            sym.broken.discard(p.name)
        else:
            if len(p.values) != len(keys):
                dims = " x ".join(f"{s}({len(sym.sets[s])})" for s in p.index_sets)
                errors.append(
                    f"parameter {p.name!r}: needs {len(keys)} values ({dims}, row-major), "
                    f"got {len(p.values)}"
                )
                continue
            sym.broken.discard(p.name)
            sym.indexed[p.name] = Indexed(
                p.name,
                "parameter",
                list(p.index_sets),
                dict(zip(keys, map(float, p.values), strict=False)),
            )

    infos: list[VarInfo] = []
    if not ir.variables:
        errors.append("model: declare at least one variable")
    for v in ir.variables:
        if not claim("variable", v.name):
            continue
        keys = keys_for("variable", v.name, v.index_sets)
        sym.broken.add(v.name)
        if keys is None:
            continue
        lb, ub = v.lb, v.ub
        kind = {"continuous": "C", "integer": "I", "binary": "B"}[v.domain]
        if kind == "B":
            lb = 0.0 if lb is None else max(lb, 0.0)
            ub = 1.0 if ub is None else min(ub, 1.0)
        if lb is not None and ub is not None and lb > ub:
            errors.append(f"variable {v.name!r}: lower bound {lb} exceeds upper bound {ub}")
            continue
        if any(b is not None and math.isnan(b) for b in (lb, ub)):
            errors.append(f"variable {v.name!r}: bounds must be numbers or null")
            continue
        comps: dict[tuple[str, ...], Any] = {}
        for key in keys:
            idx = len(infos)
            infos.append(VarInfo(var_label(v.name, key), v.name, kind, lb, ub))
            comps[key] = Poly.var(idx)
        sym.variable_names.append(v.name)
        sym.broken.discard(v.name)
        if v.index_sets:
            sym.indexed[v.name] = Indexed(v.name, "variable", list(v.index_sets), comps)
        else:
            sym.scalars[v.name] = comps[()]
            sym.scalar_kind[v.name] = "variable"
    return sym, infos


def compile_ir(ir: ModelIRBase) -> CompiledIR:
    """Check every item of ``ir`` and expand it; raise :class:`IRValidationError` on errors."""
    errors: list[str] = []
    warnings: list[str] = []
    sym, infos = _symbols(ir, errors)
    ev = Evaluator(sym, PolyBackend())

    objective: Any = 0.0
    obj_node: ast.AST = ast.Constant(0.0)
    try:
        obj_node = parse(ir.objective.expression)
        if isinstance(obj_node, ast.Compare):
            raise ExprError("the objective is an expression to optimize, not a comparison")
        objective = ev.value(obj_node, {})
    except BrokenReference:
        pass  # the declaration's own error says it
    except ExprError as e:
        errors.append(f"objective: {e}")

    rows: list[Row] = []
    violated: list[str] = []
    names: set[str] = set()
    for c in ir.constraints:
        label = f"constraint {c.name!r}"
        if c.name in names:
            errors.append(f"{label}: name used twice; give each constraint its own name")
            continue
        names.add(c.name)
        try:
            node = parse(c.expression)
            parts = comparison_parts(node)
            if any(op in ("<", ">") for _, op, _ in parts):
                warnings.append(
                    f"{label}: strict '<'/'>' read as '<='/'>=' (solvers cannot enforce "
                    "strictness; for integers write e.g. 'x <= y - 1')"
                )
            gens = parse_for_all(c.for_all) if c.for_all and c.for_all.strip() else []
            for env in ev.bindings(gens, {}):
                row_label = c.name + (f"[{','.join(env.values())}]" if env else "")
                for lhs, op, rhs in parts:
                    sense = {"<": "<=", ">": ">="}.get(op, op)
                    body = ev.value(lhs, env) - ev.value(rhs, env)
                    if isinstance(body, (int, float)):
                        ok = {
                            "<=": body <= 1e-9,
                            ">=": body >= -1e-9,
                            "==": abs(body) <= 1e-9,
                        }[sense]
                        if not ok:
                            violated.append(row_label)
                        continue
                    rows.append(Row(row_label, c.name, body, sense, lhs, rhs, env))
        except BrokenReference:
            pass
        except ExprError as e:
            errors.append(f"{label}: {e}")
    if errors:
        raise IRValidationError(errors)
    return CompiledIR(
        ir=ir,
        symbols=sym,
        variables=infos,
        sense=ir.objective.sense,
        objective=objective,
        objective_node=obj_node,
        rows=rows,
        violated_constants=violated,
        warnings=warnings,
    )


def _degree(v: Any) -> int | None:
    if isinstance(v, Poly):
        return v.degree()
    if isinstance(v, NL):
        return None
    return 0


def quadratic_convex(cir: CompiledIR) -> bool | None:
    """Is the quadratic objective convex for its sense? None when not quadratic."""
    obj = cir.objective
    if not isinstance(obj, Poly) or obj.degree() != 2:
        return None
    import numpy as np

    quad = {k: c for k, c in obj.t.items() if len(k) == 2 and c != 0.0}
    idx = sorted({i for k in quad for i in k})
    pos = {v: n for n, v in enumerate(idx)}
    q = np.zeros((len(idx), len(idx)))
    for (i, j), c in quad.items():
        if i == j:
            q[pos[i], pos[i]] += 2 * c
        else:
            q[pos[i], pos[j]] += c
            q[pos[j], pos[i]] += c
    if cir.sense == "maximize":
        q = -q
    eig = np.linalg.eigvalsh(q)
    scale = max(1.0, float(np.abs(q).max()))
    return bool(eig.min() >= -1e-9 * scale)


def classify_compiled(cir: CompiledIR) -> IRClass:
    has_int = any(v.kind in ("I", "B") for v in cir.variables)
    od = _degree(cir.objective)
    cds = [_degree(r.body) for r in cir.rows]
    cd: int | None = 0
    for d in cds:
        if d is None:
            cd = None
            break
        cd = max(cd, d)
    convex = quadratic_convex(cir)
    if od is None or cd is None or od > 2 or cd > 2:
        pc = "MINLP" if has_int else "NLP"
    elif cd == 2:
        pc = "MIQCP" if has_int else "QCP"
    elif od == 2:
        pc = "MIQP" if has_int else "QP"
    else:
        pc = "MILP" if has_int else "LP"
    solver = "highs" if pc in ("LP", "MILP") or (pc == "QP" and convex) else "scip"
    return IRClass(
        problem_class=pc,  # type: ignore[arg-type]
        has_integers=has_int,
        objective_degree=od,
        constraint_degree=cd,
        convex_objective=convex,
        solver=solver,  # type: ignore[arg-type]
        num_variables=len(cir.variables),
        num_constraints=len(cir.rows),
    )


def classify_ir(ir: ModelIRBase) -> IRClass:
    """Classify ``ir`` (LP, MILP, QP, MIQP, QCP, MIQCP, NLP, MINLP) and name the auto solver.

    Raises :class:`IRValidationError` if the IR is invalid.
    """
    return classify_compiled(compile_ir(ir))
