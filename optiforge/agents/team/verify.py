"""Sentence-level verification (the ``verify`` lever of :class:`TeamConfig`).

A 1.5B model handles one short line far better than a whole model. So each constraint and
the objective of the leading answers is checked on its own. A small prompt
(``verifier_system`` / ``verifier_user``) shows the variables with their descriptions and
the sentences of the problem the line comes from (its source sentence, matched in the text,
and the sentences that state its numbers), and asks the model to *write* that line as
grammar-constrained JSON (:class:`VerifierReply`) without showing it the model's line: asked
"does this line say what the sentence says?", Qwen2.5-Coder-1.5B answered "yes" to every
line, wrong ones included. The verdict is deterministic (:func:`judge`, a :class:`Verdict`):
the same line up to a positive factor is ``yes``; a different one is ``no`` with the fixed
line; a line that cannot be used is ``unclear``. The prompt carries two aids:

- the ratio check: for a ratio sentence, the variables its ratio clause names, in order
  (matched through the variable descriptions,
  :func:`~optiforge.agents.team.grounded.mentioned_variables`), so "at least 3 times as many
  wraps as platters" is written ``wraps >= 3*platters``;
- coefficient-variable alignment: for each sentence naming one variable, the numbers it
  pairs with it and the words after each ("- tables: 3 hours of carpentry; 2 hours of
  painting"), so a transposed matrix is rewritten by resource; :func:`misaligned` finds a
  number attached to a variable the text does not pair it with.

A fix must parse, keep the line's variables, use numbers of the text, not be misaligned,
and its direction is matched to the text as a draft's is; it is applied to a copy of the IR
(the op ``apply_fix``) and solved as a new attempt (plan ``"verify"``, ``parent`` = the
verified attempt), so the vote sees it. The verified attempt gets ``Attempt.verified =
False`` (its vote weight is halved: the fix votes instead); an attempt whose every asked
line passed gets ``True``.

Cost: only the attempts of the leading vote cluster(s) are verified, each distinct line once
per run (cached by line and sentences), lines with no number and no ratio word are skipped,
misaligned and ratio lines go first and the objective last, at most
``TeamConfig.verify_calls`` calls per run, each counted against the LLM budget and started
only when the measured call time fits before the deadline.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from optiforge.agents.solution import StepRecord
from optiforge.agents.team import roles
from optiforge.agents.team.grounded import (
    mentioned_variables,
    number_sentences,
    numbers,
    sentences,
)
from optiforge.agents.team.prompts import PromptSet
from optiforge.agents.team.scheduler import Candidate, same_value
from optiforge.agents.team.state import Attempt
from optiforge.trace import bundle, node

__all__ = [
    "Item",
    "Verdict",
    "Verifier",
    "VerifierReply",
    "ask_verifier",
    "items_of",
    "judge",
    "same_line",
    "usable_line",
]

ROLE = "verifier"
#: A cluster is "leading" when it has at least this share of the heaviest cluster's weight.
LEADING_SHARE = 0.5
_RATIO = re.compile(
    r"\b(times|ratio|percent|fraction|twice|thrice|half|third|quarter|as many|as much|more "
    r"than|less than|fewer than|proportion|share|at least|at most)\b|%",
    re.IGNORECASE,
)
_RATIO_ONLY = re.compile(
    r"\b(times|ratio|percent|fraction|twice|thrice|half|third|quarter|as many|as much|"
    r"proportion|share)\b|%",
    re.IGNORECASE,
)
_DOCS = {
    "verify": "The verifier model checks one constraint (or the objective) of a checked "
    "formulation against the sentences it comes from, following the verifier_system prompt: "
    "yes, or no with the fixed expression.",
    "apply_fix": "Applies the verifier's fixed expressions to a copy of the formulation and "
    "validates it (the fixed model is solved as a new attempt).",
}


class VerifierReply(BaseModel):
    """The verifier model's answer: the line as the sentences state it (grammar-constrained
    JSON). It is written without seeing the model's line, then compared with it."""

    expression: str = Field(max_length=300)


@dataclass(frozen=True)
class Verdict:
    """The verifier's verdict on one line: ``correct`` yes/no (``unclear`` when the line the
    model wrote could not be used), and when no the fixed line."""

    correct: Literal["yes", "no", "unclear"]
    fixed: str = ""
    #: What the verifier model wrote (for the record).
    wrote: str = ""


@dataclass(frozen=True)
class Item:
    """One line of a formulation to verify, with the sentences it is checked against."""

    kind: Literal["constraint", "objective"]
    name: str  # the constraint's name, or "objective"
    expression: str
    sentences: tuple[str, ...]
    #: The variables the sentences name, in order (for the ratio check; "" when no ratio).
    mentions: str = ""
    #: Which line to write, e.g. "the constraint the first sentence states for the number 100".
    request: str = ""

    @property
    def key(self) -> str:
        """Cache key: the line (spaces removed) and its sentences."""
        return json.dumps([self.kind, self.expression.replace(" ", ""), list(self.sentences)])


def _words(s: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", s.lower()))


def _source_sentence(problem_sents: list[str], source: str) -> str | None:
    """The sentence of the text a formulator's ``source`` quotes (or paraphrases)."""
    want = _words(source)
    if not want:
        return None
    best, score = None, 0.0
    for s in problem_sents:
        got = len(want & _words(s)) / len(want)
        if got > score:
            best, score = s, got
    return best if score >= 0.5 else source.strip()


def _variables_text(ir: dict[str, Any]) -> str:
    lines = []
    for v in ir.get("variables", []):
        desc = v.get("description") or ""
        units = f" ({v['units']})" if v.get("units") else ""
        lines.append(f"- {v['name']}: {desc}{units}".rstrip(": "))
    return "\n".join(lines)


_NUMBER_PHRASE = re.compile(
    r"\$?(\d+(?:,\d{3})*(?:\.\d+)?)\s*(%?(?:\s*(?!and\b|or\b|while\b)[A-Za-z-]+){0,4})"
)


def _pairings(sents: list[str] | tuple[str, ...], variables: list[dict[str, Any]]) -> str:
    """For each sentence that names one variable, the numbers it pairs with it and the words
    after each ("- chairs: 2 hours of carpentry; 1 hour of painting"): what coefficient
    alignment reads. Empty when no sentence names exactly one variable."""
    lines = []
    for s in sents:
        named = mentioned_variables(s, variables)
        if len(named) != 1:
            continue
        phrases = [f"{m.group(1)} {m.group(2).strip()}".strip() for m in _NUMBER_PHRASE.finditer(s)]
        if phrases:
            lines.append(f"- {named[0]}: " + "; ".join(phrases))
    if not lines:
        return ""
    return "Numbers each sentence gives for one variable:\n" + "\n".join(lines) + "\n"


_CLAUSE_START = re.compile(r"(?:^|[,;:]\s+|\b(?:because|since|so|but|and|while|if)\s+)", re.I)


def _constant_sides(expr: str) -> list[float]:
    """The sides of a comparison that are a plain number (``... <= 100`` -> [100.0])."""
    sides = re.split(r"<=|>=|==|<|>", expr)
    if len(sides) != 2:
        return []
    out = []
    for side in sides:
        m = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*", side)
        if m:
            out.append(float(m.group(1)))
    return out


def _clause(sentence: str, at: int) -> str:
    """The clause of ``sentence`` around position ``at``: from the last comma, semicolon or
    joining word before it to the end ("..., the number of A must be at least 4 times as
    much as B" -> "the number of A must be at least 4 times as much as B")."""
    starts = [m.end() for m in _CLAUSE_START.finditer(sentence) if m.end() <= at]
    start = starts[-1] if starts else 0
    clause = sentence[start:].strip().rstrip(".!?")
    # Too short to name both sides of a ratio: the whole sentence.
    return clause if len(clause.split()) >= 5 else sentence.strip().rstrip(".!?")


def items_of(problem: str, ir: dict[str, Any]) -> list[Item]:
    """The lines of ``ir`` worth verifying, objective first.

    A line is left out when it has no number other than 0 and 1 and its sentences no ratio
    word (``x >= 0``), or when no sentence of the text can be found for it. Indexed models
    (sets, ``for_all``) are not verified: the verifier writes scalar lines.
    """
    if ir.get("sets") or any(v.get("index_sets") for v in ir.get("variables", [])):
        return []
    sents = sentences(problem)
    variables = ir.get("variables", [])
    out: list[Item] = []
    obj = ir.get("objective", {}).get("expression", "")
    sense = ir.get("objective", {}).get("sense", "maximize")
    obj_nums = {n for n in numbers(obj) if n not in (0.0, 1.0)}
    if obj_nums:
        found = number_sentences(problem, obj_nums)[:3]
        if found:
            request = f"the objective: the expression to {sense}, without the word {sense}"
            out.append(Item("objective", "objective", obj, tuple(found), "", request))
    for c in ir.get("constraints", []):
        expr = c.get("expression", "")
        if c.get("for_all"):
            continue
        nums = {n for n in numbers(expr) if n not in (0.0, 1.0)}
        picked: list[str] = []
        src = _source_sentence(sents, c.get("source") or "")
        if src:
            picked.append(src)
        for s in number_sentences(problem, nums):
            if s not in picked:
                picked.append(s)
        picked = picked[:3]
        if not picked:
            continue
        ratio = any(_RATIO.search(s) for s in picked)
        if not nums and not ratio:
            continue
        mentions = _pairings(picked[1:], variables)
        ratio_at = _RATIO_ONLY.search(picked[0])
        if ratio_at:
            clause = _clause(picked[0], ratio_at.start())
            named = mentioned_variables(clause, variables)
            if named:
                mentions += (
                    f"The ratio in '{clause}' names these variables in this order: "
                    + ", ".join(named)
                    + ".\n"
                )
        consts = _constant_sides(expr)
        request = "the constraint the first sentence states"
        if consts and consts[0] not in (0.0, 1.0) and consts[0] in numbers(picked[0]):
            phrase = next(
                (
                    f"{m.group(1)} {m.group(2).strip()}".strip()
                    for m in _NUMBER_PHRASE.finditer(picked[0])
                    if numbers(m.group(1)) == {consts[0]}
                ),
                f"{consts[0]:g}",
            )
            request += f", the one with {phrase}"
        out.append(Item("constraint", c.get("name", ""), expr, tuple(picked), mentions, request))
    return out


def same_line(ir: dict[str, Any], item: Item, a: str, b: str) -> bool | None:
    """Do lines ``a`` and ``b`` say the same in ``ir``'s terms? Constraints compare up to a
    positive factor (``x >= 3*y`` is ``2*x - 6*y >= 0``), objectives exactly (their value is
    the answer). None when either does not compile as a linear or polynomial line."""
    from optiforge.solvers.compile import Poly, compile_ir
    from optiforge.solvers.errors import IRValidationError
    from optiforge.solvers.ir import ModelIR

    def canon(expr: str) -> list[tuple[str, dict[tuple[int, ...], float]]] | None:
        try:
            cir = compile_ir(ModelIR.model_validate(replace_line(ir, item, expr)))
        except (IRValidationError, ValueError):
            return None
        if item.kind == "objective":
            body = cir.objective
            return [("obj", dict(body.t))] if isinstance(body, Poly) else None
        out = []
        for r in cir.rows:
            if r.item != item.name:
                continue
            if not isinstance(r.body, Poly):
                return None
            t = {k: c for k, c in r.body.t.items() if abs(c) > 1e-12}
            sense = r.sense
            if sense == ">=":
                t, sense = {k: -c for k, c in t.items()}, "<="
            scale = max((abs(c) for k, c in t.items() if k), default=1.0) or 1.0
            if sense == "==":
                first = next((c for k, c in sorted(t.items()) if k), 1.0)
                scale = scale if first > 0 else -scale
            out.append((sense, {k: c / scale for k, c in t.items()}))
        return out

    ca, cb = canon(a), canon(b)
    if ca is None or cb is None or len(ca) != len(cb):
        return None
    for (sa, ta), (sb, tb) in zip(ca, cb, strict=True):
        if sa != sb or set(ta) ^ set(tb):
            return False
        if any(abs(ta[k] - tb[k]) > 1e-9 * (1 + abs(tb[k])) for k in ta):
            return False
    return True


def usable_line(item: Item, wrote: str, ir: dict[str, Any], problem: str) -> str | None:
    """The verifier's line made usable, or None when it cannot be used. It is cleaned like a
    draft (``3x`` -> ``3*x``, ``=`` -> ``==``), must parse (a comparison for a constraint,
    an expression for the objective), use the same variables as the line it replaces, only
    numbers of the text (or of that line), pair each number with a variable the text pairs
    it with (:func:`misaligned`), keep the text's numbers the line used unless they sat with
    the wrong variable (:func:`dropped_numbers`), and its direction is matched to the words of its limit as
    a draft's is (:func:`~optiforge.agents.team.directions.fix_directions`)."""
    from optiforge.agents.team.directions import fix_directions
    from optiforge.agents.team.formulation import clean_expression
    from optiforge.solvers.errors import IRValidationError
    from optiforge.solvers.ir import ModelIR

    names = {v["name"]: v["name"] for v in ir.get("variables", [])}
    text = wrote.strip()
    # "c2: 3*x >= y" or "maximize 3*x + 2*y": keep the line itself.
    text = re.sub(r"^\s*(?:maximi[sz]e|minimi[sz]e|objective)\s*:?\s*", "", text, flags=re.I)
    text = re.sub(rf"^\s*{re.escape(item.name)}\s*:\s*", "", text)
    if not text:
        return None
    expr = clean_expression(text, names)
    is_cmp = bool(re.search(r"<=|>=|==", expr))
    if is_cmp != (item.kind == "constraint"):
        return None
    allowed = numbers(problem) | numbers(item.expression)
    allowed |= {n / 100 for n in allowed} | {n * 100 for n in allowed} | {0.0, 1.0}
    if any(all(abs(n - a) > 1e-9 for a in allowed) for n in numbers(expr)):
        return None
    declared = {v["name"] for v in ir.get("variables", [])}
    # A fix corrects numbers and directions; it does not add or drop quantities, and pairs
    # each number with a variable the text pairs it with.
    if _names(expr, declared) != _names(item.expression, declared):
        return None
    if misaligned(problem, ir, expr):
        return None
    if dropped_numbers(problem, ir, item.expression, expr):
        return None
    fixed = replace_line(ir, item, expr)
    if item.kind == "constraint":
        fix_directions(problem, fixed)
        expr = next(c["expression"] for c in fixed["constraints"] if c.get("name") == item.name)
    try:
        ModelIR.from_json(fixed)
    except IRValidationError:
        return None
    if item.kind == "constraint" and duplicated(ir, item, expr):
        return None
    return expr


def duplicated(ir: dict[str, Any], item: Item, expr: str, others: Sequence[str] = ()) -> bool:
    """Does ``expr``, written for ``item``, state the same requirement (up to a positive
    factor) as another constraint of ``ir``, or as one of ``others``? Then the verifier
    wrote another requirement's line (on readme40, for a sentence stating two: "at least
    3000 units of meat and 2500 units of rice", it wrote the meat line for the rice one),
    and the fix would drop a requirement of the text. An unchanged line is not a
    duplicate of itself."""
    lines = [
        c["expression"]
        for c in ir.get("constraints", [])
        if c.get("name") != item.name and not (c.get("for_all") or "").strip()
    ]
    return any(same_line(ir, item, line, expr) for line in [*lines, *others])


_TERM = re.compile(
    r"(?<![\w.])(\d+(?:\.\d+)?)\s*\*\s*([A-Za-z_]\w*)(?![\w\[(])"
    r"|(?<![\w.])([A-Za-z_]\w*)\s*\*\s*(\d+(?:\.\d+)?)(?![\w.])"
)


def misaligned(problem: str, ir: dict[str, Any], expression: str) -> list[str]:
    """The terms ``number*variable`` of ``expression`` whose number the text states only in
    sentences that name other variables (``1*tables`` where "1" is only in "Each chair
    requires ... 1 hour of painting"): a coefficient attached to the wrong variable. A
    number the text does not state, or states in sentences naming no variable, is not
    judged."""
    variables = ir.get("variables", [])
    declared = {v["name"] for v in variables}
    sents = sentences(problem)
    out = []
    for m in _TERM.finditer(expression):
        num, var = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
        if var not in declared:
            continue
        value = float(num)
        holders = [s for s in sents if value in numbers(s) or value * 100 in numbers(s)]
        named = [mentioned_variables(s, variables) for s in holders]
        if not holders or not any(named):
            continue
        if not any(var in n for n in named):
            out.append(m.group(0).replace(" ", ""))
    return out


def dropped_numbers(problem: str, ir: dict[str, Any], old: str, new: str) -> list[float]:
    """The numbers of the text that line ``old`` uses and its fix ``new`` drops, where
    :func:`misaligned` does not show ``old`` pairing them with the wrong variable.

    A fix that drops such a number replaces a quantity of the text with another one (on
    readme40: an objective "seat 6 employees" rewritten with the desks' costs; "moves 60
    luggage" rewritten with the other vehicle's 40), which is not a correction of the line
    but another model, so :func:`usable_line` refuses it. A number written on the wrong
    variable (``1*tables`` in a transposed matrix) may be dropped."""
    in_text = numbers(problem)
    in_text |= {n / 100 for n in in_text}  # "30%" written 0.3
    wrong = {
        float(n) for t in misaligned(problem, ir, old) for n in re.findall(r"\d+(?:\.\d+)?", t)
    }
    kept = numbers(new)
    out = []
    for n in sorted(numbers(old)):
        if any(abs(n - k) <= 1e-9 for k in kept) or any(abs(n - w) <= 1e-9 for w in wrong):
            continue
        if any(abs(n - t) <= 1e-9 * max(1.0, abs(t)) for t in in_text):
            out.append(n)
    return out


def _names(expr: str, declared: set[str]) -> set[str]:
    return {w for w in re.findall(r"[A-Za-z_]\w*", expr) if w in declared}


def judge(item: Item, wrote: str, ir: dict[str, Any], problem: str) -> Verdict:
    """Compare the line the verifier wrote with the model's: ``yes`` when they say the same,
    ``no`` with the fixed line when they differ, ``unclear`` when the verifier's line is
    unusable."""
    line = usable_line(item, wrote, ir, problem)
    if line is None:
        return Verdict("unclear", "", wrote)
    same = same_line(ir, item, item.expression, line)
    if same is None:
        return Verdict("unclear", "", wrote)
    if same:
        # The verifier repeated a line whose numbers sit with other variables: not a pass.
        if misaligned(problem, ir, item.expression):
            return Verdict("unclear", "", wrote)
        return Verdict("yes", "", wrote)
    return Verdict("no", line, wrote)


def replace_line(ir: dict[str, Any], item: Item, expr: str) -> dict[str, Any]:
    """A copy of ``ir`` with ``item``'s line replaced by ``expr``."""
    out = json.loads(json.dumps(ir))
    if item.kind == "objective":
        out["objective"]["expression"] = expr
    else:
        for c in out.get("constraints", []):
            if c.get("name") == item.name:
                c["expression"] = expr
    return out


def _failed(plan: str | None, started: float, exc: Exception) -> roles.RoleReply:
    """A failed verifier call: what it cost (re-asks included) and why."""
    return roles.failed_reply(ROLE, plan, started, exc, what="verifier call")


async def ask_verifier(
    llm: Any,
    prompts: PromptSet,
    problem: str,
    ir: dict[str, Any],
    item: Item,
    *,
    plan: str | None = "verify",
    max_tokens: int = 80,
) -> roles.RoleReply:
    """Ask the verifier to write one line from its sentences; the value is the
    :class:`Verdict` of comparing it with the model's line (:func:`judge`)."""
    started = time.perf_counter()
    msgs = [
        {"role": "system", "content": prompts.text("verifier_system")},
        {
            "role": "user",
            "content": prompts.render(
                "verifier_user",
                variables=_variables_text(ir),
                sentences="\n".join(f"- {s}" for s in item.sentences),
                mentions=item.mentions,
                request=item.request or f"the {item.kind}",
            ),
        },
    ]
    try:
        res = await llm.achat(
            msgs, temperature=0.0, max_tokens=max_tokens, response_format=VerifierReply, tag=ROLE
        )
    except Exception as exc:  # LLM errors and replies that never validated
        return _failed(plan, started, exc)
    v = judge(item, res.parsed[0].expression, ir, problem)
    summary = f"{item.name} `{item.expression}`: {v.correct} (wrote `{v.wrote[:80]}`)"
    return roles.RoleReply(
        values=[v],
        texts=[res.texts[0]],
        step=roles.answered_step(ROLE, plan, res, started, summary),
    )


@dataclass
class _Outcome:
    """What the verifier found on one attempt: usable fixes and whether every line passed."""

    fixes: list[tuple[Item, str]] = field(default_factory=list)
    unusable: list[tuple[Item, str]] = field(default_factory=list)
    #: Every line that got no usable fix was asked and passed.
    others_passed: bool = True

    @property
    def all_passed(self) -> bool:
        return self.others_passed and not self.fixes


def _passed(item: Item) -> Any:
    """A "yes" for a line the verifier wrote itself (a fix is not checked again)."""
    reply = roles.RoleReply(
        values=[Verdict("yes", "", item.expression)],
        texts=[],
        step=StepRecord(role=ROLE, plan_id="verify", summary=f"{item.name}: the verifier's fix"),
    )
    return node(reply, name="verified_fix")


class _FixSteps:
    """The ``apply_fix`` op of one fix attempt."""

    def __init__(self, parent: Attempt, child: Attempt, fixes: list[tuple[Item, str]]) -> None:
        self.parent, self.child, self.fixes = parent, child, fixes

    @bundle(name="apply_fix", doc=_DOCS["apply_fix"])
    def apply_fix(self, model: Any, *verdicts: Any) -> Any:
        """The parent's IR with the verifier's fixes, as a validated ModelIR."""
        from optiforge.solvers.errors import IRValidationError
        from optiforge.solvers.ir import ModelIR

        ir = self.parent.ir or {}
        for item, expr in self.fixes:
            ir = replace_line(ir, item, expr)
        child = self.child
        child.ir = ir
        try:
            child.model = ModelIR.from_json(ir)
            return child.model
        except IRValidationError as exc:  # usable_line validated each fix; not expected
            child.error = str(exc)
            return f"not built: {child.error}"


class Verifier:
    """The sentence-level verifier of one run: its cache of checked lines and its calls."""

    def __init__(self, run: Any) -> None:
        self.run = run
        #: Item key -> the reply node of its check (a plain "yes" node for a fix's own line).
        self.cache: dict[str, Any] = {}
        self.calls = 0
        #: Attempt index -> how many of its lines were answered when it was last recorded.
        self.recorded: dict[int, int] = {}

    @bundle(name="verify", doc=_DOCS["verify"])
    async def check_item(
        self, problem: str, verifier_system: str, findings: Any, item: dict[str, Any]
    ) -> roles.RoleReply:
        """Ask the verifier model about one line of a checked formulation."""
        run = self.run
        ps = run.prompts.with_values(verifier_system=verifier_system)
        it = Item(**{**item, "sentences": tuple(item["sentences"])})
        ir = findings.ir if findings is not None and findings.ir is not None else {}
        return await run.ask(ROLE, "verify", ask_verifier(run.llms["critic"], ps, problem, ir, it))

    def _room(self) -> int:
        """How many more calls the cap, the LLM budget and the time left allow."""
        run = self.run
        room = min(run.config.verify_calls - self.calls, run.budget.llm_samples - run.llm_samples)
        left = run.time_left()
        if left is not None:
            est = run.call_seconds(ROLE)
            if left <= 0 or (est is not None and est > left):
                return 0
        return max(0, room)

    def leading(self) -> list[Attempt]:
        """The IR attempts of the leading vote cluster(s) not verified yet."""
        run = self.run
        clusters: list[list[Candidate]] = []
        for c in run.candidates():
            for cl in clusters:
                if same_value(c.value, cl[0].value):
                    cl.append(c)
                    break
            else:
                clusters.append([c])
        if not clusters:
            return []
        weights = [sum(c.weight for c in cl) for cl in clusters]
        top = max(weights)
        out = []
        for cl, w in sorted(zip(clusters, weights, strict=True), key=lambda p: -p[1]):
            if w < LEADING_SHARE * top:
                continue
            for c in cl:
                att = run.attempts[c.index]
                # An indexed model (a filled template) has no one line per sentence to check.
                indexed = att.ir is not None and bool(att.ir.get("sets"))
                if (
                    att.source == "ir"
                    and att.ir is not None
                    and att.verified is None
                    and not indexed
                ):
                    out.append(att)
        return out

    async def verify_leading(self) -> list[Attempt]:
        """Verify the leading attempts; solve each proposed fix as a new attempt. Returns
        the new attempts (empty when nothing was fixed)."""
        run = self.run
        targets = self.leading()
        if not targets:
            return []
        plans = {a.index: items_of(run.problem, a.ir) for a in targets}
        pending: dict[str, tuple[Attempt, Item]] = {}
        for att in targets:
            for it in plans[att.index]:
                if it.key not in self.cache and it.key not in pending:
                    pending[it.key] = (att, it)
        # Lines the text pairs numbers against, and ratio lines, first; the objective last.
        order = sorted(
            pending.items(),
            key=lambda kv: (
                0
                if kv[1][1].kind == "constraint"
                and (kv[1][1].mentions or misaligned(run.problem, kv[1][0].ir, kv[1][1].expression))
                else 1
                if kv[1][1].kind == "constraint"
                else 2
            ),
        )
        asked = order[: self._room()]
        if asked:
            system = run.param("verifier_system")

            async def one(key: str, att: Attempt, it: Item) -> None:
                item_node = node(
                    {**asdict(it), "sentences": list(it.sentences)}, name="verify_item"
                )
                reply = await self.check_item(
                    run.problem_node, system, att.findings_node, item_node
                )
                run.record(reply.value)
                self.cache[key] = reply

            self.calls += len(asked)
            await asyncio.gather(*(one(k, a, it) for k, (a, it) in asked))
        new: list[Attempt] = []
        for att in targets:
            answered = sum(it.key in self.cache for it in plans[att.index])
            if self.recorded.get(att.index) == answered:
                continue  # nothing new on this attempt since its last record
            self.recorded[att.index] = answered
            out = self._outcome(att, plans[att.index])
            if out.fixes:
                att.verified = False
                child = await self._solve_fix(att, out, plans[att.index])
                if child is not None:
                    new.append(child)
            elif out.all_passed:
                att.verified = True
            self._record(att, plans[att.index], out, new[-1] if out.fixes and new else None)
        if new:
            run.fired("verify")
        return new

    def _outcome(self, att: Attempt, items: list[Item]) -> _Outcome:
        out = _Outcome()
        for it in items:
            reply = self.cache.get(it.key)
            value = getattr(reply, "value", None)
            if value is None or not value.values:
                out.others_passed = False  # not asked (cap, budget, time) or the call failed
                continue
            v = value.values[0]
            if v.correct == "yes":
                continue
            if v.correct == "no" and v.fixed:
                out.fixes.append((it, v.fixed))
            else:
                out.others_passed = False
                out.unusable.append((it, v.wrote))
        # Two fixes that write the same requirement: the verifier mixed up two lines, and
        # which one is right cannot be told; neither is applied.
        ir = att.ir or {}
        clash = {
            i
            for i, (it, expr) in enumerate(out.fixes)
            for j, (_, other) in enumerate(out.fixes)
            if i != j and it.kind == "constraint" and duplicated(ir, it, expr, [other])
        }
        for i in sorted(clash):
            out.others_passed = False
            out.unusable.append((out.fixes[i][0], out.fixes[i][1]))
        out.fixes = [f for i, f in enumerate(out.fixes) if i not in clash]
        return out

    async def _solve_fix(self, parent: Attempt, out: _Outcome, items: list[Item]) -> Attempt | None:
        run = self.run
        if run.solver_runs >= run.budget.solver_runs:
            return None
        child = run.new_attempt("verify", parent=parent.index)
        # The fixed model rests on every verdict on the parent's lines (fixes and passes).
        verdicts = [self.cache[it.key] for it in items if it.key in self.cache]
        child.model_node = _FixSteps(parent, child, out.fixes).apply_fix(
            parent.model_node, *verdicts
        )
        # The fixed lines were written by the verifier: they count as checked; the other
        # lines are the parent's, already in the cache.
        for it, expr in out.fixes:
            fixed_item = Item(it.kind, it.name, expr, it.sentences, it.mentions, it.request)
            self.cache.setdefault(fixed_item.key, _passed(fixed_item))
        await run.solve_and_check(child)
        if out.others_passed:
            child.verified = True
        return child

    def _record(
        self, att: Attempt, items: list[Item], out: _Outcome, child: Attempt | None
    ) -> None:
        if out.fixes:
            what = "; ".join(f"{it.name} `{it.expression}` -> `{e}`" for it, e in out.fixes)
            summary = f"attempt {att.index}: fixed {what}" + (
                f" (solved as attempt {child.index}"
                + (f", objective {child.value:g})" if child.value is not None else ")")
                if child is not None
                else " (not solved: no solver runs left)"
            )
        elif out.all_passed:
            summary = f"attempt {att.index}: all {len(items)} checked line(s) pass"
        else:
            summary = f"attempt {att.index}: no usable fix"
        self.run.steps.append(
            StepRecord(
                role=ROLE,
                plan_id="verify",
                ok=True,
                summary=summary[:300],
                detail={
                    "attempt": att.index,
                    "verified": att.verified,
                    "fix_attempt": child.index if child is not None else None,
                    "fixes": [
                        {"line": it.name, "from": it.expression, "to": e} for it, e in out.fixes
                    ],
                    "unusable": [
                        {"line": it.name, "from": it.expression, "reply": r}
                        for it, r in out.unusable
                    ],
                    "lines": len(items),
                },
            )
        )
