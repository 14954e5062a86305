"""Constraint activity at a solution: which constraints bind, how much slack the others have.

A pure function of the model IR and the variable values a solver reported. Every
constraint row is expanded by the compiler (:func:`~optiforge.solvers.compile.compile_ir`)
and both sides are evaluated with the IR's own expression evaluator
(:class:`~optiforge.solvers.expr.Evaluator`) over the numbers: nothing is ``eval``'d, so an
expression written by a model is as safe here as in the solver. Nonlinear rows work too
(the evaluator computes ``exp``, ``sqrt``, ... of numbers).

    rows = constraint_activity(ir, result.variables)
    [r.constraint for r in rows if r.binding]        # e.g. ['c1', 'c3']
    zero_variables(ir, result.variables)             # e.g. ['chairs']
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from optiforge.solvers.compile import compile_ir
from optiforge.solvers.errors import IRValidationError
from optiforge.solvers.expr import Backend, Evaluator, ExprError, Indexed, Symbols
from optiforge.solvers.schema import ModelIRBase

__all__ = ["ActivityError", "RowActivity", "constraint_activity", "zero_variables"]

#: Relative tolerance of "binds": |lhs - rhs| <= tol * (1 + |rhs|).
BIND_TOL = 1e-6


class ActivityError(IRValidationError):
    """The IR does not validate, or a variable value the rows need is missing."""


@dataclass(frozen=True)
class RowActivity:
    """One expanded constraint row at a solution.

    ``lhs`` and ``rhs`` are the values of the two sides as written, ``slack`` how far the
    row is from its bound in the feasible direction (``rhs - lhs`` for ``<=``, ``lhs - rhs``
    for ``>=``, ``-|lhs - rhs|`` for ``==``; negative means violated), ``binding`` whether
    it holds with equality within the tolerance.
    """

    constraint: str  # the IR constraint's name
    row: str  # the row label: the name, with the index binding of a for_all row
    expression: str
    source: str
    sense: str  # "<=", ">=", "=="
    lhs: float
    rhs: float
    slack: float
    binding: bool


def _numeric_symbols(sym: Symbols, labels: list[str], values: dict[str, float]) -> Symbols:
    """``sym`` with every variable component replaced by its value (from ``values``)."""
    missing = [lab for lab in labels if lab not in values]
    if missing:
        raise ActivityError([f"no value for variable(s) {', '.join(missing[:8])}"])
    # The compiler's components are Poly.var(i); component i is labels[i].
    out = copy.copy(sym)
    out.scalars = dict(sym.scalars)
    out.indexed = dict(sym.indexed)

    def val(comp: Any) -> Any:
        terms = getattr(comp, "t", None)
        if isinstance(terms, dict) and len(terms) == 1:
            ((key, coef),) = terms.items()
            if len(key) == 1 and coef == 1.0:
                return float(values[labels[key[0]]])
        return comp

    for name, kind in sym.scalar_kind.items():
        if kind == "variable":
            out.scalars[name] = val(sym.scalars[name])
    for name, ent in sym.indexed.items():
        if ent.kind == "variable":
            out.indexed[name] = Indexed(
                ent.name, ent.kind, list(ent.index_sets), {k: val(c) for k, c in ent.items.items()}
            )
    return out


def constraint_activity(
    ir: ModelIRBase | dict[str, Any], values: dict[str, float], tol: float = BIND_TOL
) -> list[RowActivity]:
    """The activity of every constraint row of ``ir`` at the point ``values``.

    ``values`` maps variable labels (``x``, ``x[chair]``, as a
    :class:`~optiforge.solvers.result.SolveResult` reports them) to numbers. Rows whose
    sides hold no variables are left out (they bind nothing). Raises :class:`ActivityError`
    when the IR does not validate or a value is missing.
    """
    from optiforge.solvers.ir import ModelIR

    try:
        model = ir if isinstance(ir, ModelIRBase) else ModelIR.from_json(ir)
        cir = compile_ir(model)
    except IRValidationError as exc:
        raise ActivityError(exc.errors) from None
    labels = [v.label for v in cir.variables]
    ev = Evaluator(_numeric_symbols(cir.symbols, labels, values), Backend())
    by_name = {c.name: c for c in model.constraints}
    out = []
    for r in cir.rows:
        try:
            lhs = float(ev.value(r.lhs, r.env))
            rhs = float(ev.value(r.rhs, r.env))
        except (ExprError, TypeError, ZeroDivisionError) as exc:
            raise ActivityError([f"constraint {r.item!r}: cannot evaluate: {exc}"]) from None
        diff = lhs - rhs
        slack = {"<=": -diff, ">=": diff}.get(r.sense, -abs(diff)) + 0.0
        c = by_name[r.item]
        out.append(
            RowActivity(
                constraint=r.item,
                row=r.label,
                expression=c.expression,
                source=c.source,
                sense=r.sense,
                lhs=lhs,
                rhs=rhs,
                slack=slack,
                binding=abs(diff) <= tol * (1.0 + abs(rhs)),
            )
        )
    return out


def zero_variables(
    ir: ModelIRBase | dict[str, Any], values: dict[str, float], tol: float = 1e-9
) -> list[str]:
    """The labels of the variable components of ``ir`` that are 0 (within ``tol``) in
    ``values``, in declaration order (components without a value are left out)."""
    from optiforge.solvers.ir import ModelIR

    try:
        model = ir if isinstance(ir, ModelIRBase) else ModelIR.from_json(ir)
    except IRValidationError as exc:
        raise ActivityError(exc.errors) from None
    names = {v.name for v in model.variables}
    return [
        label for label, x in values.items() if label.split("[", 1)[0] in names and abs(x) <= tol
    ]
