"""solve_ir: gold replay with HiGHS, SCIP on nonlinear problems with known optima, statuses."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from optiforge.solvers import (
    IRValidationError,
    ModelIR,
    SolverError,
    SolveStatus,
    classify_ir,
    solve_ir,
)

_spec = importlib.util.spec_from_file_location("solvers_gold", Path(__file__).with_name("gold.py"))
_gold = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_gold)
gold_to_ir, load_gold = _gold.gold_to_ir, _gold.load_gold
GOLD = load_gold()


def close(a: float | None, b: float, tol: float = 1e-6) -> bool:
    return a is not None and abs(a - b) / (abs(b) + 1) < tol


def test_gold_has_20_records():
    assert len(GOLD) == 20


@pytest.mark.parametrize("rec", GOLD, ids=[r["id"] for r in GOLD])
def test_gold_lp_and_milp(rec):
    lp = solve_ir(gold_to_ir(rec, integer=False))
    assert lp.status == SolveStatus.OPTIMAL and lp.solver == "highs"
    assert close(lp.objective, rec["expected_objective_continuous"]), lp
    milp = solve_ir(gold_to_ir(rec, integer=True))
    assert milp.status == SolveStatus.OPTIMAL
    assert close(milp.objective, rec["expected_objective_integer"]), milp
    # relax_integrality turns the MILP back into the LP.
    relaxed = solve_ir(gold_to_ir(rec, integer=True), relax_integrality=True)
    assert close(relaxed.objective, rec["expected_objective_continuous"])
    # Values satisfy integrality and reproduce the objective.
    assert all(abs(v - round(v)) < 1e-6 for v in milp.variables.values())


def test_gold_milp_through_scip_agrees():
    for rec in GOLD[:5]:
        r = solve_ir(gold_to_ir(rec, integer=True), solver="scip")
        assert r.solver == "scip" and close(r.objective, rec["expected_objective_integer"])


def ir(variables, objective, constraints=(), sense="minimize", **extra) -> ModelIR:
    return ModelIR.model_validate(
        {
            "variables": variables,
            "objective": {"sense": sense, "expression": objective},
            "constraints": [
                {"name": f"c{k}", "expression": c} if isinstance(c, str) else c
                for k, c in enumerate(constraints)
            ],
            **extra,
        }
    )


FREE = {"lb": None}


def test_convex_qp_goes_to_highs_and_matches_scip():
    model = ir([{"name": "x", **FREE}, {"name": "y", **FREE}], "(x - 1)**2 + (y - 2)**2 + x*y")
    cls = classify_ir(model)
    assert cls.problem_class == "QP" and cls.convex_objective and cls.solver == "highs"
    h = solve_ir(model)
    s = solve_ir(model, solver="scip")
    assert h.solver == "highs" and s.solver == "scip"
    assert close(h.objective, 1.0, 1e-5) and close(s.objective, 1.0, 1e-5)
    assert abs(h.variables["x"]) < 1e-4 and abs(h.variables["y"] - 2) < 1e-4


def test_concave_max_qp_goes_to_highs():
    model = ir([{"name": "x", **FREE}], "-(x - 3)**2 + 5", sense="maximize")
    r = solve_ir(model)
    assert r.solver == "highs" and close(r.objective, 5.0, 1e-6)


def test_product_of_variables_nonconvex():
    model = ir(
        [{"name": "x", "ub": 10}, {"name": "y", "ub": 10}], "x*y", ["x + 2*y <= 10"], "maximize"
    )
    cls = classify_ir(model)
    assert cls.problem_class == "QP" and cls.convex_objective is False and cls.solver == "scip"
    r = solve_ir(model)
    assert r.status == SolveStatus.OPTIMAL and r.solver == "scip"
    assert close(r.objective, 12.5, 1e-6)
    with pytest.raises(SolverError, match="not convex"):
        solve_ir(model, solver="highs")


def test_quadratic_constraint():
    model = ir(
        [{"name": "x", "ub": 10}, {"name": "y", "ub": 10}], "x + y", ["x*y <= 4"], "maximize"
    )
    assert classify_ir(model).problem_class == "QCP"
    assert close(solve_ir(model).objective, 10.4, 1e-6)


def test_integer_nonlinear():
    model = ir(
        [{"name": "x", "domain": "integer", **FREE}, {"name": "y", "domain": "integer", **FREE}],
        "(x - 2.6)**2 + (y - 1.4)**2",
    )
    cls = classify_ir(model)
    assert cls.problem_class == "MIQP" and cls.solver == "scip"
    r = solve_ir(model)
    assert close(r.objective, 0.32, 1e-6)
    assert r.variables == pytest.approx({"x": 3.0, "y": 1.0})
    # Relaxed it is a convex QP that HiGHS solves.
    rr = solve_ir(model, relax_integrality=True)
    assert rr.solver == "highs" and close(rr.objective, 0.0, 1e-6)


def test_exp_log_sqrt_division():
    r = solve_ir(ir([{"name": "x", **FREE}], "exp(x) - 2*x"))
    assert classify_ir(ir([{"name": "x"}], "exp(x)")).problem_class == "NLP"
    assert close(r.objective, 2 - 2 * math.log(2), 1e-5)
    r = solve_ir(
        ir([{"name": "x"}, {"name": "y"}], "sqrt(x) + sqrt(y)", ["x + y <= 2"], "maximize")
    )
    assert close(r.objective, 2.0, 1e-5)
    r = solve_ir(ir([{"name": "x", "lb": 0.5, "ub": 10}], "x + 4/x"))
    assert close(r.objective, 4.0, 1e-5) and abs(r.variables["x"] - 2) < 1e-3
    r = solve_ir(ir([{"name": "x", "lb": 1, "ub": 100}], "log10(x) + log(x)", sense="maximize"))
    assert close(r.objective, 2 + math.log(100), 1e-5)


def test_abs_min_max():
    r = solve_ir(ir([{"name": "x", **FREE}], "abs(x - 3) + 1"))
    assert close(r.objective, 1.0, 1e-6) and abs(r.variables["x"] - 3) < 1e-5
    r = solve_ir(
        ir(
            [{"name": "x", "ub": 10}, {"name": "y", "ub": 10}],
            "min(x, y)",
            ["x + 3*y <= 12"],
            "maximize",
        )
    )
    assert close(r.objective, 3.0, 1e-5)
    r = solve_ir(
        ir([{"name": "x", "lb": -5, "ub": 5}], "max(x, 2 - x, 0.5)"),
    )
    assert close(r.objective, 1.0, 1e-5)


def test_infeasible_unbounded_and_constant_constraints():
    r = solve_ir(ir([{"name": "x"}], "x", ["x <= -1"], "maximize"))
    assert r.status == SolveStatus.INFEASIBLE and r.objective is None
    r = solve_ir(ir([{"name": "x"}], "x", ["x >= 1"], "maximize"))
    assert r.status == SolveStatus.UNBOUNDED and not r.ok
    r = solve_ir(ir([{"name": "x", "domain": "integer"}], "x", ["2*x == 1"], "maximize"))
    assert r.status == SolveStatus.INFEASIBLE
    r = solve_ir(ir([{"name": "x"}], "x", ["x <= 1", "1 >= 2"], "maximize", parameters=[]))
    assert r.status == SolveStatus.INFEASIBLE and "c1" in (r.message or "")
    r = solve_ir(ir([{"name": "x"}], "x", ["x*x <= -1"], "maximize"))
    assert r.status == SolveStatus.INFEASIBLE and r.solver == "scip"


def test_strict_inequality_warning_reaches_the_result():
    r = solve_ir(ir([{"name": "x"}, {"name": "y"}], "x", ["x < y", "y <= 3"], "maximize"))
    assert r.status == SolveStatus.OPTIMAL and close(r.objective, 3.0)
    assert "strict" in (r.message or "")


def test_time_limit_is_a_result():
    # A knapsack-like MILP with many symmetric items and a tiny limit.
    n = 60
    model = ModelIR.model_validate(
        {
            "sets": [{"name": "I", "elements": [str(i) for i in range(n)]}],
            "parameters": [
                {"name": "w", "index_sets": ["I"], "values": [1000 + 7 * i for i in range(n)]},
                {
                    "name": "v",
                    "index_sets": ["I"],
                    "values": [1000 + 7 * i + (i % 3) for i in range(n)],
                },
            ],
            "variables": [{"name": "x", "index_sets": ["I"], "domain": "binary"}],
            "objective": {"sense": "maximize", "expression": "sum(v[i]*x[i] for i in I)"},
            "constraints": [
                {"name": "cap", "expression": "sum(w[i]*x[i] for i in I) <= 20000.5"},
                {"name": "card", "expression": "sum(x[i] for i in I) <= 17"},
            ],
        }
    )
    r = solve_ir(model, time_limit=0.001)
    assert r.status in (SolveStatus.FEASIBLE, SolveStatus.TIME_LIMIT, SolveStatus.OPTIMAL)
    assert r.solve_time_s is not None and r.solve_time_s < 5


def test_indexed_transport_model():
    model = ModelIR.model_validate(
        {
            "name": "transport",
            "sets": [
                {"name": "PLANTS", "elements": ["seattle", "san_diego"]},
                {"name": "MARKETS", "elements": ["new_york", "chicago", "topeka"]},
            ],
            "parameters": [
                {"name": "supply", "index_sets": ["PLANTS"], "values": [350, 600]},
                {"name": "demand", "index_sets": ["MARKETS"], "values": [325, 300, 275]},
                {
                    "name": "dist",
                    "index_sets": ["PLANTS", "MARKETS"],
                    "values": [2.5, 1.7, 1.8, 2.5, 1.8, 1.4],
                },
                {"name": "freight", "values": [90]},
            ],
            "variables": [{"name": "ship", "index_sets": ["PLANTS", "MARKETS"]}],
            "objective": {
                "sense": "minimize",
                "expression": "sum(freight*dist[p,m]/1000*ship[p,m] for p in PLANTS for m in MARKETS)",
            },
            "constraints": [
                {
                    "name": "supply",
                    "expression": "sum(ship[p,m] for m in MARKETS) <= supply[p]",
                    "for_all": "p in PLANTS",
                },
                {
                    "name": "demand",
                    "expression": "sum(ship[p,m] for p in PLANTS) >= demand[m]",
                    "for_all": "m in MARKETS",
                },
            ],
        }
    )
    # This is a name clash on purpose: a constraint may share a parameter's name.
    r = solve_ir(model)
    assert r.status == SolveStatus.OPTIMAL
    assert close(r.objective, 153.675, 1e-6)  # the classic GAMS trnsport optimum
    assert set(r.variables) == {
        f"ship[{p},{m}]"
        for p in ("seattle", "san_diego")
        for m in ("new_york", "chicago", "topeka")
    }


def test_solve_ir_accepts_json_and_rejects_invalid():
    text = ir([{"name": "x", "ub": 4}], "2*x", sense="maximize").model_dump_json()
    assert close(solve_ir(text).objective, 8.0)
    with pytest.raises(IRValidationError, match="unknown variable 'q'"):
        solve_ir({"variables": [{"name": "x"}], "objective": {"sense": "max", "expression": "q"}})
    with pytest.raises(SolverError):
        solve_ir(text, solver="gurobi")  # type: ignore[arg-type]
    with pytest.raises(SolverError):
        solve_ir(text, time_limit=0)


def test_solve_ir_keeps_stdout_clean():
    import subprocess
    import sys

    code = (
        "from optiforge.solvers import solve_ir\n"
        "r = solve_ir({'variables': [{'name': 'x', 'ub': 3}],"
        " 'objective': {'sense': 'max', 'expression': 'x'}})\n"
        "print(r.objective)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "3.0\n"


def test_concurrent_solves_from_threads():
    from concurrent.futures import ThreadPoolExecutor

    jobs = [
        (rec, integer, solver)
        for rec in GOLD
        for integer in (True, False)
        for solver in ("highs", "scip")
    ]

    def run(job):
        rec, integer, solver = job
        r = solve_ir(gold_to_ir(rec, integer=integer), solver=solver)
        key = "expected_objective_integer" if integer else "expected_objective_continuous"
        return close(r.objective, rec[key])

    with ThreadPoolExecutor(max_workers=8) as ex:
        assert all(ex.map(run, jobs))
