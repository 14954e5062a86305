"""Read the direction of a limit from the words of the text, and fix inverted constraints.

The most common error of a small formulator is a constraint that points the wrong way:
the text says "at least 150 patties per minute" and the model writes
``20*gas + 30*electric <= 150``. The limit's own words settle the direction, so the fix is
deterministic: for a constraint that compares variables with a constant, find the
direction words nearest that constant (in the constraint's ``source`` words, else in the
problem text) and flip the comparison when they disagree.

The rule is deliberately narrow, to leave right models alone:

* only ``terms <op> constant`` with non-negative terms (no ratios between variables,
  no ``==``, no constant 0);
* only a "strong" cue nearest the number ("at least", "no more than", "up to", "or more",
  "cannot exceed", "minimum" ...) or, failing that, one resource word ("available",
  "budget", "capacity") on its own;
* when the source words and the problem text disagree, or a cue is ambiguous, nothing
  changes.
"""

from __future__ import annotations

import ast
import contextlib
import operator
import re
from dataclasses import dataclass
from typing import Any, Literal

Direction = Literal[">=", "<="]

_NEG = (
    r"(?:no|not|never|cannot|can ?not|can't|must not|mustn't|should not|shouldn't|"
    r"does not|doesn't|do not|don't|will not|won't|may not)"
)
# Negated comparatives first: they contain the plain words ("not less than").
_NEGATED = [
    (re.compile(rf"\b{_NEG}\s+(?:be\s+)?(?:less|fewer|lower|smaller|below|under)\b"), ">="),
    (re.compile(rf"\b{_NEG}\s+(?:be\s+)?(?:more|greater|higher|larger|above|over)\b"), "<="),
    (re.compile(rf"\b{_NEG}\s+(?:be\s+)?(?:exceed\w*|surpass\w*|go over)\b"), "<="),
    (re.compile(rf"\b{_NEG}\s+(?:be\s+)?(?:drop|fall|go)\s+below\b"), ">="),
]
_STRONG = [
    (
        re.compile(
            r"\bat least\b|\bminimum\b|\bat minimum\b|\bor more\b|\bor greater\b|"
            r"\bor higher\b|\bor above\b|\bmore than\b|\bgreater than\b|\bexceed\w*\b|"
            r"\bin excess of\b|\bupwards of\b|\bno fewer\b|\bminimal\b|\babove\b"
        ),
        ">=",
    ),
    (
        re.compile(
            r"\bat most\b|\bmaximum\b|\bat maximum\b|\bor less\b|\bor fewer\b|"
            r"\bor lower\b|\bor below\b|\bless than\b|\bfewer than\b|\bup to\b|"
            r"\bupper limit\b|\bupper bound\b|\blimit of\b|\bmaximal\b|\bbelow\b|\bunder\b|"
            r"\bwithin\b"
        ),
        "<=",
    ),
]
_WEAK = [
    (
        re.compile(
            r"\b(?:available|availability|budget|capacity|limited|limits?|only (?:has|have)|"
            r"(?:has|have|having) (?:only |a total of |in total )?\$?$|to (?:spend|invest)\b|"
            r"can (?:only )?(?:hold|store|handle))"
        ),
        "<=",
    ),
    (
        re.compile(
            r"\b(?:must|needs? to|has to|have to|required|requires? that|requirement|"
            r"demands?|ensure)\b"
        ),
        ">=",
    ),
]
_EQUAL = re.compile(r"\b(?:exactly|precisely|equal to|equals|must be equal)\b")
_SENTENCE_END = re.compile(r"[.!?;](?:\s|$)")
_IDENT = re.compile(r"[A-Za-z_]\w*")
_CMP_SPLIT = re.compile(r"(<=|>=|==|<|>)")
#: Characters looked at before a number for its direction words (about a clause).
WINDOW = 70


@dataclass
class Flip:
    """One constraint whose comparison points against the text."""

    name: str
    old: str
    new: str
    cue: str


def _cues(fragment: str) -> list[tuple[int, Direction, str]]:
    """(position, direction, words) for every direction cue in ``fragment`` (lowercase)."""
    found: list[tuple[int, Direction, str]] = []
    masked = fragment
    for rx, d in _NEGATED:
        for m in rx.finditer(masked):
            found.append((m.start(), d, m.group(0)))  # type: ignore[arg-type]
            masked = masked[: m.start()] + " " * (m.end() - m.start()) + masked[m.end() :]
    for rx, d in _STRONG:
        for m in rx.finditer(masked):
            found.append((m.start(), d, m.group(0)))  # type: ignore[arg-type]
    return sorted(found)


def direction_of(fragment: str) -> tuple[Direction | None, str]:
    """The direction a clause asks for, with the deciding words; (None, "") if unclear.

    The cue nearest the end of ``fragment`` decides (the fragment ends at the number);
    resource words ("available", "budget", "capacity") count only when no comparative
    is present. "exactly" / "equal to" makes it unclear on purpose.
    """
    low = fragment.lower()
    if _EQUAL.search(low):
        return None, ""
    cues = _cues(low)
    if cues:
        _, d, words = cues[-1]
        return d, words
    weak = sorted((m.start(), d, m.group(0).strip()) for rx, d in _WEAK for m in rx.finditer(low))
    if weak:
        _, d, words = weak[-1]
        return d, words  # type: ignore[return-value]
    return None, ""


def _number_pattern(value: float) -> re.Pattern[str] | None:
    """A pattern for ``value`` as people write it (1200, 1,200, 1200.0, $1200, 30%)."""
    if value <= 0 or value != value:
        return None
    forms: set[str] = set()
    if float(value).is_integer():
        iv = int(value)
        forms |= {str(iv), f"{iv:,}"}
    else:
        forms.add(repr(float(value)).rstrip("0").rstrip("."))
        pct = value * 100
        if abs(pct - round(pct)) < 1e-9:
            forms.add(f"{round(pct)}%")
            forms.add(f"{round(pct)} percent")
    alts = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    return re.compile(rf"(?<![\d.,])(?:{alts})(?![\d]|[.,]\d)")


def cue_for_number(text: str, value: float) -> tuple[Direction | None, str]:
    """The direction the words before (and just after) ``value`` in ``text`` ask for.

    Mentions with direction words must all agree (mentions without them are read as
    coefficients); a number the text never mentions gives None.
    """
    rx = _number_pattern(value)
    if rx is None:
        return None, ""
    verdicts: set[Direction | None] = set()
    words = ""
    for m in rx.finditer(text):
        start = max(0, m.start() - WINDOW)
        before = text[start : m.start()]
        # The clause of this number: after the sentence start and after the previous
        # number (whose words belong to it).
        ends = list(_SENTENCE_END.finditer(before))
        clause = before[ends[-1].end() :] if ends else before
        digits = list(re.finditer(r"\d", clause))
        before = clause[digits[-1].end() :] if digits else clause
        after = text[m.end() : m.end() + WINDOW]
        cut = re.search(r"[.!?;,](?:\s|$)|\d|\b(?:and|but|while|whereas)\b", after)
        after = after[: cut.start()] if cut else after
        # "150 or more": a comparative right after the number (and its unit) wins.
        tail = re.match(
            r"^\s*(?:[\w$%/-]+\s+){0,3}?(or (?:more|greater|higher|above|less|"
            r"fewer|lower|below))\b",
            after.lower(),
        )
        if tail:
            d: Direction | None = (
                ">=" if tail.group(1).split()[1] in ("more", "greater", "higher", "above") else "<="
            )
            w = tail.group(1)
        else:
            d, w = direction_of(before)
            if d is None and digits and re.fullmatch(r"[^\d]*(?:\band|,)\s*\$?", before):
                # A list: "at least 30 desk-lamps and 50 night-lamps".
                d, w = direction_of(clause)
            if d is None:  # "3000 units of meat are available"
                d, w = direction_of(after)
        if d is not None:  # a mention without direction words is a coefficient
            verdicts.add(d)
            words = words or w
    if len(verdicts) != 1:
        return None, ""
    (d,) = verdicts
    return d, words


def _constant(side: str) -> float | None:
    """The value of a side made of numbers only (``150``, ``0.3*500``), else None.

    Only + - * / on numeric literals are evaluated (no powers: model output is untrusted).
    """
    s = side.strip()
    if not s or _IDENT.search(s):
        return None
    try:
        tree = ast.parse(s, mode="eval")
    except SyntaxError:
        return None
    ops = {
        ast.Add: operator.add,
        ast.Sub: operator.sub,
        ast.Mult: operator.mul,
        ast.Div: operator.truediv,
    }

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError("not a constant")

    with contextlib.suppress(ValueError, ZeroDivisionError, OverflowError):
        return ev(tree.body)
    return None


def _split(expression: str) -> tuple[str, str, str] | None:
    parts = _CMP_SPLIT.split(expression)
    if len(parts) != 3:
        return None
    return parts[0], parts[1], parts[2]


def inverted_constraints(problem_text: str, ir: dict[str, Any]) -> list[Flip]:
    """Constraints of ``ir`` whose direction contradicts the words of their limit."""
    flips: list[Flip] = []
    for c in ir.get("constraints", []):
        expr = c.get("expression", "")
        parts = _split(expr)
        if parts is None:
            continue
        lhs, op, rhs = parts
        if op in ("==",):
            continue
        lconst, rconst = _constant(lhs), _constant(rhs)
        if (lconst is None) == (rconst is None):
            continue  # variables on both sides, or none: a ratio or a tautology
        terms, const = (lhs, rconst) if rconst is not None else (rhs, lconst)
        if const is None or const <= 0 or "-" in terms:
            continue
        # Direction of "terms <op'> const" as written; "150 <= x" means x >= 150.
        written: Direction = ">=" if (op[0] == ">") == (rconst is not None) else "<="
        source = (c.get("source") or "").strip()
        want_src, words_src = cue_for_number(source, const) if source else (None, "")
        if want_src is None and source and not _number_pattern(const).search(source):  # type: ignore[union-attr]
            # The source words do not quote the number: their own comparative counts.
            want_src, words_src = direction_of(source)
        want_txt, words_txt = cue_for_number(problem_text, const)
        wants = {w for w in (want_src, want_txt) if w is not None}
        if len(wants) != 1:
            continue
        (want,) = wants
        if want == written:
            continue
        flipped_op = {"<=": ">=", ">=": "<=", "<": ">", ">": "<"}[op]
        new = f"{lhs.strip()} {flipped_op} {rhs.strip()}"
        flips.append(Flip(c.get("name", "?"), expr, new, words_src or words_txt))
    return flips


def fix_directions(problem_text: str, ir: dict[str, Any]) -> list[str]:
    """Flip every inverted constraint of ``ir`` in place; return one note per flip."""
    notes = []
    by_name = {c.get("name"): c for c in ir.get("constraints", [])}
    for f in inverted_constraints(problem_text, ir):
        by_name[f.name]["expression"] = f.new
        notes.append(f"constraint {f.name}: {f.old!r} -> {f.new!r}{_FLIP_NOTE} {f.cue!r})")
    return notes


#: Marks the notes :func:`fix_directions` writes, so :func:`count_flips` can find them.
_FLIP_NOTE = " (the text says"


def count_flips(notes: list[str]) -> int:
    """How many of ``notes`` (a normalisation's notes) are direction flips."""
    return sum(1 for n in notes if n.startswith("constraint ") and _FLIP_NOTE in n)
