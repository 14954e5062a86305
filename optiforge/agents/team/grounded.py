"""Solver-grounded critique: concrete, checkable findings from the solution itself.

After a solve, the constraints' activity at the optimum (:mod:`optiforge.solvers.activity`)
and the variables that are zero are set against the problem text. Two findings come out
as :class:`~optiforge.agents.team.checks.Issue` items (``TeamConfig.grounded_critique``),
which the critic's LLM critique and the formulator's repair read like the other checks:

- ``grounded_requirement``: the text states a requirement for a quantity ("must produce at
  least 10 chairs", "some tables must be made") and that quantity's variable is 0 at the
  optimum; the message names the constraints that bind there (what pushed it to 0);
- ``grounded_unused_number``: a demand or resource number stated in a limiting sentence
  ("at most 100 hours of carpentry are available") that no expression of the model uses.

Both are warnings (heuristics over the words); a finding makes the attempt "suspicious",
so it votes with less weight and is a repair target. The text helpers (sentences, which
variable a sentence names, numbers) are shared with :mod:`.verify`.
"""

from __future__ import annotations

import re
from typing import Any

from optiforge.agents.team.checks import Issue
from optiforge.solvers.activity import ActivityError, RowActivity, constraint_activity
from optiforge.solvers.result import SolveResult

__all__ = [
    "grounded_issues",
    "mentioned_variables",
    "number_sentences",
    "numbers",
    "sentences",
]

_SENTENCE = re.compile(r"(?:[^.!?\n]|\.(?=\d))+(?:[.!?]|$)")
_WORD = re.compile(r"[a-z]+")
#: Words that say nothing about which quantity a variable is.
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "to",
        "for",
        "in",
        "on",
        "and",
        "or",
        "per",
        "each",
        "every",
        "number",
        "amount",
        "total",
        "quantity",
        "units",
        "unit",
        "how",
        "many",
        "much",
        "produced",
        "produce",
        "make",
        "made",
        "making",
        "build",
        "built",
        "sell",
        "sold",
        "buy",
        "bought",
        "use",
        "used",
        "decision",
        "variable",
        "variables",
        "value",
        "count",
        "be",
        "is",
        "are",
        "by",
        "with",
        "from",
        "at",
        "as",
        "that",
        "this",
    ]
)
#: Requirements: the quantity must be positive or reach a level.
_REQUIREMENT = re.compile(
    r"\b(must|at least|minimum|no less than|not less than|has to|have to|needs? to|"
    r"is required|are required|required to)\b",
    re.IGNORECASE,
)
#: Ratio and share words: such sentences relate quantities (both 0 can satisfy them).
_RATIO = re.compile(
    r"\b(times|ratio|percent|fraction|twice|thrice|half|third|quarter|as many|as much|more "
    r"than|less than|fewer than|proportion|share)\b|%",
    re.IGNORECASE,
)
#: Sentences that state a limit or a demand (a number in one belongs in a constraint).
_LIMIT = re.compile(
    r"\b(at most|at least|no more than|no less than|not exceed|cannot exceed|can't exceed|"
    r"up to|maximum|minimum|available|availability|capacity|budget|demand|limit|limited|"
    r"must|only|a total of|in total)\b",
    re.IGNORECASE,
)
_SOME = re.compile(r"\b(some|at least one|a positive|nonzero|non-zero)\b", re.IGNORECASE)
_EACH = re.compile(r"\b(each|every|both|all)\b", re.IGNORECASE)


_NUMBER = re.compile(r"(?<![A-Za-z_])(\d+(?:,\d{3})*(?:\.\d+)?)")


def numbers(text: str) -> set[float]:
    """The numbers written in ``text`` (``1,000`` is 1000; digits inside names are not)."""
    return {float(m.group(1).replace(",", "")) for m in _NUMBER.finditer(text)}


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` (split at . ! ? and line breaks, not at decimal points)."""
    return [s.strip() for s in _SENTENCE.findall(text) if s.strip()]


def _stem(word: str) -> str:
    """A crude singular: wraps -> wrap, batteries -> battery, boxes -> box, glass -> glass."""
    w = word.lower()
    if len(w) <= 3:
        return w
    if w.endswith("ies"):
        return w[:-3] + "y"
    if w.endswith(("sses", "ches", "shes", "xes", "zes")):
        return w[:-2]
    if w.endswith("s") and not w.endswith("ss"):
        return w[:-1]
    return w


def _keywords(variables: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Per variable, the stems of its name and description that no other variable shares."""
    raw: dict[str, set[str]] = {}
    for v in variables:
        words = _WORD.findall(
            f"{v.get('name', '')} {v.get('description', '')}".lower().replace("_", " ")
        )
        raw[v["name"]] = {_stem(w) for w in words if w not in _STOP and len(w) > 1}
    out = {}
    for name, stems in raw.items():
        others = set().union(*(s for n, s in raw.items() if n != name))
        out[name] = stems - others
    return out


def mentioned_variables(sentence: str, variables: list[dict[str, Any]]) -> list[str]:
    """The variables a sentence names, in the order it names them, matched by the words of
    each variable's name and description that tell it apart from the others ("color
    printers" -> ``color``, "wraps" -> ``wraps``)."""
    keys = _keywords(variables)
    words = [_stem(w) for w in _WORD.findall(sentence.lower())]
    first: dict[str, int] = {}
    for name, stems in keys.items():
        for i, w in enumerate(words):
            if w in stems:
                first[name] = i
                break
    return sorted(first, key=lambda n: first[n])


def number_sentences(text: str, values: set[float]) -> list[str]:
    """The sentences of ``text`` that state one of ``values`` (as written or as a %)."""
    want = {n for n in values if n not in (0.0, 1.0)}
    out = []
    for s in sentences(text):
        found = numbers(s)
        found |= {n / 100 for n in found}
        if found & want:
            out.append(s)
    return out


def _model_numbers(ir: dict[str, Any]) -> set[float]:
    exprs = [ir.get("objective", {}).get("expression", "")]
    exprs += [c.get("expression", "") for c in ir.get("constraints", [])]
    got: set[float] = set()
    for e in exprs:
        got |= numbers(e)
    for v in ir.get("variables", []):
        for b in (v.get("lb"), v.get("ub")):
            if isinstance(b, (int, float)):
                got.add(float(b))
    for p in ir.get("parameters", []) or []:
        got |= {float(x) for x in p.get("values", [])}
    return got | {n * 100 for n in got} | {n / 100 for n in got}


def _quote(s: str, n: int = 90) -> str:
    return s if len(s) <= n else s[: n - 3].rstrip() + "..."


def _binding_text(rows: list[RowActivity]) -> str:
    bound = [r for r in rows if r.binding]
    if not bound:
        return "no constraint binds"
    parts = []
    for r in bound[:3]:
        src = f", from '{_quote(r.source, 60)}'" if r.source else ""
        parts.append(f"{r.row} (`{r.expression}`{src})")
    more = f" and {len(bound) - 3} more" if len(bound) > 3 else ""
    return ", ".join(parts) + more + (" binds" if len(bound) == 1 else " bind")


def _value(values: dict[str, float], name: str) -> float | None:
    """A scalar variable's value, or the sum of an indexed one's components."""
    if name in values:
        return values[name]
    comps = [x for k, x in values.items() if k.startswith(f"{name}[")]
    return sum(comps) if comps else None


def grounded_issues(problem: str, ir: dict[str, Any], result: SolveResult | None) -> list[Issue]:
    """The solver-grounded findings on one solved attempt (empty when nothing is found or
    the attempt has no usable solution)."""
    if result is None or not result.ok or not ir.get("variables"):
        return []
    try:
        rows = constraint_activity(ir, result.variables)
    except ActivityError:
        return []
    variables = ir["variables"]
    issues: list[Issue] = []
    seen: set[str] = set()
    for s in sentences(problem):
        if not _REQUIREMENT.search(s) or _RATIO.search(s):
            continue
        named = mentioned_variables(s, variables)
        if not named or (len(named) > 1 and not _EACH.search(s)):
            continue
        if not (any(n > 0 for n in numbers(s)) or _SOME.search(s)):
            continue
        for name in named:
            x = _value(result.variables, name)
            if x is None or abs(x) > 1e-9 or name in seen:
                continue
            seen.add(name)
            issues.append(
                Issue(
                    check="grounded_requirement",
                    severity="warning",
                    message=f"{name} = 0 at the optimum although the text says "
                    f"'{_quote(s)}'; there {_binding_text(rows)}",
                    fix=f"add the requirement on {name} as a constraint (at least = >=), or "
                    "fix the binding constraint that forces it to 0",
                )
            )
    used = _model_numbers(ir)
    for s in sentences(problem):
        if not _LIMIT.search(s):
            continue
        missing = sorted(n for n in numbers(s) if n > 1 and n not in used)
        for n in missing[:2]:
            issues.append(
                Issue(
                    check="grounded_unused_number",
                    severity="warning",
                    message=f"the text says '{_quote(s)}' but no constraint uses {n:g}",
                    fix=f"add the limit or demand with {n:g} from that sentence as a constraint",
                )
            )
    return issues
