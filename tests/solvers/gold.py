"""Build model IRs from the NL4Opt gold formulations (shared test helper)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from optiforge.solvers import ModelIR

#: Shipped with the tests (source and licence in tests/data/README.md).
GOLD_PATH = Path(__file__).resolve().parents[1] / "data" / "nl4opt_gold_formulations.jsonl"


def load_gold() -> list[dict]:
    """The 20 gold records (one dict per line)."""
    return [json.loads(line) for line in GOLD_PATH.read_text().splitlines() if line.strip()]


def _ident(name: str) -> str:
    s = re.sub(r"\W+", "_", name.strip().lower()).strip("_")
    return s if s and not s[0].isdigit() else f"v_{s}"


def gold_to_ir(rec: dict, *, integer: bool) -> ModelIR:
    """The record's canonical form as an IR with one scalar variable per column, x >= 0."""
    cf = rec["canonical_form"]
    n = len(cf["objective_coefficients"])
    mapping = rec["gold_formulation_nl4opt"]["order_mapping"]
    names: list[str] = []
    for i in range(n):
        first = next(k for k, v in mapping.items() if v == i)
        cand = _ident(first)
        while cand in names:
            cand += "_"
        names.append(cand)

    def lin(coefs: list[float]) -> str:
        terms = [f"{c!r}*{v}" for c, v in zip(coefs, names, strict=False) if c != 0]
        return " + ".join(terms) or "0"

    return ModelIR.model_validate(
        {
            "name": rec["id"].replace("-", "_"),
            "variables": [
                {"name": v, "domain": "integer" if integer else "continuous", "lb": 0}
                for v in names
            ],
            "objective": {
                "sense": "maximize" if cf["sense"] == "max" else "minimize",
                "expression": lin(cf["objective_coefficients"]),
            },
            "constraints": [
                {
                    "name": f"c{k + 1}",
                    "expression": f"{lin(row['coefficients'])} {row['operator']} {row['rhs']!r}",
                }
                for k, row in enumerate(cf["constraints"])
            ],
        }
    )
