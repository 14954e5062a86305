"""Render a :class:`ModelIR` as readable math (Markdown + LaTeX) or as a runnable Pyomo script."""

from __future__ import annotations

import ast
import functools
import keyword
from typing import Any

from optiforge.solvers.compile import NL, Poly, classify_compiled, compile_ir, var_label
from optiforge.solvers.errors import IRValidationError
from optiforge.solvers.expr import (
    Backend,
    Evaluator,
    ExprError,
    comparison_parts,
    parse,
    parse_for_all,
)
from optiforge.solvers.ir import ModelIR, element_key

# ---------------------------------------------------------------------------------------------
# Markdown / LaTeX

_PREC = {ast.Add: 1, ast.Sub: 1, ast.Mult: 2, ast.Div: 2, ast.Pow: 4}
_FUNC_TEX = {"exp": r"\exp", "log": r"\ln", "log10": r"\log_{10}", "sin": r"\sin", "cos": r"\cos"}
_CMP_TEX = {
    ast.LtE: r"\le",
    ast.GtE: r"\ge",
    ast.Eq: "=",
    ast.Lt: "<",
    ast.Gt: ">",
    ast.NotEq: r"\ne",
}


def _tex_name(name: str) -> str:
    if len(name) == 1:
        return name
    return r"\mathit{" + name.replace("_", r"\_") + "}"


def _tex_num(v: float | int) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


class _Tex:
    def expr(self, n: ast.AST, prec: int = 0) -> str:
        if isinstance(n, ast.Constant):
            if isinstance(n.value, str):
                return r"\text{" + n.value.replace("_", r"\_") + "}"
            return _tex_num(n.value)
        if isinstance(n, ast.Name):
            return _tex_name(n.id)
        if isinstance(n, ast.Subscript):
            idx = n.slice.elts if isinstance(n.slice, ast.Tuple) else [n.slice]
            return f"{_tex_name(n.value.id)}_{{{','.join(self.expr(i) for i in idx)}}}"  # type: ignore[attr-defined]
        if isinstance(n, ast.UnaryOp) and _const_value(n) is not None:
            return _tex_num(_const_value(n))  # type: ignore[arg-type]
        if isinstance(n, ast.UnaryOp):
            inner = self.expr(n.operand, 3)
            s = (
                f"-{inner}"
                if isinstance(n.op, ast.USub)
                else (rf"\lnot {inner}" if isinstance(n.op, ast.Not) else inner)
            )
            return f"\\left({s}\\right)" if prec > 1 else s
        if isinstance(n, ast.BinOp):
            p = _PREC[type(n.op)]
            if isinstance(n.op, ast.Div):
                s = rf"\frac{{{self.expr(n.left)}}}{{{self.expr(n.right)}}}"
                return s
            if isinstance(n.op, ast.Pow):
                s = f"{{{self.expr(n.left, 5)}}}^{{{self.expr(n.right)}}}"
            elif isinstance(n.op, ast.Mult):
                lc, rc = _const_value(n.left), _const_value(n.right)
                coef, other = (lc, n.right) if rc is None else (rc, n.left)
                if coef is not None and (lc is None or rc is None):
                    # A coefficient: 1*x -> x, -1*x -> -x, -3*x -> -3 x, (x-y)*2 -> 2 (x-y).
                    body = self.expr(other, p)
                    head = {1.0: "", -1.0: "-"}.get(coef, _tex_num(coef) + " ")
                    s = f"{head}{body}"
                else:
                    left, right = self.expr(n.left, p), self.expr(n.right, p + 1)
                    sep = r" \cdot " if right[:1].isdigit() or right.startswith("-") else " "
                    s = f"{left}{sep}{right}"
                if s.startswith("-") and prec > 2:
                    return f"\\left({s}\\right)"
            else:
                left, right = self.expr(n.left, p), self.expr(n.right, p + 1)
                op = "+" if isinstance(n.op, ast.Add) else "-"
                if op == "+" and right.startswith("-"):
                    op, right = "-", right[1:]
                elif op == "-" and right.startswith("-") and not right.startswith(r"-\left"):
                    op, right = "+", right[1:]
                s = f"{left} {op} {right}"
            return f"\\left({s}\\right)" if p < prec else s
        if isinstance(n, ast.Call):
            f = n.func.id  # type: ignore[attr-defined]
            if f in ("sum", "min", "max") and len(n.args) == 1:
                a = n.args[0]
                big = {"sum": r"\sum", "min": r"\min", "max": r"\max"}[f]
                if isinstance(a, (ast.GeneratorExp, ast.ListComp)):
                    s = f"{big}_{{{self.gens(a.generators)}}} {self.expr(a.elt, 2)}"
                else:
                    s = f"{big} {self.expr(a)}"
                return f"\\left({s}\\right)" if prec > 1 else s
            args = ", ".join(self.expr(a) for a in n.args)
            if f == "sqrt":
                return rf"\sqrt{{{args}}}"
            if f == "abs":
                return rf"\left|{args}\right|"
            if f in ("min", "max"):
                return rf"\{f}\left({args}\right)"
            return rf"{_FUNC_TEX.get(f, f)}\left({args}\right)"
        if isinstance(n, ast.Compare):
            parts = [self.expr(n.left)]
            for op, c in zip(n.ops, n.comparators, strict=False):
                parts += [_CMP_TEX[type(op)], self.expr(c)]
            return " ".join(parts)
        if isinstance(n, ast.BoolOp):
            j = r" \land " if isinstance(n.op, ast.And) else r" \lor "
            return j.join(self.expr(v) for v in n.values)
        return ast.unparse(n)

    def gens(self, gens: list[ast.comprehension]) -> str:
        out = []
        for g in gens:
            src = self.expr(g.iter) if not isinstance(g.iter, ast.Call) else self.range(g.iter)
            s = rf"{self.expr(g.target)} \in {src}"
            if g.ifs:
                s += ": " + r" \land ".join(self.expr(c) for c in g.ifs)
            out.append(s)
        return ", ".join(out)

    def range(self, call: ast.Call) -> str:
        args = [self.expr(a) for a in call.args]
        if len(args) == 1:
            return rf"\{{0, \dots, {args[0]} - 1\}}"
        return rf"\{{{args[0]}, \dots, {args[1]} - 1\}}"


def _const_value(n: ast.AST) -> float | None:
    """The value of a numeric literal, also when negated (``-3``)."""
    if (
        isinstance(n, ast.Constant)
        and isinstance(n.value, (int, float))
        and not isinstance(n.value, bool)
    ):
        return float(n.value)
    if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
        v = _const_value(n.operand)
        if v is not None:
            return -v if isinstance(n.op, ast.USub) else v
    return None


def _md_text(text: str) -> str:
    """Plain text inside Markdown: a '$' would start math mode."""
    return text.replace("\\", "\\\\").replace("$", "\\$").replace("*", "\\*").replace("_", "\\_")


def _tex_or_code(text: str, fn: Any) -> str:
    try:
        return f"${fn()}$"
    except Exception:
        return f"`{text}`"


def ir_to_markdown(ir: ModelIR, *, expanded: bool = False, max_rows: int = 200) -> str:
    """Readable Markdown with LaTeX math for ``ir`` (renders even when the IR is invalid).

    The compact form writes each indexed constraint once, with its ``for all``. With
    ``expanded=True`` a section "Expanded model" follows: every constraint row, the
    objective and the bounds written out per element (:func:`ir_expanded`, at most
    ``max_rows`` rows).
    """
    t = _Tex()
    lines = [f"### Model `{ir.name}`", ""]
    if ir.sets:
        lines.append("**Sets**")
        lines.append("")
        for s in ir.sets:
            shown = ", ".join(s.elements[:12]) + (", ..." if len(s.elements) > 12 else "")
            lines.append(f"- ${_tex_name(s.name)} = \\{{\\text{{{shown}}}\\}}$" + _src(s.source))
        lines.append("")
    if ir.parameters:
        lines.append("**Parameters**")
        lines.append("")
        for p in ir.parameters:
            if not p.index_sets:
                lines.append(f"- ${_tex_name(p.name)} = {_tex_num(p.values[0])}$" + _src(p.source))
            else:
                vals = ", ".join(_tex_num(v) for v in p.values[:12])
                more = ", ..." if len(p.values) > 12 else ""
                idx = ",".join(_tex_name(s) for s in p.index_sets)
                lines.append(f"- ${_tex_name(p.name)}$ over ${idx}$: {vals}{more}" + _src(p.source))
        lines.append("")
    lines.append("**Variables**")
    lines.append("")
    for v in ir.variables:
        idx = ",".join("ijkl"[k] for k in range(len(v.index_sets)))
        sym = _tex_name(v.name) + (f"_{{{idx}}}" if idx else "")
        lo = "" if v.lb is None else f"{_tex_num(v.lb)} \\le "
        hi = "" if v.ub is None else f" \\le {_tex_num(v.ub)}"
        dom = {"continuous": r"\mathbb{R}", "integer": r"\mathbb{Z}", "binary": r"\{0,1\}"}[
            v.domain
        ]
        where = ""
        if v.index_sets:
            where = ", " + ", ".join(
                f"{'ijkl'[k]} \\in {_tex_name(s)}" for k, s in enumerate(v.index_sets)
            )
        extra = _md_text(
            "; ".join(x for x in (v.description, v.units and f"units: {v.units}") if x)
        )
        lines.append(
            f"- ${lo}{sym}{hi},\\ {sym} \\in {dom}{where}$"
            + (f" ({extra})" if extra else "")
            + _src(v.source)
        )
    lines.append("")
    sense = r"\max" if ir.objective.sense == "maximize" else r"\min"
    obj = _tex_or_code(ir.objective.expression, lambda: t.expr(parse(ir.objective.expression)))
    if obj.startswith("$"):
        obj = f"${sense}\\ {obj[1:]}"
    else:
        obj = f"{ir.objective.sense} {obj}"
    lines += ["**Objective**", "", f"- {obj}" + _src(ir.objective.source), ""]
    if ir.constraints:
        lines += ["**Constraints**", ""]
        for c in ir.constraints:
            body = _tex_or_code(c.expression, lambda c=c: t.expr(parse(c.expression)))
            forall = ""
            if c.for_all and c.for_all.strip():
                forall = " " + _tex_or_code(
                    c.for_all, lambda c=c: r"\forall\ " + t.gens(parse_for_all(c.for_all or ""))
                )
            lines.append(f"- *{_md_text(c.name)}*: {body}{forall}" + _src(c.source))
        lines.append("")
    if expanded:
        lines += ["**Expanded model**", "", "```text", expanded_or_reason(ir, max_rows), "```", ""]
    return "\n".join(lines)


def _src(source: str) -> str:
    return f" — _“{_md_text(source.strip())}”_" if source and source.strip() else ""


# ---------------------------------------------------------------------------------------------
# Expanded form: every row written out per element


def _num(v: float) -> str:
    return f"{v:.10g}"


def _const(v: float) -> ast.Constant:
    """A parameter value as a literal: whole numbers without '.0'."""
    return ast.Constant(int(v) if float(v).is_integer() and abs(v) < 1e15 else v)


def _poly_text(p: Any, labels: list[str]) -> tuple[str, float]:
    """Terms of a polynomial as text (``3 x[a] - x[b] + 2 x*y``) and its constant."""
    if isinstance(p, (int, float)):
        return "", float(p)
    const = p.t.get((), 0.0)
    out: list[str] = []
    for mono, c in sorted(p.t.items(), key=lambda kv: (len(kv[0]), kv[0])):
        if not mono or c == 0.0:
            continue
        counts: dict[int, int] = {}
        for i in mono:
            counts[i] = counts.get(i, 0) + 1
        factors = "*".join(labels[i] + (f"^{k}" if k > 1 else "") for i, k in counts.items())
        mag = abs(c)
        term = factors if mag == 1.0 else f"{_num(mag)} {factors}"
        if not out:
            out.append(f"-{term}" if c < 0 else term)
        else:
            out.append(f"- {term}" if c < 0 else f"+ {term}")
    return " ".join(out), const


class _Expander:
    """Rewrites an expression with indices bound: parameters become numbers, variables
    their component labels (``x[P1,A]``) and ``sum(...)`` an explicit chain of terms."""

    def __init__(self, cir: Any):
        self.sym = cir.symbols
        self.labels = [v.label for v in cir.variables]
        self.ev = Evaluator(self.sym, Backend())

    def text(self, node: ast.AST, env: dict[str, str]) -> str:
        return ast.unparse(self.node(node, env))

    def _key(self, part: ast.AST, env: dict[str, str]) -> str:
        if isinstance(part, ast.Constant):
            return element_key(part.value)
        if isinstance(part, ast.Name) and part.id in env:
            return env[part.id]
        return element_key(float(self.ev.value(part, env)))

    def node(self, n: ast.AST, env: dict[str, str]) -> ast.expr:
        if isinstance(n, ast.Name):
            if n.id in env:
                return ast.Name(env[n.id])
            if self.sym.scalar_kind.get(n.id) == "parameter":
                return _const(self.sym.scalars[n.id])
            return ast.Name(n.id)
        if isinstance(n, ast.Subscript):
            name = n.value.id  # type: ignore[attr-defined]
            parts = n.slice.elts if isinstance(n.slice, ast.Tuple) else [n.slice]
            key = tuple(self._key(p, env) for p in parts)
            ent = self.sym.indexed[name]
            if ent.kind == "parameter":
                return _const(ent.items[key])
            return ast.Name(var_label(name, key))
        if isinstance(n, ast.Call) and len(n.args) == 1:
            f = n.func.id  # type: ignore[attr-defined]
            arg = n.args[0]
            terms: list[ast.expr] | None = None
            if isinstance(arg, (ast.GeneratorExp, ast.ListComp)):
                terms = [self.node(arg.elt, b) for b in self.ev.bindings(arg.generators, env)]
            elif (
                f in ("sum", "min", "max")
                and isinstance(arg, ast.Name)
                and arg.id in self.sym.indexed
            ):
                ent = self.sym.indexed[arg.id]
                terms = [
                    _const(v) if ent.kind == "parameter" else ast.Name(var_label(arg.id, k))
                    for k, v in ent.items.items()
                ]
            if terms is not None:
                if f != "sum":
                    return ast.Call(ast.Name(f), terms, [])
                if not terms:
                    return ast.Constant(0)
                out = terms[0]
                for t in terms[1:]:
                    out = ast.BinOp(out, ast.Add(), t)
                return out
        if isinstance(n, ast.Call):
            return ast.Call(n.func, [self.node(a, env) for a in n.args], [])
        if isinstance(n, ast.BinOp):
            return ast.BinOp(self.node(n.left, env), n.op, self.node(n.right, env))
        if isinstance(n, ast.UnaryOp):
            return ast.UnaryOp(n.op, self.node(n.operand, env))
        return n  # type: ignore[return-value]


def ir_expanded(ir: ModelIR, *, max_rows: int = 200) -> str:
    """The model written out per element, as plain text: the objective, every constraint
    row (``supply_limit[P1]: ship[P1,A] + ship[P1,B] <= 20``) and the bounds.

    Polynomial rows are shown with like terms collected and constants moved to the right;
    other rows (``exp``, division, ...) with their sums written out. At most ``max_rows``
    rows are shown, then how many more there are. Raises :class:`IRValidationError` when
    the IR is invalid.
    """
    cir = compile_ir(ir)
    ex = _Expander(cir)
    labels = ex.labels
    if isinstance(cir.objective, NL):
        obj = ex.text(cir.objective_node, {})
    else:
        terms, const = _poly_text(cir.objective, labels)
        obj = terms or "0"
        if const:
            obj += f" {'-' if const < 0 else '+'} {_num(abs(const))}"
    lines = [f"{cir.sense}  {obj}", "subject to"]
    width = max((len(r.label) for r in cir.rows[:max_rows]), default=0)
    for r in cir.rows[:max_rows]:
        if isinstance(r.body, Poly):
            terms, const = _poly_text(r.body, labels)
            rhs = -const + 0.0
            body = f"{terms or '0'} {r.sense} {_num(rhs)}"
        else:
            body = f"{ex.text(r.lhs, r.env)} {r.sense} {ex.text(r.rhs, r.env)}"
        lines.append(f"  {r.label:<{width}}  {body}")
    if len(cir.rows) > max_rows:
        lines.append(f"  ... and {len(cir.rows) - max_rows} more rows")
    if cir.violated_constants:
        lines.append("  violated rows without variables: " + ", ".join(cir.violated_constants))
    lines.append("bounds")
    groups: dict[tuple[str, str, Any, Any], list[str]] = {}
    for v in cir.variables:
        groups.setdefault((v.item, v.kind, v.lb, v.ub), []).append(v.label)
    kinds = {"C": "continuous", "I": "integer", "B": "binary"}
    for (_, kind, lb, ub), comps in groups.items():
        shown = ", ".join(comps[:8]) + (f", ... ({len(comps)} in all)" if len(comps) > 8 else "")
        lo = "-inf" if lb is None else _num(lb)
        hi = "" if ub is None else f" <= {_num(ub)}"
        lines.append(f"  {lo} <= {shown}{hi}  ({kinds[kind]})")
    return "\n".join(lines)


def expanded_or_reason(ir: ModelIR, max_rows: int = 200) -> str:
    """:func:`ir_expanded`, or why the model cannot be expanded (for display)."""
    try:
        return ir_expanded(ir, max_rows=max_rows)
    except (IRValidationError, ExprError, KeyError) as exc:
        return f"(cannot be expanded: {exc})"


# ---------------------------------------------------------------------------------------------
# Pyomo script

_PY_FUNCS = {
    "exp": "pyo.exp",
    "log": "pyo.log",
    "log10": "pyo.log10",
    "sqrt": "pyo.sqrt",
    "sin": "pyo.sin",
    "cos": "pyo.cos",
}
_SCRIPT_NAMES = {"m", "pyo", "solver", "results", "report", "tc", "sum", "abs", "min", "max"}


@functools.lru_cache(maxsize=1)
def _model_attrs() -> frozenset[str]:
    import pyomo.environ as pyo

    return frozenset(dir(pyo.ConcreteModel()))


def _int_like_set(elements: list[str]) -> bool:
    try:
        return all(float(e).is_integer() and str(int(float(e))) == e for e in elements)
    except ValueError:
        return False


class _PyomoPrinter:
    def __init__(self, ir: ModelIR):
        self.sets = {s.name: s for s in ir.sets}
        self.int_sets = {s.name for s in ir.sets if _int_like_set(s.elements)}
        self.params = {p.name: p for p in ir.parameters}
        self.vars = {v.name: v for v in ir.variables}
        attrs = _model_attrs()
        self.attr = {v: (v + "_" if v in attrs or v.startswith("_") else v) for v in self.vars}
        self.local = {
            n: (n + "_" if n in _SCRIPT_NAMES or keyword.iskeyword(n) else n)
            for n in list(self.sets) + list(self.params)
        }

    def elem(self, e: str, set_name: str | None) -> str:
        if set_name in self.int_sets:
            return str(int(float(e)))
        return repr(e)

    def index_sets_of(self, name: str) -> list[str]:
        if name in self.vars:
            return self.vars[name].index_sets
        if name in self.params:
            return self.params[name].index_sets
        return []

    def expr(self, n: ast.AST) -> str:
        if isinstance(n, ast.Constant):
            return repr(n.value)
        if isinstance(n, ast.Name):
            if n.id in self.vars:
                return f"m.{self.attr[n.id]}"
            return self.local.get(n.id, n.id)
        if isinstance(n, ast.Subscript):
            name = n.value.id  # type: ignore[attr-defined]
            idx = n.slice.elts if isinstance(n.slice, ast.Tuple) else [n.slice]
            sets = self.index_sets_of(name)
            parts = []
            for k, i in enumerate(idx):
                s = sets[k] if k < len(sets) else None
                if isinstance(i, ast.Constant):
                    parts.append(self.elem(element_key(i.value), s))
                else:
                    parts.append(self.expr(i))
            base = f"m.{self.attr[name]}" if name in self.vars else self.local.get(name, name)
            return f"{base}[{', '.join(parts)}]"
        if isinstance(n, ast.UnaryOp):
            op = {ast.USub: "-", ast.UAdd: "+", ast.Not: "not "}[type(n.op)]
            return f"{op}({self.expr(n.operand)})"
        if isinstance(n, ast.BinOp):
            op = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}[
                type(n.op)
            ]
            return f"({self.expr(n.left)} {op} {self.expr(n.right)})"
        if isinstance(n, ast.Compare):
            ops = {
                ast.LtE: "<=",
                ast.GtE: ">=",
                ast.Eq: "==",
                ast.Lt: "<",
                ast.Gt: ">",
                ast.NotEq: "!=",
            }
            s = self.expr(n.left)
            for op, c in zip(n.ops, n.comparators, strict=False):
                s += f" {ops[type(op)]} {self.expr(c)}"
            return s
        if isinstance(n, ast.BoolOp):
            j = " and " if isinstance(n.op, ast.And) else " or "
            return "(" + j.join(self.expr(v) for v in n.values) + ")"
        if isinstance(n, ast.Call):
            f = n.func.id  # type: ignore[attr-defined]
            if len(n.args) == 1 and isinstance(n.args[0], (ast.GeneratorExp, ast.ListComp)):
                g = n.args[0]
                inner = f"{self.expr(g.elt)} {self.gens(g.generators)}"
                if f == "sum":
                    return f"sum({inner})"
                return self.minmax(f, f"[{inner}]")
            if f == "sum" and len(n.args) == 1 and isinstance(n.args[0], ast.Name):
                name = n.args[0].id
                if name in self.vars:
                    return f"sum(m.{self.attr[name]}.values())"
                return f"sum({self.local.get(name, name)}.values())"
            args = [self.expr(a) for a in n.args]
            if f == "abs":
                return f"pyo.sqrt(({args[0]})**2)"  # smooth form every solver route accepts
            if f in ("min", "max"):
                return self.minmax(f, "[" + ", ".join(args) + "]")
            if f == "range":
                return f"range({', '.join(args)})"
            return f"{_PY_FUNCS[f]}({', '.join(args)})"
        return ast.unparse(n)

    def minmax(self, f: str, items: str) -> str:
        return f"_{f}({items})"

    def gens(self, gens: list[ast.comprehension]) -> str:
        out = []
        for g in gens:
            s = f"for {g.target.id} in {self.expr(g.iter)}"  # type: ignore[attr-defined]
            for c in g.ifs:
                s += f" if {self.expr(c)}"
            out.append(s)
        return " ".join(out)


_MINMAX_HELPERS = '''

def _min(items):
    """min() of expressions: (a + b - |a - b|) / 2, folded; exact, and solvers accept it."""
    items = list(items)
    acc = items[0]
    for b in items[1:]:
        acc = (acc + b - pyo.sqrt((acc - b) ** 2)) / 2
    return acc


def _max(items):
    """max() of expressions: (a + b + |a - b|) / 2, folded."""
    items = list(items)
    acc = items[0]
    for b in items[1:]:
        acc = (acc + b + pyo.sqrt((acc - b) ** 2)) / 2
    return acc
'''

_REPORT_FALLBACK = """
try:
    report  # provided by the optiforge sandbox
except NameError:  # running standalone: print the result instead

    def report(objective=None, status=None, variables=None, *, model=None, results=None,
               message=None):
        if results is not None and status is None:
            status = results.solver.termination_condition
        print("STATUS:", status)
        if model is not None:
            for v in model.component_data_objects(pyo.Var):
                print(f"  {v.name} = {v.value}")
"""


def ir_to_pyomo_code(ir: ModelIR, *, time_limit: float = 60.0) -> str:
    """A standalone Pyomo script for ``ir`` that follows the sandbox result protocol.

    Sets become Python lists and parameters dicts; variables, objective and constraints
    are Pyomo components. The script solves with HiGHS (``appsi_highs``) for LP, MILP and
    convex QP and with SCIP (``scip_direct``) otherwise, prints ``OBJECTIVE: <value>`` and
    calls ``report(...)``. Raises :class:`IRValidationError` if the IR is invalid.
    """
    cir = compile_ir(ir)  # validates; the script is only rendered for valid IRs
    cls = classify_compiled(cir)
    pr = _PyomoPrinter(ir)
    out = [
        f'"""{ir.name}: a {cls.problem_class} model, generated by optiforge from a model IR."""',
        "",
        "import pyomo.environ as pyo",
        _REPORT_FALLBACK,
    ]
    uses_minmax = any(
        "min(" in e or "max(" in e
        for e in [ir.objective.expression, *[c.expression for c in ir.constraints]]
    )
    if uses_minmax:
        out.append(_MINMAX_HELPERS)
    out.append(f"m = pyo.ConcreteModel(name={ir.name!r})")
    out.append("")
    if ir.sets:
        out.append("# Sets")
        for s in ir.sets:
            items = ", ".join(pr.elem(e, s.name) for e in s.elements)
            out.append(f"{pr.local[s.name]} = [{items}]")
        out.append("")
    if ir.parameters:
        out.append("# Parameters")
        import itertools

        for p in ir.parameters:
            name = pr.local[p.name]
            if not p.index_sets:
                out.append(f"{name} = {p.values[0]!r}")
                continue
            keys = itertools.product(
                *(ir_set.elements for ir_set in (pr.sets[s] for s in p.index_sets))
            )
            entries = []
            for key, val in zip(keys, p.values, strict=False):
                ks = [pr.elem(k, s) for k, s in zip(key, p.index_sets, strict=False)]
                kt = ks[0] if len(ks) == 1 else "(" + ", ".join(ks) + ")"
                entries.append(f"{kt}: {val!r}")
            out.append(f"{name} = {{{', '.join(entries)}}}")
        out.append("")
    out.append("# Variables")
    for v in ir.variables:
        dom = {"continuous": "pyo.Reals", "integer": "pyo.Integers", "binary": "pyo.Binary"}[
            v.domain
        ]
        args = [f"{pr.local[s]}" for s in v.index_sets]
        args += [f"within={dom}", f"bounds=({v.lb!r}, {v.ub!r})"]
        comment = "  # " + v.description if v.description else ""
        out.append(f"m.{pr.attr[v.name]} = pyo.Var({', '.join(args)}){comment}")
    out.append("")
    sense = "pyo.maximize" if ir.objective.sense == "maximize" else "pyo.minimize"
    out.append("# Objective")
    out.append(f"m.objective = pyo.Objective(expr={pr.expr(cir.objective_node)}, sense={sense})")
    out.append("")
    if ir.constraints:
        out.append("# Constraints")
        out.append("m.constraints = pyo.ConstraintList()")
    for c in ir.constraints:
        node = parse(c.expression)
        parts = comparison_parts(node)
        gens = parse_for_all(c.for_all) if c.for_all and c.for_all.strip() else []
        indent = ""
        out.append(f"# {c.name}" + (f": {c.source.strip()}" if c.source.strip() else ""))
        for g in gens:
            line = f"{indent}for {g.target.id} in {pr.expr(g.iter)}:"  # type: ignore[attr-defined]
            out.append(line)
            indent += "    "
            for cond in g.ifs:
                out.append(f"{indent}if {pr.expr(cond)}:")
                indent += "    "
        for lhs, op, rhs in parts:
            op = {"<": "<=", ">": ">="}.get(op, op)
            out.append(f"{indent}m.constraints.add({pr.expr(lhs)} {op} {pr.expr(rhs)})")
    out.append("")
    solver = "appsi_highs" if cls.solver == "highs" else "scip_direct"
    out += [
        "# Solve and report",
        f'solver = pyo.SolverFactory("{solver}")',
        *(
            [f"solver.config.time_limit = {float(time_limit)!r}"]
            if solver == "appsi_highs"
            else [f'solver.options["limits/time"] = {float(time_limit)!r}']
        ),
        "results = solver.solve(m, load_solutions=False)",
        "tc = results.solver.termination_condition",
        "if tc == pyo.TerminationCondition.optimal:",
        "    m.solutions.load_from(results)",
        '    print("OBJECTIVE:", pyo.value(m.objective))',
        "    report(model=m, results=results)",
        "else:",
        '    print("no optimal solution:", tc)',
        "    report(status=tc)",
        "",
    ]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Views of a formulation for people and for prompts (a ModelIR, or an IR dict that may not
# validate: a model's draft is shown to the critic even when it is broken)


def _as_dict(ir: ModelIR | dict[str, Any]) -> dict[str, Any]:
    return ir.model_dump() if isinstance(ir, ModelIR) else ir


def ir_markdown(ir: ModelIR | dict[str, Any], *, expanded: bool = False) -> str:
    """Readable math for a formulation: :func:`ir_to_markdown` when the IR parses, else a
    plain listing of the objective, constraints and variables (never raises for a dict with
    an objective). ``expanded`` adds the per-element form (see :func:`ir_to_markdown`)."""
    try:
        model = ir if isinstance(ir, ModelIR) else ModelIR.model_validate(ir)
        return ir_to_markdown(model, expanded=expanded)
    except Exception:
        pass
    d = _as_dict(ir)
    lines = [f"{d['objective']['sense']} {d['objective']['expression']}", "subject to"]
    for c in d.get("constraints", []):
        lines.append(f"  {c['name']}: {c['expression']}")
    for v in d.get("variables", []):
        desc = f"  # {v.get('description')}" if v.get("description") else ""
        lines.append(f"  {v['name']} >= 0, {v.get('domain', 'continuous')}{desc}")
    return "\n".join(lines)


def ir_plaintext(ir: ModelIR | dict[str, Any], *, expanded: bool = False) -> str:
    """The formulation as plain-text math for a terminal (objective, constraints with the
    text they came from, variables with bounds, domain, description and units).

    An indexed model first lists its sets and its parameters' data (a table's rows
    separated by ``|``); indexed constraints show once, with their ``for all``;
    ``expanded=True`` adds the model written out per element (:func:`ir_expanded`)."""
    d = _as_dict(ir)
    obj = d["objective"]
    lines = [*_data_lines(d), f"{obj['sense']}  {obj['expression']}", "subject to"]
    width = max((len(c["name"]) for c in d.get("constraints", [])), default=2)
    for c in d.get("constraints", []):
        src = f"    [{c['source'][:70]}]" if c.get("source") else ""
        each = f"  for all {c['for_all'].strip()}" if (c.get("for_all") or "").strip() else ""
        lines.append(f"  {c['name']:<{width}}  {c['expression']}{each}{src}")
    lines.append("variables")
    for v in d.get("variables", []):
        lb = v.get("lb", 0.0)
        ub = v.get("ub")
        rng = f"{'-inf' if lb is None else f'{lb:g}'} <= {v['name']}" + (
            f" <= {ub:g}" if ub is not None else ""
        )
        desc = ""
        if v.get("description"):  # a draft's variable may have none
            desc = f"  ({v['description']}" + (f", {v['units']}" if v.get("units") else "") + ")"
        lines.append(f"  {rng}, {v.get('domain', 'continuous')}{desc}")
    if expanded:
        try:
            model = ir if isinstance(ir, ModelIR) else ModelIR.model_validate(ir)
            lines += ["expanded", expanded_or_reason(model, 200)]
        except Exception as exc:  # a draft that does not parse: say so, keep the compact form
            lines += ["expanded", f"(cannot be expanded: {str(exc)[:300]})"]
    return "\n".join(lines)


def _data_lines(d: dict[str, Any], max_values: int = 24) -> list[str]:
    """The sets and parameters of an indexed model, one line each (none for a flat one)."""
    lines = []
    sets = {s["name"]: [str(e) for e in s.get("elements", [])] for s in d.get("sets", [])}
    if sets:
        lines.append("sets")
        lines += [f"  {k} = {{{', '.join(v)}}}" for k, v in sets.items()]
    if d.get("parameters"):
        lines.append("parameters")
    for p in d.get("parameters", []):
        idx = p.get("index_sets") or []
        vals = [f"{float(v):g}" for v in p.get("values", [])]
        row = len(sets.get(idx[-1], [])) if len(idx) >= 2 else 0
        shown = vals[:max_values]
        if row:
            text = " | ".join(", ".join(shown[i : i + row]) for i in range(0, len(shown), row))
        else:
            text = ", ".join(shown)
        more = f" ... ({len(vals)} values)" if len(vals) > max_values else ""
        name = f"{p['name']}[{', '.join(idx)}]" if idx else p["name"]
        lines.append(f"  {name} = {text}{more}")
    return lines


def ir_code(ir: ModelIR | dict[str, Any]) -> str | None:
    """A runnable Pyomo script for a formulation (:func:`ir_to_pyomo_code`), or None when
    the IR is not valid enough to render."""
    try:
        model = ir if isinstance(ir, ModelIR) else ModelIR.model_validate(ir)
        return ir_to_pyomo_code(model)
    except Exception:
        return None
