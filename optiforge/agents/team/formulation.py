"""Turn a formulator's draft into a valid :class:`ModelIR`, and decide integrality.

Small models write expressions the way people do: ``x = 5``, ``3x + 2y <= 10``,
``x >= 30 && y >= 50``, ``1,000``, ``30%``, ``2^x``. These are fixed here deterministically
(each fix is listed in ``notes``) so that a repair round is spent only on real modelling
errors. A constraint that points against the words of its limit ("at least 150" written
as ``<= 150``) is flipped here too (:mod:`~optiforge.agents.team.directions`). Integrality is decided from the words of each variable (units, "number of"), not
trusted to the model alone: a 1.5B model makes nearly everything integer, kilograms too.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from optiforge.agents.team.directions import fix_directions
from optiforge.agents.team.schemas import FormulationDraft

Domain = Literal["integer", "continuous", "binary"]

_RESERVED = {"sum", "exp", "log", "log10", "sqrt", "abs", "min", "max", "sin", "cos", "range"}

# Words that mark a quantity measured on a continuous scale.
_CONTINUOUS_WORDS = re.compile(
    r"\b(kg|kgs|kilo\w*|grams?|g|mg|lbs?|pounds?|tons?|tonnes?|ounces?|oz|lit(?:er|re)s?|l|ml|"
    r"millilit\w*|gallons?|cups?|hours?|hrs?|minutes?|mins?|seconds?|acres?|hectares?|ha|"
    r"square|sq|meters?|metres?|km|miles?|feet|foot|ft|cubic|volume|weight|area|"
    r"dollars?|usd|money|amount|invest\w*|capital|budget|fraction|proportion|percent\w*|"
    r"share|portion|kwh|mwh|watts?|energy|electricity|fuel|water|milk|juice|oil|sugar|flour|"
    r"feed|fertili[sz]er|chemical|mixture|solution|paint|concrete|sand|units of \w+ per)\b"
    r"|\$",
    re.IGNORECASE,
)
# Words that mark a count of discrete things.
_INTEGER_WORDS = re.compile(
    r"\b(number of|how many|count|units?|items?|pieces?|people|persons?|workers?|employees?|"
    r"staff|trips?|vehicles?|trucks?|cars?|buses|bus|vans?|boats?|ships?|planes?|machines?|"
    r"batch(?:es)?|servings?|pills?|packages?|boxes|box|bottles?|cans?|bags?|shifts?|"
    r"products?|seats?|tickets?|ads?|advertisements?|stores?|plants?|factories|factory|"
    r"houses?|rooms?|animals?|chairs?|tables?|bikes?)\b",
    re.IGNORECASE,
)
_TEXT_CONTINUOUS = re.compile(
    r"\b(can be fractional|fractional (?:amounts?|values?|units?)|need not be (?:whole|integer)|"
    r"non-?integer|any real|continuous)\b",
    re.IGNORECASE,
)
_TEXT_INTEGER = re.compile(
    r"\b(whole numbers?|integers?|integral|must be whole|cannot be fractional|"
    r"can ?not be split|indivisible)\b",
    re.IGNORECASE,
)


@dataclass
class Normalized:
    """A draft made solvable: the IR dict, what was fixed, and the integrality decisions."""

    ir: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    #: variable name -> why its domain was chosen ("units 'kg'", "model said integer", ...)
    domain_reasons: dict[str, str] = field(default_factory=dict)
    #: True when some integrality choice rests only on the model's word.
    integrality_unclear: bool = False


def decide_domain(
    name: str, description: str, units: str, proposed: Domain, problem_text: str = ""
) -> tuple[Domain, str, bool]:
    """Choose a variable's domain; return ``(domain, reason, unclear)``.

    Order of evidence: binary stays binary; an explicit statement in the problem text
    ("can be fractional", "whole numbers"); units or description naming a measured quantity
    (kg, hours, acres, dollars invested) -> continuous; a count ("number of", trucks,
    workers) -> integer; otherwise the model's proposal, flagged as unclear.
    """
    if proposed == "binary":
        return "binary", "model chose a yes/no decision", False
    if problem_text and _TEXT_CONTINUOUS.search(problem_text):
        return "continuous", "the text allows fractional values", False
    if problem_text and _TEXT_INTEGER.search(problem_text):
        return "integer", "the text asks for whole numbers", False
    words = f"{units} {description}".strip()
    unit_hit = _CONTINUOUS_WORDS.search(units or "")
    if unit_hit:
        return "continuous", f"units {units!r} are a measured quantity", False
    count_hit = _INTEGER_WORDS.search(words) or _INTEGER_WORDS.search(name.replace("_", " "))
    cont_hit = _CONTINUOUS_WORDS.search(words)
    if cont_hit and not re.search(r"\bnumber of\b", words, re.IGNORECASE):
        return "continuous", f"{cont_hit.group(0)!r} is a measured quantity", False
    if count_hit:
        return "integer", f"{count_hit.group(0)!r} counts whole things", False
    return proposed, f"model chose {proposed}", True


def sanitize_name(raw: str, taken: set[str]) -> str:
    """A valid, unreserved, unique identifier for ``raw`` (e.g. ``'Color Printers'`` ->
    ``'color_printers'``)."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", raw.strip()).strip("_").lower() or "x"
    if name[0].isdigit():
        name = f"x_{name}"
    if keyword.iskeyword(name) or name in _RESERVED:
        name = f"{name}_"
    base, k = name, 2
    while name in taken:
        name = f"{base}_{k}"
        k += 1
    return name


_CMP = re.compile(r"<=|>=|==|=<|=>|≤|≥|<|>|=")


def clean_expression(text: str, names: dict[str, str]) -> str:
    """Rewrite people's notation into the IR's expression grammar.

    ``names`` maps each name the model used (and lower-case variants) to the sanitized one.
    """
    s = text.strip().rstrip(".;")
    s = (
        s.replace("≤", "<=")
        .replace("≥", ">=")
        .replace("−", "-")
        .replace("×", "*")
        .replace("·", "*")
        .replace("÷", "/")
        .replace("^", "**")
        .replace("=<", "<=")
        .replace("=>", ">=")
    )
    s = s.replace("$", "")
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)  # 1,000 -> 1000
    s = re.sub(r"(\d+(?:\.\d+)?)\s*%", r"(\1/100)", s)  # 30% -> (30/100)
    s = re.sub(r"(?<![<>=!])=(?!=)", "==", s)  # x = 5 -> x == 5
    # Rename variables the model wrote differently from their sanitized form.
    for raw, clean in sorted(names.items(), key=lambda kv: -len(kv[0])):
        if raw != clean:
            s = re.sub(rf"(?<![A-Za-z0-9_]){re.escape(raw)}(?![A-Za-z0-9_])", clean, s)
    # Implicit multiplication: 3x -> 3*x, 2(x + y) -> 2*(x + y), )( -> )*(
    s = re.sub(r"(\d)\s*([A-Za-z_(])", lambda m: _implicit(m), s)
    s = re.sub(r"\)\s*\(", ")*(", s)
    return s


def _implicit(m: re.Match[str]) -> str:
    digit, nxt = m.group(1), m.group(2)
    # keep scientific notation (1e5) as it is
    if nxt in "eE":
        return m.group(0)
    return f"{digit}*{nxt}"


def split_constraint(expression: str) -> list[str]:
    """Split ``a >= 1 && b <= 2`` / ``a >= 1 and b <= 2`` / ``a >= 1, b <= 2`` into parts.

    Only splits when every part is itself a comparison, so ``sum(..., ...)`` stays intact.
    """
    parts = re.split(r"\s*(?:&&|&|\band\b|;|,(?![^()]*\)))\s*", expression)
    parts = [p for p in parts if p.strip()]
    if len(parts) > 1 and all(_CMP.search(p) for p in parts):
        return parts
    return [expression]


_SELF_BOUND = re.compile(
    r"^\s*(?P<k>\d+(?:\.\d+)?)\s*\*\s*(?P<v>[A-Za-z_]\w*)\s*(?P<op><=|>=|==)\s*"
    r"(?P<r>\d+(?:\.\d+)?)\s*$"
)


def _self_bound(expr: str, notes: list[str]) -> str:
    """``10*minibuses <= 10`` as ``minibuses <= 10``: a bound on one variable whose
    coefficient is the bound itself is the limit written twice ("at most 10 minibuses"),
    not a limit of one (readme40's nl4opt-0174; optibench-0410's four demand limits)."""
    m = _SELF_BOUND.match(expr)
    if m is None or float(m["k"]) != float(m["r"]) or float(m["k"]) in (0.0, 1.0):
        return expr
    new = f"{m['v']} {m['op']} {m['r']}"
    notes.append(f"read {expr!r} as {new!r}: the bound was also written as the coefficient")
    return new


def normalize_draft(draft: FormulationDraft, problem_text: str = "") -> Normalized:
    """Build the IR dict for ``draft`` with deterministic fixes and integrality decisions.

    The result still has to pass :meth:`ModelIR.from_json`; errors that need modelling
    judgment (unknown names, nonsense expressions) are left for the critic and repair.
    """
    notes: list[str] = []
    taken: set[str] = set()
    names: dict[str, str] = {}
    variables = []
    reasons: dict[str, str] = {}
    unclear = False
    for v in draft.variables:
        clean = sanitize_name(v.name, taken)
        taken.add(clean)
        names[v.name] = clean
        if v.name.strip() != clean:
            names[v.name.strip()] = clean
            notes.append(f"renamed variable {v.name!r} to {clean!r}")
        domain, why, is_unclear = decide_domain(
            clean, v.description, v.units, v.domain, problem_text
        )
        unclear = unclear or is_unclear
        if domain != v.domain:
            notes.append(f"variable {clean!r}: {v.domain} -> {domain} ({why})")
        reasons[clean] = why
        variables.append(
            {
                "name": clean,
                "domain": domain,
                "lb": 0.0,
                "ub": 1.0 if domain == "binary" else None,
                "units": v.units,
                "description": v.description,
            }
        )
    objective = {
        "sense": draft.objective.sense,
        "expression": clean_expression(draft.objective.expression, names) or "0",
    }
    constraints = []
    seen: set[str] = set()
    for c in draft.constraints:
        pieces = split_constraint(c.expression)
        if len(pieces) > 1:
            notes.append(f"split {c.expression!r} into {len(pieces)} constraints")
        for piece in pieces:
            expr = clean_expression(piece, names)
            if not expr:
                continue
            if not _CMP.search(expr):
                notes.append(f"dropped {piece!r}: it compares nothing (no <=, >= or ==)")
                continue
            expr = _self_bound(expr, notes)
            if expr.replace(" ", "") in seen:
                notes.append(f"dropped duplicate constraint {expr!r}")
                continue
            seen.add(expr.replace(" ", ""))
            constraints.append(
                {"name": f"c{len(constraints) + 1}", "expression": expr, "source": c.source}
            )
    ir = {
        "name": "model",
        "variables": variables,
        "objective": objective,
        "constraints": constraints,
    }
    if problem_text:
        notes.extend(fix_directions(problem_text, ir))
    return Normalized(ir=ir, notes=notes, domain_reasons=reasons, integrality_unclear=unclear)


def with_domains(ir: dict[str, Any], domain: Domain | None) -> dict[str, Any]:
    """A copy of ``ir`` with every non-binary variable set to ``domain`` (None: unchanged)."""
    if domain is None:
        return ir
    out = dict(ir)
    out["variables"] = [
        v if v.get("domain") == "binary" else {**v, "domain": domain} for v in ir["variables"]
    ]
    return out


def ir_signature(ir: dict[str, Any]) -> str:
    """A canonical text of an IR, to notice duplicate formulations."""
    vs = ",".join(f"{v['name']}:{v.get('domain')}" for v in ir["variables"])
    cs = ";".join(sorted(c["expression"].replace(" ", "") for c in ir.get("constraints", [])))
    obj = ir["objective"]
    return f"{vs}|{obj['sense']}:{obj['expression'].replace(' ', '')}|{cs}"
