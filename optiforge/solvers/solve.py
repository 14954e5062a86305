"""Solve a :class:`ModelIR` with HiGHS (LP, MILP, convex QP) or SCIP (everything else)."""

from __future__ import annotations

import math
import os
import sys
import tempfile
import threading
import time
from typing import Any, Literal

from optiforge.solvers.compile import (
    CompiledIR,
    Poly,
    classify_compiled,
    compile_ir,
)
from optiforge.solvers.errors import SolverError
from optiforge.solvers.expr import Backend, Evaluator, ExprError, Indexed, Symbols
from optiforge.solvers.ir import ModelIR
from optiforge.solvers.result import SolveResult, SolveStatus

SolverName = Literal["auto", "highs", "scip"]
_LOG_TAIL_CHARS = 3000


def _tail(path: str, limit: int = _LOG_TAIL_CHARS) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def solve_ir(
    ir: ModelIR | dict[str, Any] | str,
    *,
    solver: SolverName = "auto",
    relax_integrality: bool = False,
    time_limit: float = 60.0,
) -> SolveResult:
    """Solve a model IR and return a :class:`SolveResult`.

    ``solver="auto"`` uses HiGHS for LP, MILP and convex QP and SCIP otherwise (see
    :func:`classify_ir`). ``relax_integrality`` solves integer and binary variables as
    continuous (binaries keep their 0..1 bounds). Infeasible, unbounded and time-limit
    outcomes are statuses of the result, not exceptions.

    Raises :class:`IRValidationError` when the IR is invalid (every problem is listed) and
    :class:`SolverError` when ``solver="highs"`` is forced on a model HiGHS cannot solve.
    Variable values are keyed ``x`` for scalars and ``x[a]`` / ``x[a,b]`` for components.
    """
    if isinstance(ir, (str, dict)):
        ir = ModelIR.from_json(ir)
    if time_limit is None or not time_limit > 0:
        raise SolverError(f"time_limit must be a positive number of seconds, got {time_limit!r}")
    cir = compile_ir(ir)
    if relax_integrality:
        for v in cir.variables:
            v.kind = "C"
    cls = classify_compiled(cir)
    chosen = cls.solver if solver == "auto" else solver
    if chosen not in ("highs", "scip"):
        raise SolverError(f"unknown solver {solver!r}; use 'auto', 'highs' or 'scip'")
    if chosen == "highs" and cls.solver != "highs":
        raise SolverError(
            f"HiGHS cannot solve this {cls.problem_class} model"
            + (" (the quadratic objective is not convex)" if cls.convex_objective is False else "")
            + "; use solver='scip' or 'auto'"
        )
    note = "; ".join(cir.warnings) or None
    if cir.violated_constants:
        return SolveResult(
            status=SolveStatus.INFEASIBLE,
            solver=chosen,
            solve_time_s=0.0,
            message="constraint(s) without variables are violated: "
            + ", ".join(cir.violated_constants[:10]),
        )
    result = _solve_highs(cir, time_limit) if chosen == "highs" else _solve_scip(cir, time_limit)
    if note:
        result.message = f"{result.message}; {note}" if result.message else note
    return result


# ---------------------------------------------------------------------------------------------
# HiGHS

_highs_lock = threading.Lock()
_highs_banner_done = False


def _new_highs() -> Any:
    """A ``highspy.Highs``; the first one per process is made with fd 1 silenced, because
    HiGHS prints its banner from C at first construction, which would corrupt output
    such as the CLI's JSON."""
    global _highs_banner_done
    import highspy

    if _highs_banner_done:
        return highspy.Highs()
    with _highs_lock:
        if _highs_banner_done:
            return highspy.Highs()
        sys.stdout.flush()
        saved = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 1)
            h = highspy.Highs()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(devnull)
        _highs_banner_done = True
        return h


def _solve_highs(cir: CompiledIR, time_limit: float) -> SolveResult:
    import highspy

    lp, quad, sign = _highs_lp(cir)
    h = _new_highs()
    with tempfile.TemporaryDirectory(prefix="optiforge-highs-") as tmp:
        log = os.path.join(tmp, "highs.log")
        h.setOptionValue("log_to_console", False)
        h.setOptionValue("log_file", log)
        h.setOptionValue("time_limit", float(time_limit))
        h.setOptionValue("threads", 1)
        if quad:
            import numpy as np

            model = highspy.HighsModel()
            model.lp_ = lp
            model.hessian_ = _hessian(highspy, np, quad, lp.num_col_, sign)
            status = h.passModel(model)
        else:
            status = h.passModel(lp)
        if status == highspy.HighsStatus.kError:
            return SolveResult(
                status=SolveStatus.ERROR,
                solver="highs",
                message="HiGHS rejected the model",
                log_tail=_tail(log),
            )
        t0 = time.perf_counter()
        h.run()
        if h.getModelStatus() == highspy.HighsModelStatus.kUnboundedOrInfeasible:
            # Presolve cannot tell which; solving without it usually can.
            h.setOptionValue("presolve", "off")
            h.run()
        elapsed = time.perf_counter() - t0
        log_tail = _tail(log)
    result = _highs_result(h, cir, flip=sign if quad else 1.0)
    return result.model_copy(update={"solve_time_s": elapsed, "log_tail": log_tail})


def _highs_lp(cir: CompiledIR) -> tuple[Any, dict[tuple[int, ...], float], float]:
    """The HiGHS LP of a (at most quadratic-objective) compiled IR.

    Returns ``(lp, quad, sign)``: ``quad`` holds the objective's quadratic terms; when there
    are any, the LP minimizes ``sign * objective`` (HiGHS needs a PSD Hessian), so a
    maximization is flipped.
    """
    import highspy
    import numpy as np

    inf = highspy.kHighsInf
    n = len(cir.variables)
    sign = -1.0 if cir.sense == "maximize" else 1.0
    obj = cir.objective
    cost = np.zeros(n)
    offset = 0.0
    quad: dict[tuple[int, ...], float] = {}
    if isinstance(obj, Poly):
        for k, c in obj.t.items():
            if len(k) == 0:
                offset += c
            elif len(k) == 1:
                cost[k[0]] += c
            else:
                quad[k] = quad.get(k, 0.0) + c
    elif isinstance(obj, (int, float)):
        offset = float(obj)

    lp = highspy.HighsLp()
    lp.num_col_ = n
    if quad:
        lp.col_cost_ = cost * sign
        lp.offset_ = offset * sign
        lp.sense_ = highspy.ObjSense.kMinimize
    else:
        lp.col_cost_ = cost
        lp.offset_ = offset
        lp.sense_ = (
            highspy.ObjSense.kMaximize if cir.sense == "maximize" else highspy.ObjSense.kMinimize
        )
    lp.col_lower_ = np.array([-inf if v.lb is None else v.lb for v in cir.variables])
    lp.col_upper_ = np.array([inf if v.ub is None else v.ub for v in cir.variables])
    if any(v.kind != "C" for v in cir.variables):
        lp.integrality_ = [
            highspy.HighsVarType.kContinuous if v.kind == "C" else highspy.HighsVarType.kInteger
            for v in cir.variables
        ]

    starts = [0]
    index: list[int] = []
    value: list[float] = []
    lower: list[float] = []
    upper: list[float] = []
    for r in cir.rows:
        body = r.body
        assert isinstance(body, Poly) and body.degree() <= 1  # guaranteed by classification
        const = 0.0
        for k, c in body.t.items():
            if not k:
                const = c
            elif c != 0.0:
                index.append(k[0])
                value.append(c)
        starts.append(len(index))
        lower.append(-inf if r.sense == "<=" else -const)
        upper.append(inf if r.sense == ">=" else -const)
    lp.num_row_ = len(cir.rows)
    lp.row_lower_ = np.array(lower)
    lp.row_upper_ = np.array(upper)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.start_ = np.array(starts, dtype=np.int32)
    lp.a_matrix_.index_ = np.array(index, dtype=np.int32)
    lp.a_matrix_.value_ = np.array(value)
    lp.a_matrix_.num_col_ = n
    lp.a_matrix_.num_row_ = len(cir.rows)
    return lp, quad, sign


def _highs_result(h: Any, cir: CompiledIR, *, flip: float) -> SolveResult:
    """Read a finished HiGHS run into a :class:`SolveResult` (``flip`` undoes a sign flip)."""
    import highspy

    ms = h.getModelStatus()
    info = h.getInfo()
    has_sol = info.primal_solution_status == 2  # kSolutionStatusFeasible
    mapping = {
        highspy.HighsModelStatus.kOptimal: SolveStatus.OPTIMAL,
        highspy.HighsModelStatus.kInfeasible: SolveStatus.INFEASIBLE,
        highspy.HighsModelStatus.kUnbounded: SolveStatus.UNBOUNDED,
        highspy.HighsModelStatus.kUnboundedOrInfeasible: SolveStatus.INFEASIBLE_OR_UNBOUNDED,
    }
    limits = {
        highspy.HighsModelStatus.kTimeLimit,
        highspy.HighsModelStatus.kIterationLimit,
        highspy.HighsModelStatus.kSolutionLimit,
        highspy.HighsModelStatus.kInterrupt,
        highspy.HighsModelStatus.kObjectiveBound,
        highspy.HighsModelStatus.kObjectiveTarget,
    }
    message = None
    if ms in mapping:
        status = mapping[ms]
    elif ms in limits:
        status = SolveStatus.FEASIBLE if has_sol else SolveStatus.TIME_LIMIT
        message = f"HiGHS stopped: {h.modelStatusToString(ms)}"
    else:
        status = SolveStatus.ERROR
        message = f"HiGHS failed: {h.modelStatusToString(ms)}"
    objective = None
    values: dict[str, float] = {}
    if status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE) and has_sol:
        col = list(h.getSolution().col_value)
        values = {v.label: float(x) for v, x in zip(cir.variables, col, strict=False)}
        objective = float(info.objective_function_value) * flip
    return SolveResult(
        status=status, objective=objective, variables=values, solver="highs", message=message
    )


def _hessian(highspy: Any, np: Any, quad: dict, n: int, sign: float) -> Any:
    """Lower-triangular column-wise Hessian Q with objective 0.5 x'Qx (times ``sign``)."""
    cols: dict[int, dict[int, float]] = {}
    for k, c in quad.items():
        i, j = k
        lo, hi = min(i, j), max(i, j)
        w = 2 * c if i == j else c
        cols.setdefault(lo, {})
        cols[lo][hi] = cols[lo].get(hi, 0.0) + w * sign
    start, index, value = [0], [], []
    for col in range(n):
        entries = cols.get(col, {})
        # HiGHS wants the diagonal first in each column of the triangular format.
        for row in sorted(entries, key=lambda r: (r != col, r)):
            index.append(row)
            value.append(entries[row])
        start.append(len(index))
    hess = highspy.HighsHessian()
    hess.dim_ = n
    hess.format_ = highspy.HessianFormat.kTriangular
    hess.start_ = np.array(start, dtype=np.int32)
    hess.index_ = np.array(index, dtype=np.int32)
    hess.value_ = np.array(value)
    return hess


# ---------------------------------------------------------------------------------------------
# SCIP


class _ScipBackend(Backend):
    name = "scip"

    def __init__(self, scip: Any):
        self.scip = scip

    def sum(self, terms: Any) -> Any:
        return self.scip.quicksum(terms)

    def func(self, name: str, args: list[Any]) -> Any:
        s = self.scip
        if name in ("min", "max"):
            acc = args[0]
            for b in args[1:]:
                # min(a,b) = (a+b-|a-b|)/2 and max(a,b) = (a+b+|a-b|)/2, exactly.
                d = abs(acc - b)
                acc = (acc + b - d) * 0.5 if name == "min" else (acc + b + d) * 0.5
            return acc
        (a,) = args
        if name == "abs":
            return abs(a)
        if name == "log10":
            return s.log(a) * (1.0 / math.log(10.0))
        return getattr(s, name)(a)


def _solve_scip(cir: CompiledIR, time_limit: float) -> SolveResult:
    import pyscipopt as scip

    m = scip.Model()
    m.hideOutput()
    vtype = {"C": "C", "I": "I", "B": "B"}
    svars = [m.addVar(name=v.label, vtype=vtype[v.kind], lb=v.lb, ub=v.ub) for v in cir.variables]
    # Rebuild the symbol table with SCIP variables in place of polynomials.
    sym = Symbols(
        sets=cir.symbols.sets,
        scalars=dict(cir.symbols.scalars),
        scalar_kind=cir.symbols.scalar_kind,
        indexed={},
        variable_names=cir.symbols.variable_names,
    )

    def swap(v: Any) -> Any:
        if isinstance(v, Poly):
            ((k, _),) = v.t.items()
            return svars[k[0]]
        return v

    for name, kind in cir.symbols.scalar_kind.items():
        if kind == "variable":
            sym.scalars[name] = swap(cir.symbols.scalars[name])
    for name, ent in cir.symbols.indexed.items():
        items = ent.items if ent.kind == "parameter" else {k: swap(v) for k, v in ent.items.items()}
        sym.indexed[name] = Indexed(ent.name, ent.kind, ent.index_sets, items)
    ev = Evaluator(sym, _ScipBackend(scip))

    try:
        for r in cir.rows:
            body = ev.value(r.lhs, r.env) - ev.value(r.rhs, r.env)
            if r.sense == "<=":
                m.addCons(body <= 0, name=r.label)
            elif r.sense == ">=":
                m.addCons(body >= 0, name=r.label)
            else:
                m.addCons(body == 0, name=r.label)
        obj = ev.value(cir.objective_node, {})
    except (ExprError, ArithmeticError, TypeError, ValueError) as e:
        return SolveResult(
            status=SolveStatus.ERROR, solver="scip", message=f"could not build the SCIP model: {e}"
        )
    sense = "maximize" if cir.sense == "maximize" else "minimize"
    offset = 0.0
    if isinstance(obj, (int, float)):
        offset = float(obj)
    elif isinstance(obj, scip.Expr) and obj.degree() <= 1:
        m.setObjective(obj, sense)
    else:
        # SCIP objectives must be linear: optimize an epigraph variable instead.
        t = m.addVar(name="__objective", lb=None, ub=None)
        m.addCons(obj - t <= 0 if sense == "minimize" else obj - t >= 0, name="__objective")
        m.setObjective(t, sense)
    m.setParam("limits/time", float(time_limit))
    with tempfile.TemporaryDirectory(prefix="optiforge-scip-") as tmp:
        log = os.path.join(tmp, "scip.log")
        m.setLogfile(log)
        t0 = time.perf_counter()
        try:
            m.optimize()
        except Exception as e:  # SCIP raises plain Exceptions on internal errors
            return SolveResult(
                status=SolveStatus.ERROR,
                solver="scip",
                solve_time_s=time.perf_counter() - t0,
                message=f"SCIP failed: {e}",
                log_tail=_tail(log),
            )
        elapsed = time.perf_counter() - t0
        m.setLogfile(None)
        log_tail = _tail(log)
    st = m.getStatus()
    nsols = m.getNSols()
    mapping = {
        "optimal": SolveStatus.OPTIMAL,
        "infeasible": SolveStatus.INFEASIBLE,
        "unbounded": SolveStatus.UNBOUNDED,
        "inforunbd": SolveStatus.INFEASIBLE_OR_UNBOUNDED,
    }
    message = None
    if st in mapping:
        status = mapping[st]
    elif st in (
        "timelimit",
        "nodelimit",
        "totalnodelimit",
        "stallnodelimit",
        "gaplimit",
        "sollimit",
        "bestsollimit",
        "userinterrupt",
        "memlimit",
        "restartlimit",
    ):
        status = SolveStatus.FEASIBLE if nsols > 0 else SolveStatus.TIME_LIMIT
        message = f"SCIP stopped: {st}"
    else:
        status = SolveStatus.ERROR
        message = f"SCIP ended with status {st!r}"
    if status == SolveStatus.UNBOUNDED and nsols > 0:
        message = "unbounded (SCIP found feasible points with ever better objective)"
    objective = None
    values: dict[str, float] = {}
    if status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE) and nsols > 0:
        sol = m.getBestSol()
        values = {
            v.label: float(m.getSolVal(sol, sv))
            for v, sv in zip(cir.variables, svars, strict=False)
        }
        objective = float(m.getSolObjVal(sol)) + offset
    return SolveResult(
        status=status,
        objective=objective,
        variables=values,
        solver="scip",
        solve_time_s=elapsed,
        log_tail=log_tail,
        message=message,
    )


__all__ = ["solve_ir"]
