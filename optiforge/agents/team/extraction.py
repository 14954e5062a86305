"""Data extraction as its own step: the sets and parameter tables of a problem, as JSON.

Structure and data are asked for separately (issue #18): a small model is reliable at
filling a typed table from text and unreliable at inventing the structure of a large
model. :func:`extract` first parses the text's tables deterministically
(:mod:`optiforge.agents.team.tables`), shows them to the model numbered, and asks with
grammar-constrained JSON for

- the **sets** (name, elements, the sentence they come from);
- the **parameters** (name, index sets, units, source), each either read from a parsed table
  (``table``, and ``row`` or ``column`` when only one row or column of it is meant), in
  which case the values are taken from the table's cells here, or typed as ``values``;
- the **other numbers** of the text that are not data, each with what it means.

With a template (:mod:`optiforge.agents.team.templates`) the reply's schema has exactly the
template's sets and parameters as fields, so the names cannot drift. The result,
:class:`Extraction`, carries deterministic findings (:class:`~.checks.Issue`):

- ``numbers``: every number of the text is used by a parameter, is a set element or size, or
  is explained; values that appear nowhere in the text are flagged too;
- ``dimensions``: every index set exists and every parameter has one value per index, and
  with a template every needed set and parameter is there with the template's index sets;
- ``units``: with a template, the units a problem states agree with the template's
  dimensions (a cost "per kg" multiplies an amount in kg, supply and demand share a unit).
"""

from __future__ import annotations

import math
import re
import time
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, Field, create_model

from optiforge.agents.solution import StepRecord
from optiforge.agents.team.checks import Issue, numbers_in
from optiforge.agents.team.prompts import PromptSet
from optiforge.agents.team.roles import answered_step, failed_reply
from optiforge.agents.team.tables import ParsedTable, attribute_label, cell_number, parse_tables
from optiforge.agents.team.templates import Template, load_template
from optiforge.agents.team.templates import fill as fill_template
from optiforge.llm.protocol import ChatClient
from optiforge.solvers.ir import ModelIR

__all__ = [
    "ExtractedParameter",
    "ExtractedSet",
    "Extraction",
    "ExtractionReply",
    "OtherNumber",
    "check_extraction",
    "extract",
    "extraction_messages",
    "reply_schema",
    "sentence_values",
    "unused_numbers",
]

ROLE = "extractor"


# ---------------------------------------------------------------------------------------------
# What the model writes (grammar-constrained JSON)


class ExtractedSet(BaseModel):
    """A set of the problem: its name and elements."""

    name: str = Field(max_length=40, description="identifier, e.g. 'PLANTS'")
    elements: list[str] = Field(
        default_factory=list,
        max_length=60,
        description="element names; may stay empty when a table's row or column labels are the elements",
    )
    source: str = Field(default="", max_length=160)


class ExtractedParameter(BaseModel):
    """A parameter: from a parsed table (``table`` > 0) or typed as ``values``."""

    name: str = Field(max_length=40, description="identifier, e.g. 'cost'")
    index_sets: list[str] = Field(default_factory=list, max_length=3)
    units: str = Field(default="", max_length=40, description="e.g. 'tons' or '$ per ton'")
    source: str = Field(default="", max_length=160)
    table: int = Field(
        default=0, ge=0, le=50, description="number of the table holding it, 0 if none"
    )
    row: str = Field(default="", max_length=40, description="the one table row that holds it")
    column: str = Field(default="", max_length=40, description="the one table column that holds it")
    values: list[float] = Field(
        default_factory=list, max_length=400, description="row-major values when not from a table"
    )


class OtherNumber(BaseModel):
    """A number of the text that is not data (a count, a year, a label), and what it means."""

    value: float
    meaning: str = Field(default="", max_length=80)


class ExtractionReply(BaseModel):
    """The extractor's reply without a template."""

    sets: list[ExtractedSet] = Field(default_factory=list, max_length=8)
    parameters: list[ExtractedParameter] = Field(default_factory=list, max_length=24)
    other_numbers: list[OtherNumber] = Field(default_factory=list, max_length=24)


class _SetData(BaseModel):
    elements: list[str] = Field(default_factory=list, max_length=60)
    source: str = Field(default="", max_length=160)


class _ParamData(BaseModel):
    units: str = Field(default="", max_length=40)
    source: str = Field(default="", max_length=160)
    table: int = Field(default=0, ge=0, le=50)
    row: str = Field(default="", max_length=40)
    column: str = Field(default="", max_length=40)
    values: list[float] = Field(default_factory=list, max_length=400)


@lru_cache(maxsize=64)
def reply_schema(template_id: str | None = None) -> type[BaseModel]:
    """The reply model: :class:`ExtractionReply`, or for a template one whose ``sets`` and
    ``parameters`` objects have exactly the template's names as fields (optional and
    defaulted ones may be null)."""
    if template_id is None:
        return ExtractionReply
    tpl = load_template(template_id)
    set_fields: dict[str, Any] = {
        s.name: ((_SetData | None, None) if s.default else (_SetData, ...)) for s in tpl.sets
    }
    param_fields: dict[str, Any] = {
        p.name: (
            (_ParamData | None, None)
            if (p.optional or p.default is not None)
            else (_ParamData, ...)
        )
        for p in tpl.parameters
    }
    sets_model = create_model(f"Sets_{tpl.id}", **set_fields)  # type: ignore[call-overload]
    params_model = create_model(f"Parameters_{tpl.id}", **param_fields)  # type: ignore[call-overload]
    return create_model(  # type: ignore[call-overload]
        f"Extraction_{tpl.id}",
        sets=(sets_model, ...),
        parameters=(params_model, ...),
        other_numbers=(list[OtherNumber], Field(default_factory=list, max_length=24)),
    )


def _normalize_reply(reply: BaseModel, tpl: Template | None) -> ExtractionReply:
    """A template reply as the generic list form (names and index sets from the template)."""
    if tpl is None:
        return reply  # type: ignore[return-value]
    sets = []
    for s in tpl.sets:
        d = getattr(reply.sets, s.name)  # type: ignore[attr-defined]
        if d is not None:
            sets.append(ExtractedSet(name=s.name, elements=d.elements, source=d.source))
    params = []
    for p in tpl.parameters:
        d = getattr(reply.parameters, p.name)  # type: ignore[attr-defined]
        if d is not None:
            params.append(
                ExtractedParameter(name=p.name, index_sets=p.index_sets, **d.model_dump())
            )
    return ExtractionReply(
        sets=sets,
        parameters=params,
        other_numbers=reply.other_numbers,  # type: ignore[attr-defined]
    )


# ---------------------------------------------------------------------------------------------
# The result


class ParameterData(BaseModel):
    """One parameter's values, row-major over its index sets."""

    index_sets: list[str] = Field(default_factory=list)
    values: list[float] = Field(default_factory=list)
    units: str = ""
    source: str = ""
    #: Where the values came from: "table 2", "table 1 column 'Supply'", or "text".
    origin: str = "text"


class Extraction(BaseModel):
    """Sets and parameters of one problem, the parsed tables, and the checks' findings."""

    template: str | None = None
    sets: dict[str, list[str]] = Field(default_factory=dict)
    parameters: dict[str, ParameterData] = Field(default_factory=dict)
    other_numbers: list[OtherNumber] = Field(default_factory=list)
    tables: list[ParsedTable] = Field(default_factory=list)
    set_sources: dict[str, str] = Field(default_factory=dict)
    findings: list[Issue] = Field(default_factory=list)
    step: StepRecord | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """No error and no error-level finding."""
        return self.error is None and not any(f.severity == "error" for f in self.findings)

    def sources(self) -> dict[str, str]:
        """The text each set and parameter came from (for ``fill(..., sources=)``)."""
        out = {k: v for k, v in self.set_sources.items() if v}
        out.update({k: p.source for k, p in self.parameters.items() if p.source})
        return out

    def fill(self, template_id: str | None = None, **kwargs: Any) -> ModelIR:
        """The template filled with this data (:func:`~.templates.fill`)."""
        tid = template_id or self.template
        if tid is None:
            raise ValueError("no template: pass template_id")
        params = {
            k: p.values if p.index_sets else p.values[0]
            for k, p in self.parameters.items()
            if p.values
        }
        return fill_template(tid, self.sets, params, sources=self.sources(), **kwargs)

    def summary(self) -> str:
        """Names and dimensions, one line each (what a structure step sees, not raw text)."""
        lines = [
            f"set {k} ({len(v)}): {', '.join(v[:10])}{' ...' if len(v) > 10 else ''}"
            for k, v in self.sets.items()
        ]
        for k, p in self.parameters.items():
            idx = f"[{', '.join(p.index_sets)}]" if p.index_sets else ""
            unit = f" ({p.units})" if p.units else ""
            shown = ", ".join(f"{v:g}" for v in p.values[:8]) + (
                " ..." if len(p.values) > 8 else ""
            )
            lines.append(f"parameter {k}{idx}{unit}: {shown}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Mapping tables to names


def _norm(label: str) -> str:
    return re.sub(r"[^a-z0-9]", "", label.lower())


def _match(
    elements: list[str],
    labels: list[str],
    what: str,
    notes: list[Issue],
    *,
    by_position: bool = True,
) -> list[int] | None:
    """The label index of each element (exact, then containment, then by position)."""
    nl = [_norm(x) for x in labels]
    out: list[int] = []
    for e in elements:
        ne = _norm(e)
        hits = [k for k, x in enumerate(nl) if x == ne]
        if not hits and ne:
            hits = [k for k, x in enumerate(nl) if x and (ne in x or x in ne)]
        if len(hits) != 1:
            break
        out.append(hits[0])
    else:
        if len(set(out)) == len(out):
            return out
    if by_position and len(elements) == len(labels):
        notes.append(
            Issue(
                check="dimensions",
                severity="warning",
                message=f"{what}: elements {elements[:6]} do not name the table's labels "
                f"{labels[:6]}; matched by position",
                fix="use the table's own labels as the set's elements",
            )
        )
        return list(range(len(labels)))
    return None


_TOTAL = re.compile(r"^(total|sum|demand|supply|capacity|requirement|required|available)s?\b", re.I)


def _table_values(
    p: ExtractedParameter,
    tables: list[ParsedTable],
    sets: dict[str, list[str]],
    used_rows: set[str],
    used_cols: set[str],
    notes: list[Issue],
) -> list[float] | None:
    """Values of ``p`` read from its table (and set elements filled from labels if empty)."""
    if not 1 <= p.table <= len(tables):
        notes.append(
            Issue(
                check="dimensions",
                severity="error",
                message=f"parameter {p.name!r} names table {p.table}, but the text has "
                f"{len(tables)} table(s)",
                fix="give the number of one of the listed tables, or type the values",
            )
        )
        return None
    t = tables[p.table - 1]
    rows, cols = t.row_labels, t.column_labels
    grid = [[cell_number(c) for c in r[1:]] for r in t.rows]

    def find(label: str, labels: list[str], what: str) -> int | None:
        k = _match([label], labels, what, [])
        if k is None:
            notes.append(
                Issue(
                    check="dimensions",
                    severity="error",
                    message=f"parameter {p.name!r}: table {p.table} has no {what} {label!r} "
                    f"({', '.join(labels[:8])})",
                    fix=f"name one of the table's {what}s",
                )
            )
            return None
        return k[0]

    def elements_for(
        set_name: str, labels: list[str], cells: list[float | None], skip: set[str]
    ) -> list[str]:
        picked = [
            lab
            for lab, v in zip(labels, cells, strict=False)
            if v is not None and lab and _norm(lab) not in skip and not _TOTAL.match(lab)
        ]
        given = sets.get(set_name)
        if given:
            things = [lab for lab in picked if not attribute_label(lab)]
            if (
                len(dims) == 2
                and len(things) > len(given)
                and _match(given, things, "", [], by_position=False) is not None
            ):
                # The set names some of the table's things and leaves others out (a
                # customer dropped): a matrix over the set covers every one of them.
                missing = [
                    lab for lab in things if _match([lab], given, "", [], by_position=False) is None
                ]
                sets[set_name] = given + missing
                notes.append(
                    Issue(
                        check="dimensions",
                        severity="warning",
                        message=f"set {set_name!r}: added {missing}, which table {p.table} "
                        f"lists beside {given[:6]}",
                        fix=f"list every member of {set_name}",
                    )
                )
            return sets[set_name]
        sets[set_name] = picked or [str(k) for k in range(1, len(labels) + 1)]
        return sets[set_name]

    dims = p.index_sets
    if len(dims) == 1 and bool(p.column) != bool(p.row):
        # "column: Demand" for what the table has as a row (or the other way round).
        label = p.column or p.row
        in_rows = _match([label], rows, "", [], by_position=False) is not None
        in_cols = _match([label], cols, "", [], by_position=False) is not None
        if p.column and in_rows and not in_cols:
            p = p.model_copy(update={"row": label, "column": ""})
        elif p.row and in_cols and not in_rows:
            p = p.model_copy(update={"column": label, "row": ""})
    if p.column and len(dims) <= 1:
        c = find(p.column, cols, "column")
        if c is None:
            return None
        col_cells = [g[c] if c < len(g) else None for g in grid]
        if not dims:
            r = find(p.row, rows, "row") if p.row else 0
            return None if r is None or col_cells[r] is None else [col_cells[r]]  # type: ignore[list-item]
        els = elements_for(dims[0], rows, col_cells, used_rows)
        idx = _match(els, rows, f"parameter {p.name!r} rows", notes)
        return None if idx is None else [col_cells[k] for k in idx]  # type: ignore[misc]
    if p.row and len(dims) <= 1:
        r = find(p.row, rows, "row")
        if r is None:
            return None
        row_cells = grid[r]
        if not dims:
            return None if row_cells[0] is None else [row_cells[0]]
        els = elements_for(dims[0], cols, row_cells, used_cols)
        idx = _match(els, cols, f"parameter {p.name!r} columns", notes)
        return None if idx is None else [row_cells[k] for k in idx]  # type: ignore[misc]
    if len(dims) == 1:
        # A one-row table (a number list) or a one-column table.
        if len(rows) == 1:
            els = elements_for(dims[0], cols, grid[0], used_cols)
            if t.kind == "sequence":
                if len(els) != len(grid[0]):
                    return None
                return grid[0]  # type: ignore[return-value]
            idx = _match(els, cols, f"parameter {p.name!r} columns", notes)
            return None if idx is None else [grid[0][k] for k in idx]  # type: ignore[misc]
        first = [g[0] if g else None for g in grid]
        els = elements_for(dims[0], rows, first, used_rows)
        idx = _match(els, rows, f"parameter {p.name!r} rows", notes)
        return None if idx is None else [first[k] for k in idx]  # type: ignore[misc]
    if len(dims) == 2:
        rows_set, cols_set = dims
        r_els = sets.get(rows_set) or []
        c_els = sets.get(cols_set) or []
        transposed = False
        if (
            r_els
            and c_els
            and _match(r_els, rows, "", [], by_position=False) is None
            and _match(r_els, cols, "", [], by_position=False) is not None
        ):
            transposed = True  # the table lists the first index set across its columns
        if transposed:
            rows, cols = cols, rows
            grid = [list(x) for x in zip(*grid, strict=False)]
        r_els = elements_for(
            rows_set, rows, [next((v for v in g if v is not None), None) for g in grid], used_rows
        )
        col_first = [
            next((g[k] for g in grid if k < len(g) and g[k] is not None), None)
            for k in range(len(cols))
        ]
        c_els = elements_for(cols_set, cols, col_first, used_cols)
        ri = _match(r_els, rows, f"parameter {p.name!r} rows ({rows_set})", notes)
        ci = _match(c_els, cols, f"parameter {p.name!r} columns ({cols_set})", notes)
        if ri is None or ci is None:
            return None
        return [grid[r][c] if c < len(grid[r]) else None for r in ri for c in ci]  # type: ignore[misc]
    notes.append(
        Issue(
            check="dimensions",
            severity="error",
            message=f"parameter {p.name!r}: a table holds one or two index sets, not {len(dims)}",
            fix="type the values row-major instead",
        )
    )
    return None


def _fits(p: ExtractedParameter, values: list[Any], sets: dict[str, list[str]]) -> bool:
    """One value per combination of the parameter's (known) index sets."""
    if any(s not in sets for s in p.index_sets):
        return True  # check_dimensions reports the unknown set
    return len(values) == math.prod(len(sets[s]) for s in p.index_sets)


_CLAUSE_END = re.compile(r"[.;:!?\n](?:\s|$)|\n")
_NUMBER_AT = re.compile(r"(?<![A-Za-z_\d.])\$?(\d+(?:,\d{3})*(?:\.\d+)?)")


def _aliases(element: str) -> list[str]:
    """How the text may name a set element: its label, and for "Plant A (Atlanta)" also
    "Plant A" and "Atlanta". Names of one character are too ambiguous to look for."""
    out = [element.strip()]
    m = re.match(r"^(.*?)\s*\((.*?)\)\s*$", element.strip())
    if m:
        out += [m.group(1).strip(), m.group(2).strip()]
    return [a for a in out if len(_norm(a)) >= 2]


def _prose(text: str) -> str:
    """The text with its table lines blanked (same length, so positions stay)."""
    return "\n".join(" " * len(line) if "|" in line else line for line in text.split("\n"))


def sentence_values(
    elements: list[str],
    text: str,
    claimed: set[int] | None = None,
    *,
    words: tuple[str, ...] = (),
    taken: list[set[float]] | None = None,
) -> tuple[list[float], list[int]] | None:
    """One number per element read from the sentences that name the elements, or None.

    For "Plant A can produce at most 800 valves per week, while Plant B can produce at most
    1000" and the elements Plant A, Plant B: ``[800, 1000]``. Each mention of an element
    (its label, or the parts of "Plant A (Atlanta)") opens a window that ends at the next
    mention of another element or at the end of the clause. In the first window that has a
    usable number, the element's value is the first number just after one of ``words``
    (the parameter's name: "weight 4" for ``weight``), else the first number that is not
    already another parameter's value for that element (``taken[k]``). None unless every
    element gets a number at its own place, outside the tables and not ``claimed`` by
    another parameter (the places used are returned so the caller can claim them).
    """
    if len(elements) < 2:
        return None
    body = _prose(text)
    mentions: list[tuple[int, int, int]] = []  # (start, end, element index)
    for k, e in enumerate(elements):
        aliases = _aliases(e)
        if not aliases:
            return None
        for a in aliases:
            pat = r"(?<![A-Za-z0-9])" + re.escape(a) + r"(?![A-Za-z0-9])"
            mentions += [(m.start(), m.end(), k) for m in re.finditer(pat, body, re.I)]
    mentions.sort()
    keys = [w.lower() for w in words if len(w) > 2]
    values: dict[int, tuple[float, int]] = {}
    for i, (_, end, k) in enumerate(mentions):
        if k in values:
            continue
        stop = len(body)
        for start2, _, k2 in mentions[i + 1 :]:
            if k2 != k and start2 >= end:
                stop = start2
                break
        clause = _CLAUSE_END.search(body, end)
        if clause is not None:
            stop = min(stop, clause.start())
        found = []
        for m in _NUMBER_AT.finditer(body, end, stop):
            if m.start(1) in (claimed or set()):
                continue
            try:
                v = float(m.group(1).replace(",", ""))
            except ValueError:
                continue
            named = any(w in body[max(end, m.start() - 25) : m.start()].lower() for w in keys)
            found.append((not named, v in (taken[k] if taken else set()), v, m.start(1)))
        usable = [f for f in found if not f[0] or not f[1]]  # named, or not another's value
        if usable:
            best = min(usable, key=lambda f: (f[0], f[3]))
            values[k] = (best[2], best[3])
    if len(values) != len(elements):
        return None
    places = [values[k][1] for k in range(len(elements))]
    if len(set(places)) != len(places):
        return None
    return [values[k][0] for k in range(len(elements))], places


def _recover(
    p: ExtractedParameter,
    sets: dict[str, list[str]],
    text: str,
    claimed: set[int],
    others: dict[str, ParameterData] | None = None,
) -> tuple[list[float], str] | None:
    """Values for a parameter whose table reference failed or whose typed values do not
    fit its sets, first found first:

    1. the values typed in the reply, when they fit and are all numbers of the text, or are
       one number repeated for a single parameter (origin "text");
    2. for a parameter over one set, one value per element from the sentences that name
       the elements (origin "sentences", :func:`sentence_values`);
    3. one typed number for every element of a parameter over one set (origin "text": "at
       most 70 units in any month").

    ``others`` are the parameters resolved so far: a sentence number one of them holds for
    the same element is not read again."""
    near = numbers_in(text)
    near |= {n / 100 for n in near} | {n * 100 for n in near}
    typed = [float(v) for v in p.values]
    typed_ok = bool(typed) and all(any(_close(v, n) for n in near) for v in typed)
    if typed_ok and _fits(p, typed, sets):
        return typed, "text"
    if typed_ok and not p.index_sets and len(set(typed)) == 1:
        return typed[:1], "text"  # a single number repeated once per item
    if len(p.index_sets) != 1 or not sets.get(p.index_sets[0]):
        return None
    elements = sets[p.index_sets[0]]
    # What other parameters over the same set already hold for each element.
    taken: list[set[float]] = [set() for _ in elements]
    for q in (others or {}).values():
        if q.index_sets == p.index_sets and len(q.values) == len(elements):
            for k, v in enumerate(q.values):
                taken[k].add(v)
    words = tuple(re.split(r"[^A-Za-z]+", f"{p.name} {p.units}"))
    found = sentence_values(elements, text, claimed, words=words, taken=taken)
    if found is not None:
        vals, places = found
        claimed.update(places)
        return vals, "sentences"
    if typed_ok and len(typed) == 1:
        return typed * len(elements), "text"  # the same for every element
    return None


def _recovered(name: str, origin: str, values: list[float], failed: str = "") -> Issue:
    """The warning that says where (``origin``: "text" or "sentences") a recovered
    parameter's values came from."""
    shown = ", ".join(f"{v:g}" for v in values[:8]) + (" ..." if len(values) > 8 else "")
    where = (
        f"took the values typed in the reply: {shown}"
        if origin == "text"
        else f"read one value per element from the sentences that name them: {shown}"
    )
    return Issue(
        check="dimensions",
        severity="warning",
        message=f"parameter {name!r}: " + (f"{failed}; " if failed else "") + where,
        fix="check these values against the text",
    )


def _label_words(origin: str, name: str) -> int:
    """How many words of the parameter name (``production_cost``: production, cost) the
    row or column label in ``origin`` ("table 1 column 'Production cost'") holds."""
    label = origin.split(" ", 3)[-1].lower()
    words = {w for w in re.split(r"[^a-z]+", name.lower()) if len(w) > 2}
    return sum(w in label for w in words)


def _unshare(
    p: ExtractedParameter,
    origin: str,
    holder: str,
    sets: dict[str, list[str]],
    problem_text: str,
    claimed: set[int],
    params: dict[str, ParameterData],
    held: list[Any],
) -> tuple[ParameterData | None, Issue]:
    """``p`` was mapped to ``origin``, which parameter ``holder`` reads (its values:
    ``held``): ``p``'s values from elsewhere (:func:`_recover`) with a warning, or None
    with the error."""
    recovered = _recover(p, sets, problem_text, claimed, params)
    if recovered is not None and recovered[0] == held:
        recovered = None  # the holder's numbers typed out again are the same mistake
    if recovered is None:
        return None, Issue(
            check="dimensions",
            severity="error",
            message=f"parameter {p.name!r} reads {origin}, which holds {holder!r}",
            fix=f"give {p.name} its own values (one number if the text states it once)",
        )
    vals, where = recovered
    entry = ParameterData(
        index_sets=list(p.index_sets), values=vals, units=p.units, source=p.source, origin=where
    )
    return entry, _recovered(p.name, where, vals, f"{origin} holds {holder!r}")


def build_extraction(
    reply: ExtractionReply, problem_text: str, tables: list[ParsedTable], template: Template | None
) -> Extraction:
    """Resolve table references, then run the checks (no model call)."""
    notes: list[Issue] = []
    sets = {s.name: [e.strip() for e in s.elements if e.strip()] for s in reply.sets}
    # Rows and columns that hold a one-set parameter ("Supply", "Demand"); either name
    # counts for both, since a model may call a row a column.
    single = [p for p in reply.parameters if p.table and len(p.index_sets) <= 1]
    used_rows = used_cols = {_norm(x) for p in single for x in (p.row, p.column) if x}
    # A row or column that holds another parameter ("Demand", "Supply") is not an element.
    for name, elements in sets.items():
        stray = [e for e in elements if _norm(e) in used_rows | used_cols]
        if stray:
            sets[name] = [e for e in elements if e not in stray]
            notes.append(
                Issue(
                    check="dimensions",
                    severity="warning",
                    message=f"set {name!r}: dropped {stray}, which name the table row or column "
                    "of another parameter",
                    fix="list only the members of the set",
                )
            )
    params: dict[str, ParameterData] = {}
    claimed: set[int] = set()  # text positions of numbers read from sentences
    # Parameters spanning a whole table first: they fix the sets' elements from the labels.
    order = sorted(reply.parameters, key=lambda p: (p.table == 0, bool(p.row or p.column)))
    for p in order:
        local: list[Issue] = []
        vals: list[float | None] | None
        if p.table:
            vals = _table_values(p, tables, sets, used_rows, used_cols, local)
            origin = (
                f"table {p.table}"
                + (f" row {p.row!r}" if p.row else "")
                + (f" column {p.column!r}" if p.column else "")
            )
            if vals is not None and any(v is None for v in vals):
                local.append(
                    Issue(
                        check="dimensions",
                        severity="error",
                        message=f"parameter {p.name!r}: {origin} has empty or non-number cells",
                        fix="name the row/column that holds the numbers",
                    )
                )
                vals = None
        else:
            vals, origin = list(p.values), "text"
        if vals is None or not _fits(p, vals, sets):
            recovered = _recover(p, sets, problem_text, claimed, params)
            if recovered is not None:
                vals, origin = recovered
                failed = "; ".join(i.message for i in local if i.severity == "error")
                local = [i for i in local if i.severity != "error"]
                local.append(_recovered(p.name, origin, vals, failed))
            elif vals is None:
                vals, origin = list(p.values), "text"
        shared = origin.startswith("table ") and origin != f"table {p.table}"
        rival = next((k for k, d in params.items() if d.origin == origin), None) if shared else None
        if rival is not None:
            # One column or row read for two parameters: the one whose name shares more
            # words with the label keeps it (the first one on a tie); the other's values
            # come from elsewhere.
            if _label_words(origin, p.name) > _label_words(origin, rival):
                loser = next(q for q in reply.parameters if q.name == rival)
                entry, issue = _unshare(
                    loser, origin, p.name, sets, problem_text, claimed, params, list(vals or [])
                )
                params[rival] = entry or params[rival].model_copy(update={"values": []})
                local.append(issue)
            else:
                entry, issue = _unshare(
                    p, origin, rival, sets, problem_text, claimed, params, params[rival].values
                )
                local.append(issue)
                if entry is None:
                    vals, origin = list(p.values), "text"
                else:
                    vals, origin = list(entry.values), entry.origin
        notes.extend(local)
        params[p.name] = ParameterData(
            index_sets=list(p.index_sets),
            values=[float(v) for v in vals],  # type: ignore[arg-type]
            units=p.units,
            source=p.source,
            origin=origin,
        )
    ex = Extraction(
        template=template.id if template else None,
        sets=sets,
        parameters=params,
        other_numbers=list(reply.other_numbers),
        tables=tables,
        set_sources={s.name: s.source for s in reply.sets},
    )
    ex.findings = notes + check_extraction(ex, problem_text, template)
    return ex


# ---------------------------------------------------------------------------------------------
# Checks


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def unused_numbers(
    ex: Extraction, problem_text: str, *, explained: bool = True
) -> tuple[list[float], set[float]]:
    """The numbers of the text that no parameter, set (or, with ``explained``, explained
    other number) accounts for, and the text's distinct numbers."""
    text_numbers = numbers_in(problem_text)
    used: set[float] = set()
    for p in ex.parameters.values():
        used.update(p.values)
    for elements in ex.sets.values():
        used.add(float(len(elements)))
        for e in elements:
            used |= numbers_in(e)
    if explained:
        used.update(o.value for o in ex.other_numbers)
    for t in ex.tables:  # numbers in labels ("Plant 1", "Week 3") name things
        for lab in [*t.header, *t.row_labels]:
            used |= numbers_in(lab)
    near = used | {u * 100 for u in used} | {u / 100 for u in used}
    missing = sorted(n for n in text_numbers if not any(_close(n, u) for u in near))
    return missing, text_numbers


def check_numbers(ex: Extraction, problem_text: str) -> list[Issue]:
    """Every number in the text is used or explained; no value is invented."""
    missing, text_numbers = unused_numbers(ex, problem_text)
    findings = []
    if missing:
        findings.append(
            Issue(
                check="numbers",
                severity="warning",
                message="numbers in the text that no parameter uses: "
                + ", ".join(f"{n:g}" for n in missing[:10]),
                fix="put each in a parameter, or list it in other_numbers with what it means",
            )
        )
    text_near = text_numbers | {n / 100 for n in text_numbers} | {n * 100 for n in text_numbers}
    invented = sorted(
        {
            v
            for p in ex.parameters.values()
            for v in p.values
            if v not in (0.0, 1.0) and not any(_close(v, n) for n in text_near)
        }
    )
    if invented:
        findings.append(
            Issue(
                check="numbers",
                severity="warning",
                message="values that are not in the text: "
                + ", ".join(f"{v:g}" for v in invented[:10]),
                fix="use only the numbers of the problem (0 or 1 where a table leaves a cell out)",
            )
        )
    return findings


def check_dimensions(ex: Extraction, template: Template | None = None) -> list[Issue]:
    """Index sets exist, sizes match, and a template's sets and parameters are all there."""
    out: list[Issue] = []

    def err(message: str, fix: str) -> None:
        out.append(Issue(check="dimensions", severity="error", message=message, fix=fix))

    for name, elements in ex.sets.items():
        if not elements:
            err(f"set {name!r} has no elements", f"list the elements of {name}")
        dups = sorted({e for e in elements if elements.count(e) > 1})
        if dups:
            err(f"set {name!r} repeats {dups}", "give each element once")
    for name, p in ex.parameters.items():
        unknown = [s for s in p.index_sets if s not in ex.sets]
        if unknown:
            err(
                f"parameter {name!r} is indexed by unknown set(s) {unknown}",
                f"declare {', '.join(unknown)} with its elements",
            )
            continue
        need = math.prod(len(ex.sets[s]) for s in p.index_sets)
        if len(p.values) != need:
            shape = " x ".join(f"{s}({len(ex.sets[s])})" for s in p.index_sets) or "a single number"
            err(
                f"parameter {name!r} needs {need} value(s) ({shape}), got {len(p.values)}",
                "give one value per combination of its index sets, row-major",
            )
    if template is None:
        return out
    for s in template.sets:
        if s.name not in ex.sets and not s.default:
            err(f"set {s.name!r} ({s.meaning}) is missing", f"list the elements of {s.name}")
    for spec in template.parameters:
        p = ex.parameters.get(spec.name)
        if p is None:
            if spec.default is None and not spec.optional:
                err(f"parameter {spec.name!r} ({spec.meaning}) is missing", f"give {spec.name}")
        elif p.index_sets != spec.index_sets:
            err(
                f"parameter {spec.name!r} must be indexed by [{', '.join(spec.index_sets)}], "
                f"not [{', '.join(p.index_sets)}]",
                "use the template's index sets",
            )
    names = {s.name for s in template.sets} | {p.name for p in template.parameters}
    for extra in sorted((set(ex.sets) | set(ex.parameters)) - names):
        out.append(
            Issue(
                check="dimensions",
                severity="warning",
                message=f"{extra!r} is not part of template {template.id!r}",
                fix="drop it or map it to one of the template's names",
            )
        )
    return out


_MONEY = {
    "$",
    "usd",
    "dollar",
    "dollars",
    "eur",
    "euro",
    "euros",
    "€",
    "£",
    "gbp",
    "pound",
    "pounds",
    "yuan",
    "rmb",
    "cost",
    "money",
    "cent",
    "cents",
}


def _unit_word(text: str) -> str:
    words = [
        w
        for w in re.findall(r"[a-z€£$]+", text.lower())
        if w not in ("a", "an", "one", "each", "of", "the", "in")
    ]
    if not words:
        return ""
    if any(w in _MONEY for w in words):
        return "money"
    w = words[-1] if len(words) == 1 else " ".join(words)
    for suffix, repl in (("ies", "y"), ("ches", "ch"), ("ses", "s"), ("s", "")):
        if w.endswith(suffix) and len(w) > len(suffix) + 1 and not w.endswith("ss"):
            return w[: -len(suffix)] + repl
    return w


def _split_units(text: str) -> tuple[str, str]:
    """``'$ per ton'`` -> ('money', 'ton'); ``'tons'`` -> ('ton', '')."""
    parts = re.split(r"\s*/\s*|\s+per\s+|\s+each\s+", text.strip(), maxsplit=1, flags=re.I)
    num = _unit_word(parts[0])
    den = _unit_word(parts[1]) if len(parts) > 1 else ""
    return num, den


def check_units(ex: Extraction, template: Template | None) -> list[Issue]:
    """Stated units agree with the template's dimensions (``Q``, ``money/Q``, ...): each
    dimension symbol must stand for one unit across the parameters that state one."""
    if template is None:
        return []
    bound: dict[str, tuple[str, str]] = {}  # symbol -> (unit word, parameter that set it)
    out: list[Issue] = []
    for spec in template.parameters:
        p = ex.parameters.get(spec.name)
        if p is None or not p.units.strip() or not spec.units:
            continue
        sym_num, _, sym_den = spec.units.partition("/")
        num, den = _split_units(p.units)
        pairs = [(sym_num, num)] + ([(sym_den, den)] if sym_den else [])
        for sym, word in pairs:
            if not word or sym == "money":
                continue
            if sym in bound and bound[sym][0] != word:
                other_word, other = bound[sym]
                out.append(
                    Issue(
                        check="units",
                        severity="warning",
                        message=f"units disagree: {other!r} is in {other_word!r} but {spec.name!r} "
                        f"({p.units!r}) uses {word!r} for the same quantity",
                        fix="convert one of them so both use the same unit",
                    )
                )
            bound.setdefault(sym, (word, spec.name))
    return out


def check_extraction(
    ex: Extraction, problem_text: str, template: Template | None = None
) -> list[Issue]:
    """Every deterministic check of an extraction: numbers, dimensions, units."""
    return [
        *check_dimensions(ex, template),
        *check_numbers(ex, problem_text),
        *check_units(ex, template),
    ]


# ---------------------------------------------------------------------------------------------
# The call


def _tables_text(tables: list[ParsedTable]) -> str:
    if not tables:
        return "(no tables or number lists were found)"
    return "\n".join(t.render(k) for k, t in enumerate(tables, 1))


def _wanted_text(tpl: Template | None) -> str:
    if tpl is None:
        return (
            "Choose the sets (entities with several members) and parameters (numbers, "
            "scalar or per set element) yourself."
        )
    return (
        f"The problem is a {tpl.class_name}. Give exactly these sets and parameters "
        f"(null for an optional one the text does not state):\n{tpl.data_summary()}"
    )


def extraction_messages(
    prompts: PromptSet, problem_text: str, tables: list[ParsedTable], template: Template | None
) -> list[dict[str, str]]:
    """The extractor's messages: instructions, then the problem, its tables and what to give."""
    return [
        {"role": "system", "content": prompts.text("extractor_system")},
        {
            "role": "user",
            "content": prompts.render(
                "extractor_user",
                problem=problem_text,
                tables=_tables_text(tables),
                wanted=_wanted_text(template),
            ),
        },
    ]


async def extract(
    llm: ChatClient,
    prompts: PromptSet,
    problem_text: str,
    *,
    template: str | Template | None = None,
    temperature: float = 0.0,
    seed: int | None = None,
    max_tokens: int = 1200,
) -> Extraction:
    """Extract the sets and parameters of ``problem_text`` with one grammar-constrained call.

    Tables are parsed first and given to the model numbered; values it maps to a table are
    read from the cells here. With ``template`` (an id or a :class:`Template`) the reply has
    exactly the template's sets and parameters. Never raises for a model failure: the
    result then has ``error`` set. ``step`` records the call's cost (role ``extractor``).
    """
    tpl = load_template(template) if isinstance(template, str) else template
    tables = parse_tables(problem_text)
    started = time.perf_counter()
    schema = reply_schema(tpl.id) if tpl is not None else ExtractionReply
    try:
        res = await llm.achat(
            extraction_messages(prompts, problem_text, tables, tpl),
            temperature=temperature,
            seed=seed,
            max_tokens=max_tokens,
            response_format=schema,
            tag=ROLE,
        )
    except Exception as exc:  # LLM errors and replies that never validated
        failed = failed_reply(ROLE, None, started, exc, what="extraction")
        return Extraction(
            template=tpl.id if tpl else None, tables=tables, step=failed.step, error=failed.error
        )
    reply = _normalize_reply(res.parsed[0], tpl)
    ex = build_extraction(reply, problem_text, tables, tpl)
    ex.step = answered_step(
        ROLE,
        None,
        res,
        started,
        f"extracted {len(ex.sets)} sets and {len(ex.parameters)} parameters "
        f"({len(tables)} tables parsed); {len(ex.findings)} findings",
        ok=ex.ok,
        detail={"template": ex.template, "findings": [f.message for f in ex.findings]},
    )
    return ex
