"""The critic's deterministic checks: cheap, reliable tests of a solved formulation.

Each check looks at the problem text, the IR and the solver result, and returns
:class:`Issue` records with a concrete fix. Some fixes are applied without asking a model
(flip the objective sense, restore integrality); the others go to the formulator's repair
round as feedback.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Literal

from pydantic import BaseModel

from optiforge.solvers.result import SolveResult, SolveStatus

Severity = Literal["error", "warning"]


class Issue(BaseModel):
    """One finding of the critic."""

    check: str
    severity: Severity
    message: str
    fix: str = ""
    #: A deterministic fix the team may apply itself: "flip_sense", "integer:<var>", ...
    action: str | None = None


_MAX_WORDS = re.compile(
    r"\b(maximi[sz]e|maximum|maximi[sz]ing|as (?:much|many) as possible|most|largest|highest|"
    r"greatest)\b",
    re.IGNORECASE,
)
_MIN_WORDS = re.compile(
    r"\b(minimi[sz]e|minimum|minimi[sz]ing|as (?:little|few) as possible|least|smallest|lowest|"
    r"fewest|cheapest)\b",
    re.IGNORECASE,
)
_GOAL_SENTENCE = re.compile(r"[^.?!]*\b(?:maximi[sz]e|minimi[sz]e)\b[^.?!]*[.?!]?", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![A-Za-z_])(\d+(?:,\d{3})*(?:\.\d+)?)")
_COUNT_QUESTION = re.compile(r"\bhow many\b|\bnumber of\b", re.IGNORECASE)


def implied_sense(problem_text: str) -> str | None:
    """``"maximize"``/``"minimize"`` when the goal sentence says so unambiguously, else None."""
    goals = _GOAL_SENTENCE.findall(problem_text)
    text = " ".join(goals) if goals else problem_text[-300:]
    has_max = bool(re.search(r"\bmaximi[sz]", text, re.IGNORECASE))
    has_min = bool(re.search(r"\bminimi[sz]", text, re.IGNORECASE))
    if has_max and not has_min:
        return "maximize"
    if has_min and not has_max:
        return "minimize"
    if goals:
        return None
    if _MAX_WORDS.search(text) and not _MIN_WORDS.search(text):
        return "maximize"
    if _MIN_WORDS.search(text) and not _MAX_WORDS.search(text):
        return "minimize"
    return None


def _numbers(text: str) -> set[float]:
    out = set()
    for m in _NUMBER.finditer(text):
        with contextlib.suppress(ValueError):
            out.add(float(m.group(1).replace(",", "")))
    return out


def numbers_in(text: str) -> set[float]:
    """Every number written in ``text`` (``1,200`` -> 1200.0): what the number checks read
    (the extraction step's checks use it too)."""
    return _numbers(text)


def _fractional(values: dict[str, float], names: set[str]) -> list[str]:
    return [n for n, v in values.items() if n in names and abs(v - round(v)) > 1e-6]


#: What an all-zero solution means, by objective sense: (message, fix).
_ZERO_SOLUTION = {
    "maximize": (
        "every variable is 0 in a maximization: a constraint probably points the wrong way "
        "or a coefficient is missing",
        "check directions of the constraints and the objective coefficients",
    ),
    # Word problems that minimize a cost always demand something (a minimum to produce, to
    # feed, to cover); doing nothing means that demand was left out.
    "minimize": (
        "every variable is 0 in a minimization: a requirement from the text (a minimum to "
        "meet or cover) is probably missing or points the wrong way",
        "add each 'at least' requirement of the text as a >= constraint",
    ),
}


def check_solution(
    problem_text: str,
    ir: dict[str, Any],
    result: SolveResult | None,
    *,
    error: str | None = None,
    relaxed: bool = False,
) -> list[Issue]:
    """Run every deterministic check; return the issues found (empty = nothing to say).

    ``relaxed`` says the result was solved with integrality relaxed on purpose.
    """
    if error:
        return [_build_issue(error)]
    sense = ir.get("objective", {}).get("sense")
    want = implied_sense(problem_text)
    exprs = [ir.get("objective", {}).get("expression", "")] + [
        c.get("expression", "") for c in ir.get("constraints", [])
    ]
    issues = [
        *_sense_issues(want, sense),
        *_unused_variable_issues(ir, exprs),
        *_constraint_issues(ir),
        *_number_issues(problem_text, exprs),
    ]
    if result is None:
        return issues
    if result.status in _STATUS_ISSUES:
        return [*issues, _status_issue(result, sense)]
    if result.ok:
        issues += _solution_issues(ir, result, sense, want, relaxed=relaxed)
    return issues


def _build_issue(error: str) -> Issue:
    return Issue(
        check="build",
        severity="error",
        message=f"the model could not be built: {error[:600]}",
        fix="rewrite the expressions named in the error with declared variable names, "
        "numbers, + - * / and one <=, >= or == per constraint",
    )


def _sense_issues(want: str | None, sense: str | None) -> list[Issue]:
    if not (want and sense and want != sense):
        return []
    return [
        Issue(
            check="sense",
            severity="error",
            message=f"the text asks to {want} but the objective says {sense}",
            fix=f"set the objective sense to {want}",
            action="flip_sense",
        )
    ]


def _unused_variable_issues(ir: dict[str, Any], exprs: list[str]) -> list[Issue]:
    var_names = {v["name"] for v in ir.get("variables", [])}
    used = {n for n in var_names if any(re.search(rf"\b{re.escape(n)}\b", e) for e in exprs)}
    return [
        Issue(
            check="unused_variable",
            severity="warning",
            message=f"variable {n!r} appears in no expression",
            fix=f"use {n!r} in the objective or constraints, or remove it",
        )
        for n in sorted(var_names - used)
    ]


def _constraint_issues(ir: dict[str, Any]) -> list[Issue]:
    if ir.get("constraints"):
        return []
    return [
        Issue(
            check="no_constraints",
            severity="error",
            message="the model has no constraints",
            fix="add a constraint for every limit, requirement and ratio in the text",
        )
    ]


def _number_issues(problem_text: str, exprs: list[str]) -> list[Issue]:
    # Numbers in the model that the text never mentions are usually invented.
    text_numbers = _numbers(problem_text)
    text_numbers |= {n / 100 for n in text_numbers} | {n * 100 for n in text_numbers}
    model_numbers = set()
    for e in exprs:
        model_numbers |= _numbers(e)
    invented = sorted(
        n for n in model_numbers - text_numbers if n not in (0, 1, 2, 3, 100) and n > 1
    )
    if not invented:
        return []
    return [
        Issue(
            check="numbers",
            severity="warning",
            message="numbers not found in the text: " + ", ".join(f"{n:g}" for n in invented[:6]),
            fix="use only the numbers given in the problem",
        )
    ]


#: Solver statuses that are an issue by themselves (the solution checks then do not run).
_STATUS_ISSUES = {
    SolveStatus.INFEASIBLE,
    SolveStatus.INFEASIBLE_OR_UNBOUNDED,
    SolveStatus.UNBOUNDED,
    SolveStatus.ERROR,
    SolveStatus.TIME_LIMIT,
}


def _status_issue(result: SolveResult, sense: str | None) -> Issue:
    st = result.status
    if st in (SolveStatus.INFEASIBLE, SolveStatus.INFEASIBLE_OR_UNBOUNDED):
        return Issue(
            check="infeasible",
            severity="error",
            message="the solver found no solution satisfying all constraints, but the text "
            "describes a situation that has one",
            fix="check each inequality direction (at least = >=, at most = <=), totals that "
            "should be <= rather than ==, and ratios written the wrong way round",
        )
    if st == SolveStatus.UNBOUNDED:
        return Issue(
            check="unbounded",
            severity="error",
            message=f"the objective can grow without limit ({sense})",
            fix="add the missing resource or budget limit, or check the objective sense",
        )
    return Issue(
        check="solver",
        severity="error",
        message=f"the solver failed: {result.message or st.value}",
        fix="simplify the model: linear expressions, one comparison per constraint",
    )


def _solution_issues(
    ir: dict[str, Any],
    result: SolveResult,
    sense: str | None,
    want: str | None,
    *,
    relaxed: bool,
) -> list[Issue]:
    """Checks of a solved model's values: integrality, all zeros, a zero maximum."""
    issues = []
    ints = {v["name"] for v in ir.get("variables", []) if v.get("domain") != "continuous"}
    frac = _fractional(result.variables, ints)
    if frac and not relaxed:
        issues.append(
            Issue(
                check="integrality",
                severity="error",
                message="integer variables have fractional values: " + ", ".join(frac[:5]),
                fix="solve with integrality enforced",
                action="enforce_integrality",
            )
        )
    values = list(result.variables.values())
    if values and all(abs(v) < 1e-9 for v in values) and sense in _ZERO_SOLUTION:
        message, fix = _ZERO_SOLUTION[sense]
        issues.append(Issue(check="zero_solution", severity="warning", message=message, fix=fix))
    if result.objective is not None and abs(result.objective) < 1e-9 and want == "maximize":
        issues.append(
            Issue(
                check="zero_objective",
                severity="warning",
                message="the best objective is 0 although the text asks to maximize",
                fix="check the objective coefficients and the constraint directions",
            )
        )
    return issues


def verdict(issues: list[Issue]) -> Literal["ok", "suspicious", "wrong"]:
    """Summarize issues: any error -> wrong, any warning -> suspicious, else ok."""
    if any(i.severity == "error" for i in issues):
        return "wrong"
    if issues:
        return "suspicious"
    return "ok"


def format_issues(issues: list[Issue]) -> str:
    """Issues as a bullet list for prompts and reports."""
    return "\n".join(f"- {i.message}. Fix: {i.fix}" if i.fix else f"- {i.message}" for i in issues)
