"""Error-class hints for the formulator (issue #12, lever ``hints``).

A small library of hints, one per class of formulation error seen in the team's failures
on the training splits and the readme40 samples (ratio direction, percentages, totals
against per-item quantities, coefficients grouped by product instead of by resource, ...).
Each hint is a file ``optiforge/prompts/team/hints/<id>.md``: front matter with its ``id``,
the ``classes`` that select it, a ``priority`` and the problems it was ``seen`` on, then the
hint text with a one-line example.

:func:`classify` reads the problem's error classes from deterministic cues (ratio words,
percentages, "at least", per-item amounts against totals, tables, units); with the planner
model on (``llm_planner``) :func:`planner_classes` adds the planner's classification
(nonlinear, integrality). :func:`select_hints` picks the hints of those classes, highest
priority first and at most :data:`MAX_HINTS`, in the library's fixed order, so problems of
one class get the same system message (the server's prompt cache keeps that prefix).
:func:`choose_hints` is the bundled trace op whose value (a :class:`HintChoice`) feeds the
formulator's ``formulate`` and ``repair`` steps; :func:`hint_block` is the "Watch out for:"
block appended to the formulator's system message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from optiforge.errors import OptiforgeError
from optiforge.trace import bundle

#: Where the hint files live.
HINTS_DIR = Path(__file__).resolve().parents[2] / "prompts" / "team" / "hints"
#: At most this many hints go into one prompt (a 1.5B model follows a few short rules
#: better than a long list).
MAX_HINTS = 4
#: The heading of the block appended to the formulator's system message.
HINT_HEADING = "Watch out for:"


class HintError(OptiforgeError):
    """A hint file is malformed (no front matter, no id, unknown field, empty text)."""


class Hint(BaseModel):
    """One error-class hint as its file states it."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    #: The error classes (from :func:`classify` or :func:`planner_classes`) that select it.
    classes: list[str] = Field(min_length=1)
    #: Higher first when more hints apply than :data:`MAX_HINTS`.
    priority: int = 0
    #: Problem ids (training splits, readme40) where the error was seen.
    seen: list[str] = Field(default_factory=list)
    #: The hint text, ending with a one-line example.
    text: str = Field(min_length=1)


_FIELDS = {"id", "classes", "priority", "seen"}


def parse_hint(raw: str, source: str = "hint") -> Hint:
    """A :class:`Hint` from a file's text (``---`` front matter, then the hint text)."""
    m = re.match(r"\A---\s*\n(.*?)\n---\s*\n(.*)\Z", raw, re.DOTALL)
    if not m:
        raise HintError(f"{source}: a hint file starts with front matter between '---' lines")
    meta: dict[str, Any] = {}
    for line in m.group(1).splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep or key not in _FIELDS:
            raise HintError(
                f"{source}: front matter line {line!r} is not one of {sorted(_FIELDS)}: value"
            )
        value = value.strip()
        if key in ("classes", "seen"):
            meta[key] = [v.strip() for v in value.split(",") if v.strip()]
        elif key == "priority":
            try:
                meta[key] = int(value)
            except ValueError:
                raise HintError(f"{source}: priority must be an integer, got {value!r}") from None
        else:
            meta[key] = value
    try:
        return Hint(**meta, text=m.group(2).strip())
    except Exception as exc:
        raise HintError(f"{source}: {exc}") from None


@lru_cache(maxsize=4)
def load_hints(directory: str | None = None) -> tuple[Hint, ...]:
    """The hint library in its fixed order (priority, highest first; then id)."""
    root = Path(directory) if directory else HINTS_DIR
    hints = [parse_hint(p.read_text(encoding="utf-8"), p.name) for p in sorted(root.glob("*.md"))]
    ids = [h.id for h in hints]
    if len(set(ids)) != len(ids):
        raise HintError(f"{root}: hint ids must be unique, got {ids}")
    return tuple(sorted(hints, key=lambda h: (-h.priority, h.id)))


# -- deterministic cues ----------------------------------------------------------------------
_NUM = r"(?:\d[\d,]*(?:\.\d+)?|one|two|three|four|five|six|seven|eight|nine|ten)"
_CUES: dict[str, re.Pattern[str]] = {
    "ratio": re.compile(
        rf"\b(?:twice|thrice|double|triple|half|{_NUM}\s+times)\b"
        r"|\bratio\b",
    ),
    # A share of a total ("30% of the volunteers", "75% implemented lights must be"), not a
    # composition ("contains 20% cat paw snacks") or a rate ("earn 3%").
    "percent": re.compile(
        r"(?:%|\bpercent)(?: of\b| \w+(?: \w+)? (?:must|can|should|are|is|be)\b)"
    ),
    "strict": re.compile(
        r"(?<!not )(?<!n't )\bexceed(?:s)? the (?:number|amount)\b"
        r"|\bmore \w+(?: \w+)? than (?:the number of )?\w+\b(?! \d)"
        r"|\bgreater than the (?:number|amount)\b"
    ),
    "objective_quantity": re.compile(
        r"\b(?:maximi[sz]e|minimi[sz]e|reduce|increase)\b[^.?]*?\b(?:total )?"
        r"(?:number|amount) of\b"
    ),
    "net_profit": re.compile(r"\b(?:sells?|sold|selling price|revenue)\b"),
    "units_scale": re.compile(r"\b(?:million|billion|thousands?)\b"),
    "at_least_at_most": re.compile(
        r"\bat (?:least|most)\b|\bno (?:more|less|fewer) than\b|\bminimum\b|\bmaximum\b"
        r"|\b(?:cannot|can ?not|must not|does not|not) exceed\b|\bup to\b|\bavailable\b"
    ),
    "nonlinear": re.compile(
        r"\b(?:squared|square of|quadratic|area of|volume|radius|cut (?:out )?(?:a |the )?"
        r"squares?|fold(?:ed)? up|dimensions of)\b"
    ),
}
_EACH = re.compile(r"\b(?:each|per|every|one|a single)\b")
_TOTAL = re.compile(
    r"\b(?:available|in total|total of|a total|combined|budget|capacity|has \$?\d|have \$?\d"
    r"|at (?:most|least) \$?\d[\d,.]* (?:units|hours|minutes|calories|people|employees|kg|"
    r"pounds|grams|liters|dollars))\b"
)
_COUNTED = re.compile(
    r"\bhow many\b|\bnumber of\b|\bwhole numbers?\b|\bintegers?\b|\bfractional\b|\bcontinuous\b"
)
_LIMITS = re.compile(
    r"\bat (?:least|most)\b|\bno (?:more|less|fewer) than\b|\bminimum\b|\bmaximum\b|\bmust\b"
    r"|\bavailable\b|\brequires?\b|\bdemand\b|\bbudget\b|\bcannot\b|\bneeds? to\b"
)
_SENTENCE = re.compile(r"(?<=[.?!;])\s+")
_NUMBER = re.compile(r"\$?\d[\d,]*(?:\.\d+)?")


def _first(pattern: re.Pattern[str], text: str) -> str | None:
    m = pattern.search(text)
    return m.group(0).strip() if m else None


def classify(problem: str, features: dict[str, Any] | None = None) -> dict[str, str]:
    """The error classes the problem's text cues, each with the words that cued it.

    ``features`` are the planner's :func:`~optiforge.agents.team.state.plan_features` (a
    table, nonlinear words, integrality stated); they are read from the text when not given.
    """
    from optiforge.agents.team.state import plan_features

    feats = features if features is not None else plan_features(problem)
    text = " ".join(problem.lower().split())
    out: dict[str, str] = {}
    for name, pattern in _CUES.items():
        got = _first(pattern, text)
        if got is not None:
            out[name] = got
    if "net_profit" in out:
        cost = _first(re.compile(r"\bcosts?\b|\bexpenses?\b"), text)
        if cost is None:
            del out["net_profit"]
        else:
            out["net_profit"] += f" + {cost}"
    if "objective_quantity" in out and not re.search(r"\$|\bcosts?\b|\bprofit\b", text):
        # The error seen: the objective takes another attribute's numbers (a cost per trip
        # for "the number of trips"); without a cost in the text, only when the items have
        # several attributes (decided below).
        out["_objective_quantity"] = out.pop("objective_quantity")
    sentences = [s for s in _SENTENCE.split(text) if s]
    # Per-item amounts against a total: a sentence of per-item amounts and a stated total.
    per_item = [s for s in sentences if _EACH.search(s) and _NUMBER.search(s)]
    total = _first(_TOTAL, text)
    if per_item and total is not None:
        out["per_item_total"] = f"{_first(_EACH, per_item[0])} ... {total}"
    # Coefficients of several resources per item: two sentences with two or more numbers
    # each, about items ("each", "per"), or a table.
    multi = [s for s in per_item if len(_NUMBER.findall(s)) >= 2]
    if len(multi) >= 2:
        out["coefficient_grouping"] = f"{len(multi)} sentences of per-item amounts"
    objective = out.pop("_objective_quantity", None)
    if objective is not None and "coefficient_grouping" in out:
        out["objective_quantity"] = objective
    if feats.get("table"):
        out["table"] = "a table"
        out.setdefault("coefficient_grouping", "a table")
    if feats.get("integer_stated") or feats.get("fraction_stated"):
        out["integrality"] = "integrality stated"
    else:
        counted = _first(_COUNTED, text)
        if counted is not None:
            out["integrality"] = counted
    limits = _LIMITS.findall(text)
    if len(limits) >= 3:
        out["missing_demand"] = f"{len(limits)} limits stated"
    return out


def planner_classes(advice: Any) -> dict[str, str]:
    """The error classes the planner model's classification (a ``PlanChoice``) implies."""
    if advice is None:
        return {}
    out: dict[str, str] = {}
    if getattr(advice, "nonlinear", False):
        out["nonlinear"] = "planner: nonlinear"
    if getattr(advice, "integer_variables", None) in ("yes", "no"):
        out["integrality"] = f"planner: integer_variables={advice.integer_variables}"
    return out


def select_hints(classes: Any, limit: int = MAX_HINTS, library: Any = None) -> list[Hint]:
    """The hints for these classes: in the library's order (priority first), at most
    ``limit``; the same classes always give the same hints in the same order."""
    wanted = set(classes)
    lib = load_hints() if library is None else library
    return [h for h in lib if wanted & set(h.classes)][: max(0, limit)]


def hint_block(hints: list[Hint]) -> str:
    """The "Watch out for:" block for the formulator's system message ("" for none)."""
    if not hints:
        return ""
    return HINT_HEADING + "\n" + "\n".join(f"- {h.text}" for h in hints)


@dataclass
class HintChoice:
    """What the hints step chose: the classes, the words that cued them, the hints."""

    classes: dict[str, str] = field(default_factory=dict)
    hints: list[Hint] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [h.id for h in self.hints]

    @property
    def text(self) -> str:
        """The block appended to the formulator's system message ("" without hints)."""
        return hint_block(self.hints)

    def __repr__(self) -> str:
        # Shown to optimizers as the value of the hints node.
        if not self.hints:
            return f"HintChoice(no hints; classes {sorted(self.classes)})"
        return f"HintChoice({self.text})"


_CHOOSE_DOC = (
    "Chooses the error-class hints for the formulator: the problem's classes from "
    "deterministic cues (ratio words, percentages, 'at least', per-item amounts against "
    "totals, tables, integrality words) and, when given, the planner model's classification; "
    "the hints of those classes are appended to the formulator's system message."
)


@bundle(name="hints", doc=_CHOOSE_DOC)
def choose_hints(problem: str, advice: Any = None) -> HintChoice:
    """The hints for ``problem`` (``advice``: the planner model's reply, or None)."""
    classes = classify(problem)
    plan = advice.values[0] if advice is not None and getattr(advice, "values", None) else None
    for name, why in planner_classes(plan).items():
        classes.setdefault(name, why)
    return HintChoice(classes=classes, hints=select_hints(classes))
