"""The result protocol between a sandboxed program and optiforge.

A program reports its result by calling ``report(...)``, a built-in provided by the sandbox
(no import needed). The call writes one JSON line to a private channel; the last valid line
wins. Programs that do not call it can print a line ``OBJECTIVE: <number>``, which the
fallback parser reads. See docs/solvers.md ("Sandbox result protocol").

This module is imported inside the sandbox worker; keep it standard-library only.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from typing import Any

#: Status words a program may pass to ``report(status=...)`` and what they mean.
STATUS_ALIASES = {
    "optimal": "optimal",
    "locallyoptimal": "optimal",
    "globallyoptimal": "optimal",
    "feasible": "feasible",
    "infeasible": "infeasible",
    "unbounded": "unbounded",
    "infeasibleorunbounded": "infeasible_or_unbounded",
    "inforunbd": "infeasible_or_unbounded",
    "time_limit": "time_limit",
    "timelimit": "time_limit",
    "maxtimelimit": "time_limit",
    "maxiterations": "time_limit",
    "maxevaluations": "time_limit",
    "convergencecriteriasatisfied": "optimal",
    "provenoptimal": "optimal",
    "proveninfeasible": "infeasible",
    "locallyinfeasible": "infeasible",
    "iterationlimit": "time_limit",
    "objectivelimit": "time_limit",
    "minsteplength": "time_limit",
    "interrupted": "time_limit",
    "error": "error",
    "solverfailure": "error",
    "internalsolvererror": "error",
    "invalidproblem": "error",
    "emptymodel": "error",
    "other": "error",
    "unknown": "error",
}

MAX_REPORT_BYTES = 1 << 20
MAX_REPORTED_VARIABLES = 100_000

_OBJECTIVE_LINE = re.compile(
    r"^\s*(?:optimal\s+|best\s+|final\s+)?(?:objective|obj)(?:\s+(?:value|function\s+value))?"
    r"\s*[:=]\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf(?:inity)?|nan)\s*$",
    re.IGNORECASE | re.MULTILINE,
)


class ReportError(TypeError):
    """``report()`` was called with arguments it cannot use."""


def normalize_status(status: Any) -> str:
    """Map a status (our words, Pyomo TerminationCondition, SCIP strings) to SolveStatus."""
    if status is None:
        return "optimal"
    raw = getattr(status, "name", None) or str(status)
    key = re.sub(r"[^a-z_]", "", raw.split(".")[-1].lower())
    key_nounder = key.replace("_", "")
    for k in (key, key_nounder):
        if k in STATUS_ALIASES:
            return STATUS_ALIASES[k]
    raise ReportError(
        f"report(status={status!r}): unknown status; use one of optimal, feasible, "
        "infeasible, unbounded, infeasible_or_unbounded, time_limit, error"
    )


def _number(v: Any, what: str) -> float:
    if v is None:
        raise ReportError(f"{what} is None")
    try:
        val = v() if callable(v) and not isinstance(v, (int, float)) else v
        val = getattr(val, "value", val) if not isinstance(val, (int, float)) else val
        f = float(val)
    except Exception:
        raise ReportError(f"{what} must be a number, got {type(v).__name__} {v!r:.60}") from None
    return f


def _pyomo_values(model: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        from pyomo.environ import Var
    except ImportError:  # pragma: no cover - pyomo is always there in the sandbox
        return out
    for comp in model.component_data_objects(Var, active=True, descend_into=True):
        if comp.value is not None:
            out[comp.name] = float(comp.value)
    return out


def _pyomo_objective(model: Any) -> float | None:
    try:
        from pyomo.environ import Objective, value
    except ImportError:  # pragma: no cover
        return None
    objs = list(model.component_data_objects(Objective, active=True, descend_into=True))
    if len(objs) != 1:
        raise ReportError("report(model=...): the model must have exactly one active objective")
    try:
        return float(value(objs[0]))
    except Exception:
        return None


def _results_status(results: Any) -> Any:
    """Termination condition of a Pyomo (legacy or appsi) results object."""
    solver = getattr(results, "solver", None)
    tc = getattr(solver, "termination_condition", None)
    if tc is None:
        tc = getattr(results, "termination_condition", None)
    return tc


def build_report(
    objective: Any = None,
    status: Any = None,
    variables: Any = None,
    *,
    model: Any = None,
    results: Any = None,
    message: str | None = None,
) -> dict[str, Any]:
    """Validate ``report()`` arguments and return the JSON-ready payload."""
    if results is not None and status is None:
        status = _results_status(results)
    st = normalize_status(status)
    if model is not None:
        if variables is None:
            variables = _pyomo_values(model)
        if objective is None and st in ("optimal", "feasible"):
            objective = _pyomo_objective(model)
    obj: float | None = None
    if objective is not None:
        obj = _number(objective, "report(objective=...)")
        if math.isnan(obj):
            raise ReportError("report(objective=...) is NaN")
        if not math.isfinite(obj):
            raise ReportError(
                f"report(objective=...) is {obj}, not a finite number; for an unbounded "
                "model call report(status='unbounded') without an objective"
            )
    if st in ("optimal", "feasible") and obj is None:
        raise ReportError(
            f"report(status={st!r}) needs objective=<number> (or model=<solved Pyomo model>)"
        )
    vals: dict[str, float] = {}
    if variables is not None:
        if hasattr(variables, "component_data_objects"):
            vals = _pyomo_values(variables)
        elif isinstance(variables, dict):
            if len(variables) > MAX_REPORTED_VARIABLES:
                raise ReportError(f"report(variables=...) has more than {MAX_REPORTED_VARIABLES}")
            for k, v in variables.items():
                vals[str(k)] = _number(v, f"report(variables=...)[{k!r}]")
                if not math.isfinite(vals[str(k)]):
                    raise ReportError(f"report(variables=...)[{k!r}] is {vals[str(k)]}, not finite")
        else:
            raise ReportError(
                "report(variables=...) must be a dict {name: value} or a Pyomo model, got "
                f"{type(variables).__name__}"
            )
    msg = None if message is None else str(message)[:2000]
    return {"objective": obj, "status": st, "variables": vals, "message": msg}


def _pyomo_polynomial(model: Any) -> bool:
    """True when every active objective and constraint has polynomial degree <= 1."""
    from pyomo.environ import Constraint, Objective

    for obj in model.component_data_objects(Objective, active=True, descend_into=True):
        d = obj.expr.polynomial_degree()
        if d is None or d > 1:
            return False
    for con in model.component_data_objects(Constraint, active=True, descend_into=True):
        d = con.body.polynomial_degree()
        if d is None or d > 1:
            return False
    return True


def solve_pyomo(model: Any, solver: str = "auto", time_limit: float = 60.0) -> Any:
    """Solve a Pyomo model; never raises because it is infeasible or unbounded.

    ``solver="auto"`` uses HiGHS (``appsi_highs``) when the model is linear (LP/MILP) and
    SCIP (``scip_direct``) otherwise (products or powers of variables, ``exp``, ...). The
    solution is loaded into the model when there is one. Returns Pyomo's results; pass
    them on: ``report(model=m, results=solve_pyomo(m))``. Built into the sandbox.
    """
    import pyomo.environ as pyo

    name = solver
    if solver == "auto":
        name = "appsi_highs" if _pyomo_polynomial(model) else "scip_direct"
    opt = pyo.SolverFactory(name)
    if name == "appsi_highs":
        opt.config.time_limit = float(time_limit)
    elif name == "scip_direct":
        opt.options["limits/time"] = float(time_limit)
    results = opt.solve(model, load_solutions=False)
    tc = _results_status(results)
    tc_name = getattr(tc, "name", str(tc))
    if tc_name in ("optimal", "locallyOptimal", "globallyOptimal", "feasible", "maxTimeLimit"):
        # A limit without an incumbent leaves nothing to load.
        with contextlib.suppress(Exception):
            model.solutions.load_from(results)
    return results


def parse_report_text(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """The last valid report line of the channel, or (None, why) if none is valid."""
    last_error = None
    for line in reversed(text.splitlines()):
        line = line.strip()
        if not line:
            continue
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            st = normalize_status(data.get("status"))
            obj = data.get("objective")
            if obj is not None:
                obj = float(obj)
                if not math.isfinite(obj):
                    raise ValueError(f"objective {obj} is not a finite number")
            if st in ("optimal", "feasible") and obj is None:
                raise ValueError("optimal/feasible without objective")
            raw_vars = data.get("variables") or {}
            if not isinstance(raw_vars, dict):
                raise ValueError("variables is not an object")
            variables = {str(k): float(v) for k, v in raw_vars.items()}
            bad = [k for k, v in variables.items() if not math.isfinite(v)]
            if bad:
                raise ValueError(f"variable {bad[0]!r} is {variables[bad[0]]}, not finite")
            msg = data.get("message")
            return {
                "objective": obj,
                "status": st,
                "variables": variables,
                "message": None if msg is None else str(msg)[:2000],
            }, None
        except (ValueError, TypeError, ReportError) as e:
            last_error = f"invalid report line ({e}): {line[:200]!r}"
    return None, last_error


def parse_objective_text(stdout: str) -> tuple[float | None, str | None]:
    """Fallback: ``(value, None)`` from the last line like ``OBJECTIVE: 123.5`` in
    ``stdout``; ``(None, why)`` when that line's number is not finite (``inf``, ``nan``,
    ``1e309``); ``(None, None)`` when there is no such line.

    Accepted forms (case-insensitive): ``Objective: v``, ``Objective value: v``,
    ``Optimal objective value = v``, ``obj = v``.
    """
    matches = list(_OBJECTIVE_LINE.finditer(stdout or ""))
    if not matches:
        return None, None
    last = matches[-1]
    try:
        v = float(last.group(1))
    except ValueError:  # pragma: no cover - the pattern only matches numbers
        return None, None
    if not math.isfinite(v):
        line = last.group(0).strip()[:200]
        return None, f"the printed objective {line!r} is {v}, not a finite number"
    return v, None


def parse_objective_line(stdout: str) -> float | None:
    """The finite value of the last ``OBJECTIVE: <number>`` line, else None (see
    :func:`parse_objective_text`)."""
    return parse_objective_text(stdout)[0]
