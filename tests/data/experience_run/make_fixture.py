"""Write tests/data/experience_run (run from the repository root): a hand-made eval run on
NL4Opt training-split problems for the experience library tests (see tests/data/README.md).
"""

from __future__ import annotations

from pathlib import Path

from optiforge.datasets import load_dataset
from optiforge.evals.records import ResultRecord, RunMeta
from optiforge.evals.scoring import score_all
from optiforge.solvers import ModelIR, solve_ir


def v(name, desc, units, domain):
    return {
        "name": name,
        "domain": domain,
        "lb": 0.0,
        "ub": None,
        "units": units,
        "description": desc,
    }


def c(i, expr, src):
    return {"name": f"c{i}", "expression": expr, "source": src}


F = {
    "nl4opt-0003": {
        "name": "model",
        "variables": [
            v("senior", "number of senior accountants", "accountants", "integer"),
            v("junior", "number of junior accountants", "accountants", "integer"),
        ],
        "objective": {"sense": "minimize", "expression": "3000*senior + 1000*junior"},
        "constraints": [
            c(1, "senior + junior >= 100", "require at least 100 accountants"),
            c(2, "senior >= 5", "at least 5 must be senior accountants"),
            c(
                3,
                "3*senior >= junior",
                "the number of senior accountants should be at least a third of the number to junior accountants",
            ),
            c(4, "3000*senior + 1000*junior <= 150000", "keep the weekly wage bill below $150000"),
        ],
    },
    "nl4opt-0006": {
        "name": "model",
        "variables": [
            v("telecom", "dollars invested in telecom", "dollars", "continuous"),
            v("healthcare", "dollars invested in healthcare", "dollars", "continuous"),
        ],
        "objective": {"sense": "maximize", "expression": "0.03*telecom + 0.01*healthcare"},
        "constraints": [
            c(1, "telecom + healthcare <= 100000", "He has $100000 to invest"),
            c(
                2,
                "telecom >= 3*healthcare",
                "the amount invested in telecom be at least three times as much as the amount invested in healthcare",
            ),
            c(3, "telecom <= 70000", "the money invested in telecom must be at most $70000"),
        ],
    },
    "nl4opt-0012": {
        "name": "model",
        "variables": [
            v("condos", "dollars invested in condos", "dollars", "continuous"),
            v("houses", "dollars invested in detached houses", "dollars", "continuous"),
        ],
        "objective": {"sense": "maximize", "expression": "0.5*condos + 1*houses"},
        "constraints": [
            c(1, "condos + houses <= 760000", "a total budget of at most $760000"),
            c(
                2,
                "condos >= 0.2*(condos + houses)",
                "A minimum of 20% of all money invested must be in condos",
            ),
            c(3, "houses >= 20000", "at least $20000 must be in detached houses"),
        ],
    },
    "nl4opt-0052": {
        "name": "model",
        "variables": [
            v("high", "number of high intensity drills", "drills", "integer"),
            v("low", "number of low intensity drills", "drills", "integer"),
        ],
        "objective": {"sense": "minimize", "expression": "high + low"},
        "constraints": [
            c(1, "50*high + 30*low >= 800", "the factory must process 800 gems"),
            c(2, "50*high + 20*low <= 700", "they have available 700 units of water"),
            c(
                3,
                "high <= 0.4*(high + low)",
                "at most 40% of the drills can be high intensity ones",
            ),
            c(4, "low >= 10", "at least 10 should be low intensity drills"),
        ],
    },
}
# nl4opt-0018: answered by the code route (no formulation); nl4opt-0037: a wrong formulation
# (the coefficients grouped by product instead of by substance: a transposed matrix).
F_WRONG = {
    "name": "model",
    "variables": [
        v("oil_max", "containers of Oil Max", "containers", "integer"),
        v("oil_max_pro", "containers of Oil Max Pro", "containers", "integer"),
    ],
    "objective": {"sense": "maximize", "expression": "10*oil_max + 15*oil_max_pro"},
    "constraints": [
        c(1, "46*oil_max + 43*oil_max_pro <= 1345", "1345 grams of substance A"),
        c(2, "56*oil_max + 13*oil_max_pro <= 346", "346 grams of substance B"),
        c(3, "4*oil_max + 45*oil_max_pro <= 1643", "1643 grams of substance C"),
    ],
}

ids = ["nl4opt-0003", "nl4opt-0006", "nl4opt-0012", "nl4opt-0052", "nl4opt-0018", "nl4opt-0037"]
probs = {p.id: p for p in load_dataset("nl4opt", ids=ids)}
out = Path("tests/data/experience_run")
lines = []
for pid in ids:
    p = probs[pid]
    ir = F.get(pid) or (F_WRONG if pid == "nl4opt-0037" else None)
    if ir is not None:
        res = solve_ir(ModelIR.from_json(ir))
        assert res.ok, (pid, res)
        pred = res.objective
    else:
        pred = p.answer  # the code route's program got it right
    rec = ResultRecord(
        id=pid,
        dataset="nl4opt",
        category=p.category or "",
        text=p.text,
        gt=p.answer,
        gt_kind=p.answer_kind,
        prediction=pred,
        prediction_kind="value",
        solve_status="optimal",
        correct=score_all(pred, "value", p.answer, p.answer_kind),
        executed=True,
        agent="team",
        samples=3,
        formulation=ir,
        code="# program of the code route" if ir is None else None,
    )
    if not rec.correct["strict_1e-6"]:
        rec.failure_class = "formulation"
    print(pid, p.answer, pred, rec.correct)
    lines.append(rec.model_dump_json(exclude_defaults=False))
(out / "results.jsonl").write_text("\n".join(lines) + "\n")
meta = RunMeta(
    dataset="nl4opt",
    agent="team",
    model="hand-made fixture",
    samples=3,
    filters={"ids": ids, "sample": None},
    planned_ids=ids,
    command="hand-made: tests/data/README.md, experience_run",
)
(out / "run.json").write_text(meta.model_dump_json(indent=1) + "\n")
