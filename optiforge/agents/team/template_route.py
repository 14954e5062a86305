"""The ``templates`` lever (issue #18): a problem-class template, filled from extracted
data, solved as one more attempt of the vote.

Small models are reliable at filling a typed table from text and unreliable at inventing
the structure of a large model. With ``TeamConfig.templates`` on, a run

1. **classifies** the problem without a model call (:func:`classify`): the template whose
   cues score highest (:func:`~.templates.match_cues`) fits when it scores at least
   ``template_min_score`` with at least :data:`MIN_CUES` distinct cues, no other template
   scores as high, and the problem is large
   enough to be worth a call: a parsed table or number list, or at least
   :data:`MIN_CHARS` characters. Short one- or two-product LPs stay with the formulator,
   which solves them well. A template whose structure the text lacks is set aside first
   (:func:`structure_misfit`: none of its ``requires_any`` phrases, or a ``matrix_table``
   template when every table lists things against attributes);
2. **extracts** the template's sets and parameters with one grammar-constrained call (role
   ``extractor``, :func:`~.extraction.extract`): tables are read from their cells, the
   reply's schema has exactly the template's names, and the checks flag unused numbers,
   inconsistent dimensions and units;
3. **fills** the template (op ``fill_template``): an indexed :class:`~optiforge.solvers.ir.
   ModelIR` written once over its sets, which the solver expands. The fit test comes first:
   a template whose sets and parameters leave more than :data:`MAX_UNUSED_SHARE` of the
   text's numbers unused does not describe the problem (the cues are a cheap guess), and
   is not solved;
4. **solves and checks** it like any formulation (plan ``template``). The extraction's
   findings join the critic's: a number of the text that no parameter uses may be a side
   constraint the template does not have, so it makes the attempt suspicious.

A clean template attempt votes with ``template_weight`` (default 2: it alone can make the
vote confident, so a long problem stops sampling early); a suspicious one with its usual
fraction of that. The extraction runs alongside the first round of formulations, so it
costs the deadline one call's time, not two. The lever fires (``Solution.levers``) when the
extraction call is made.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any

from optiforge.agents.solution import StepRecord
from optiforge.agents.team.extraction import Extraction, extract, unused_numbers
from optiforge.agents.team.state import Attempt
from optiforge.agents.team.tables import ParsedTable, parse_tables
from optiforge.agents.team.templates import (
    Template,
    TemplateError,
    load_template,
    match_cues,
    phrases_found,
    template_ids,
)
from optiforge.trace import bundle

__all__ = [
    "MIN_CHARS",
    "MIN_CUES",
    "PLAN",
    "Classification",
    "TemplateRoute",
    "classify",
    "structure_misfit",
]

#: The plan (and attempt) name of a template attempt.
PLAN = "template"
#: Distinct cues a template needs (one phrase, however long, is not enough evidence).
MIN_CUES = 2
#: A template fits only if its data accounts for the text's numbers: at most this share of
#: them (and at least one) may be left out of its sets and parameters. (A number the
#: extractor calls "other" does not count: a side constraint the template lacks would
#: hide there.)
MAX_UNUSED_SHARE = 0.2
#: A problem without a table or number list needs at least this many characters for the
#: template route: shorter ones are the small LPs the formulator writes well by hand.
MIN_CHARS = 600

_DOCS = {
    "classify": "Choose the problem-class template from the text's cues (no model call): the "
    "best-scoring template when it scores enough, beats the others and the problem is large "
    "enough (a table, or a long text).",
    "extract": "The extractor model fills the template's sets and parameters from the text "
    "(grammar-constrained JSON; table values are read from the parsed cells) and the "
    "deterministic checks look at numbers, dimensions and units.",
    "fill_template": "The template filled with the extracted data: an indexed model written "
    "once over its sets (or the reason it could not be filled).",
}


@dataclass(frozen=True)
class Classification:
    """What :func:`classify` decided: the template (None: none fits) and why."""

    template: str | None
    score: float
    cues: tuple[str, ...]
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cues": list(self.cues)}


def structure_misfit(tpl: Template, problem: str, tables: list[ParsedTable]) -> str | None:
    """Why the text cannot be an instance of ``tpl`` whatever its cues say, or None: it
    lacks every phrase the template ``requires_any`` of, or the template's data is a matrix
    (``matrix_table``) and the text's tables all list things against attributes."""
    if tpl.requires_any and not phrases_found(problem, tpl.requires_any):
        return f"{tpl.id} needs one of {', '.join(repr(c) for c in tpl.requires_any)}"
    if tpl.matrix_table and tables and not any(t.is_matrix() for t in tables):
        t = tables[0]
        cols = ", ".join(repr(c) for c in t.column_labels[:3])
        rows = ", ".join(repr(c) for c in t.row_labels[:3])
        return (
            f"{tpl.id} needs a table of things by things (sources by destinations); no table "
            f"of the text is one (table 1: columns {cols}; rows {rows})"
        )
    return None


def classify(problem: str, *, min_score: float = 2.0) -> Classification:
    """The template for ``problem``, or None with the reason (see the module docs)."""
    tables = parse_tables(problem)
    found = match_cues(problem, top=len(template_ids()))
    misfits = {tid: structure_misfit(load_template(tid), problem, tables) for tid, _, _ in found}
    c = _rank([m for m in found if misfits[m[0]] is None], problem, tables, min_score)
    if c.template is None:
        # A template that scored as well but that the text's structure rules out.
        refused = [misfits[tid] for tid, score, _ in found if misfits[tid] and score >= c.score]
        if refused:
            cues = c.cues or tuple(found[0][2])
            score = max(c.score, found[0][1])
            reason = "structure: " + "; ".join(refused) + ("" if not c.cues else f"; {c.reason}")
            c = Classification(None, score, cues, reason)
    return c


def _rank(
    matches: list[tuple[str, float, list[str]]],
    problem: str,
    tables: list[ParsedTable],
    min_score: float,
) -> Classification:
    """The best of the templates whose structure the text allows, by the cue rules."""
    if not matches:
        return Classification(None, 0.0, (), "no template's cues occur in the text")
    tid, score, cues = matches[0]
    if len(cues) < MIN_CUES:
        return Classification(
            None, score, tuple(cues), f"best match {tid} has one cue only ({cues[0]!r})"
        )
    if score < min_score:
        return Classification(
            None,
            score,
            tuple(cues),
            f"best match {tid} scores {score:g} cue points, below {min_score:g}",
        )
    if len(matches) > 1 and matches[1][1] >= score:
        return Classification(
            None,
            score,
            tuple(cues),
            f"ambiguous: {tid} and {matches[1][0]} both score {score:g} cue points",
        )
    if not tables and len(problem) < MIN_CHARS:
        return Classification(
            None,
            score,
            tuple(cues),
            f"{tid} scores {score:g}, but the problem is short ({len(problem)} characters, "
            "no table): the formulator writes it directly",
        )
    size = f"{len(tables)} table(s)" if tables else f"{len(problem)} characters"
    return Classification(
        tid, score, tuple(cues), f"{tid}: cues {', '.join(cues)} ({score:g} points), {size}"
    )


class _FillStep:
    """The ``fill_template`` op of one template attempt."""

    def __init__(self, att: Attempt, problem: str) -> None:
        self.att, self.problem = att, problem

    @bundle(name="fill_template", doc=_DOCS["fill_template"])
    def fill(self, extraction: Extraction) -> Any:
        """The filled template as a validated ModelIR, or why it could not be filled."""
        from optiforge.solvers.errors import IRValidationError

        att = self.att
        errors = [f.message for f in extraction.findings if f.severity == "error"]
        if extraction.error or errors:
            att.error = f"extraction: {extraction.error or '; '.join(errors)}"
            return f"not filled: {att.error}"
        unused, in_text = unused_numbers(extraction, self.problem, explained=False)
        total = len(in_text)
        if len(unused) > max(1, MAX_UNUSED_SHARE * total):
            att.error = (
                f"the {extraction.template} template does not fit: {len(unused)} of the "
                f"text's {total} numbers are not its data ("
                + ", ".join(f"{n:g}" for n in unused[:8])
                + ")"
            )
            return f"not filled: {att.error}"
        try:
            model = extraction.fill()
        except (TemplateError, IRValidationError, ValueError) as exc:
            att.error = f"template {extraction.template}: {exc}"
            return f"not filled: {att.error}"
        att.model = model
        att.ir = model.model_dump(mode="json")
        return model


class TemplateRoute:
    """The template route of one run (lever ``templates``)."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self.classification: Classification | None = None
        self.extraction: Extraction | None = None
        self.cls_node: Any = None

    @bundle(name="classify", doc=_DOCS["classify"])
    def classify_problem(self, problem: str) -> Classification:
        """The template that fits ``problem`` (or None), decided from its cues."""
        return classify(problem, min_score=self.run.config.template_min_score)

    @bundle(name="extract", doc=_DOCS["extract"])
    async def extract_data(
        self, problem: str, extractor_system: str, classification: Classification
    ) -> Extraction:
        """Ask the extractor model for the template's data; never raises for a model
        failure (the extraction then carries the error)."""
        run = self.run
        ps = run.prompts.with_values(extractor_system=extractor_system)
        return await run.ask(
            "extractor",
            PLAN,
            extract(run.llms["formulator"], ps, problem, template=classification.template),
        )

    def classify_step(self) -> Classification:
        """Classify the problem (op ``classify``, no model call) and record the decision."""
        run = self.run
        started = time.perf_counter()
        self.cls_node = self.classify_problem(run.problem_node)
        c = self.classification = self.cls_node.value
        run.steps.append(
            StepRecord(
                role="planner",
                plan_id=PLAN,
                elapsed_s=round(time.perf_counter() - started, 3),
                ok=c.template is not None,
                summary=f"template: {c.reason}" if c.template else f"template: none ({c.reason})",
                detail={"classification": c.as_dict()},
            )
        )
        return c

    async def attempt(self, reserved: int = 0) -> Attempt | None:
        """Extract, fill, solve and check the template :meth:`classify_step` chose; the
        template attempt, or None when none fits or the budget (less ``reserved`` samples
        the first round is taking) or the time left cannot pay for the extraction."""
        run = self.run
        c = self.classification if self.classification is not None else self.classify_step()
        if c.template is None:
            return None
        left = run.time_left()
        skip = None
        if not run.can_sample(1 + reserved):
            skip = "no LLM sample left in the budget for the extraction"
        elif left is not None and left <= 0:
            skip = "no time left before the deadline for the extraction"
        if skip is not None:
            run.steps.append(
                StepRecord(
                    role="extractor",
                    plan_id=PLAN,
                    ok=False,
                    summary=f"template {c.template} not used: {skip}",
                )
            )
            return None
        run.fired("templates")
        att = run.new_attempt(PLAN)
        att.vote_factor = run.config.template_weight
        try:
            ex_node = await self.extract_data(
                run.problem_node, run.param("extractor_system"), self.cls_node
            )
        except asyncio.CancelledError:
            att.error = "cancelled at the deadline before the extraction's reply arrived"
            raise
        ex = self.extraction = ex_node.value
        if ex.step is not None:
            run.steps.append(ex.step.model_copy(update={"plan_id": PLAN}))
        run.llm_samples += 1
        # The checks' warnings (numbers no parameter uses, values not in the text, units)
        # join the critic's findings of the solved template.
        att.extra_issues = [f for f in ex.findings if f.severity != "error"]
        att.model_node = _FillStep(att, run.problem).fill(ex_node)
        await run.solve_and_check(att)
        if att.ir is None:  # not filled: solve_and_check ran only the checks
            run.steps.append(
                StepRecord(
                    role="solver",
                    plan_id=PLAN,
                    ok=False,
                    summary=f"attempt {att.index}: not built: {att.error}"[:300],
                    detail={"attempt": att.index, "template": c.template},
                )
            )
        return att
