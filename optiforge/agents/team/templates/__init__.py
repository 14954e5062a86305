"""Problem-class templates: classic OR structures as parameterised indexed models.

Each template is a data file next to this module (``<id>.toml``): an id, a class name, a
description, the sets and parameters it needs (with units and meaning), its assumptions in
words, cues for classification (keywords), and the model itself (variables, objective,
constraints written once over the sets in the IR's expression grammar, see
docs/solvers.md). :func:`fill` turns a template and the data of one problem into a concrete
:class:`~optiforge.solvers.ir.ModelIR`, which solves through the normal path
(:func:`optiforge.solvers.solve_ir`).

    from optiforge.agents.team.templates import fill, load_template, template_ids
    ir = fill("transportation",
              sets={"SOURCES": ["P1", "P2"], "DESTINATIONS": ["A", "B", "C"]},
              params={"supply": [20, 30], "demand": {"A": 10, "B": 25, "C": 15},
                      "cost": [[8, 6, 10], [9, 12, 13]]})

Parameter values may be a number (a scalar, or one value for every index), a flat list in
row-major order over the index sets, nested lists (one row per element of the first set),
or a mapping keyed by set elements (``{"A": 10}``, ``{"P1": {"A": 8}}``, ``{("P1", "A"):
8}`` or ``{"P1,A": 8}``). Anything missing or of the wrong shape raises
:class:`TemplateFillError` naming the set or parameter and the shape it needs.

Some sets and parameters have a *default rule* that fills them when the data leaves them
out (``first:CITIES`` for a depot, ``size:CITIES``, ``sum:proc`` for a big-M,
``window:PERIODS,SHIFTS,shift_length`` for a shift-cover matrix); *optional* parameters
that are left out drop the constraints that ``requires`` them. See docs/templates.md.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from optiforge.errors import OptiforgeError
from optiforge.solvers.errors import IRValidationError
from optiforge.solvers.ir import ModelIR, element_key, validate_ir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "ConstraintSpec",
    "ObjectiveSpec",
    "ParameterSpec",
    "SetSpec",
    "Template",
    "TemplateError",
    "TemplateFillError",
    "VariableSpec",
    "fill",
    "load_template",
    "load_templates",
    "match_cues",
    "phrases_found",
    "template_ids",
]

_DIR = Path(__file__).resolve().parent


class TemplateError(OptiforgeError):
    """A template is unknown, or its data file is invalid."""


class TemplateFillError(TemplateError):
    """The data given to :func:`fill` is missing a set or parameter, or has the wrong shape."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SetSpec(_Spec):
    """A set the template needs, e.g. ``SOURCES`` (the supply points)."""

    name: str
    meaning: str
    #: A rule that fills the set when the data leaves it out: ``first:SET`` or ``last:SET``
    #: (a one-element set holding the first or last element of SET).
    default: str | None = None
    #: The elements must be consecutive whole numbers (periods written ``t-1``).
    consecutive_integers: bool = False


class ParameterSpec(_Spec):
    """A parameter the template needs, e.g. ``cost[SOURCES, DESTINATIONS]``."""

    name: str
    index_sets: list[str] = Field(default_factory=list)
    #: Dimension in symbols shared across the template, e.g. ``Q`` or ``money/Q``; the
    #: extraction step checks that what a problem states agrees (docs/templates.md).
    units: str = ""
    meaning: str
    #: A number (one value for every index) or a rule: ``size:SET``, ``first:SET`` (the first
    #: element as a number), ``sum:PARAM``, ``window:PERIODS,SHIFTS,LENGTH_PARAM``.
    default: float | str | None = None
    #: May be left out; the constraints that require it are then dropped.
    optional: bool = False


class VariableSpec(_Spec):
    """A decision variable of the template (the IR's variable fields)."""

    name: str
    index_sets: list[str] = Field(default_factory=list)
    domain: Literal["continuous", "integer", "binary"] = "continuous"
    lb: float | None = 0.0
    ub: float | None = None
    units: str = ""
    description: str


class ObjectiveSpec(_Spec):
    """What the template optimizes."""

    sense: Literal["minimize", "maximize"]
    expression: str
    meaning: str = ""


class ConstraintSpec(_Spec):
    """A constraint written once over indices (``for_all``)."""

    name: str
    expression: str
    for_all: str | None = None
    meaning: str = ""
    #: Optional parameters this constraint needs; it is dropped when any is left out.
    requires: list[str] = Field(default_factory=list)


class Example(_Spec):
    """A small instance of the template (data for docs and prompts)."""

    sets: dict[str, list[Any]]
    params: dict[str, Any] = Field(default_factory=dict)
    #: The optimal objective value of this instance.
    optimum: float | None = None


class Template(_Spec):
    """One problem class: its data needs, assumptions, classification cues and model."""

    id: str
    class_name: str
    description: str
    assumptions: list[str]
    cues: list[str]
    #: Phrases of which the text must hold at least one for the template to be chosen (the
    #: evidence its structure needs, e.g. a selection for a 0-1 knapsack); empty: none.
    requires_any: list[str] = Field(default_factory=list)
    #: Its main data is a matrix over two sets of things (sources x destinations, workers x
    #: jobs): when the text has tables, one of them must list things, not attributes such
    #: as "Cost per Unit" or "Profit", across its columns.
    matrix_table: bool = False
    #: Objective senses :func:`fill` accepts (the first is the model's own).
    senses: list[Literal["minimize", "maximize"]] = Field(default_factory=list)
    sets: list[SetSpec]
    parameters: list[ParameterSpec]
    variables: list[VariableSpec]
    objective: ObjectiveSpec
    constraints: list[ConstraintSpec]
    example: Example | None = None

    def set_spec(self, name: str) -> SetSpec:
        """The spec of set ``name`` (KeyError if the template has none)."""
        return {s.name: s for s in self.sets}[name]

    def parameter_spec(self, name: str) -> ParameterSpec:
        """The spec of parameter ``name`` (KeyError if the template has none)."""
        return {p.name: p for p in self.parameters}[name]

    def data_summary(self) -> str:
        """The sets and parameters it needs, one per line (for prompts and docs)."""
        lines = []
        for s in self.sets:
            extra = f" (default: {s.default})" if s.default else ""
            lines.append(f"- set {s.name}: {s.meaning}{extra}")
        for p in self.parameters:
            idx = f"[{', '.join(p.index_sets)}]" if p.index_sets else " (a single number)"
            units = f", units {p.units}" if p.units else ""
            extra = ""
            if p.default is not None:
                extra = f" (default: {p.default})"
            elif p.optional:
                extra = " (optional)"
            lines.append(f"- parameter {p.name}{idx}: {p.meaning}{units}{extra}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Loading


def template_ids() -> list[str]:
    """Ids of the shipped templates, sorted."""
    return sorted(p.stem for p in _DIR.glob("*.toml"))


@functools.lru_cache(maxsize=64)
def load_template(template_id: str) -> Template:
    """Read and check template ``template_id`` (its file ``<id>.toml``)."""
    path = _DIR / f"{template_id}.toml"
    if not re.fullmatch(r"[a-z][a-z0-9_]*", template_id or "") or not path.is_file():
        raise TemplateError(f"no template {template_id!r}; templates: {', '.join(template_ids())}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        tpl = Template.model_validate(data)
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise TemplateError(f"template file {path.name} is invalid: {exc}") from None
    if tpl.id != template_id:
        raise TemplateError(f"template file {path.name} says id {tpl.id!r}; ids match files")
    _check_template(tpl)
    return tpl


def load_templates() -> list[Template]:
    """Every shipped template, in id order."""
    return [load_template(t) for t in template_ids()]


def _check_template(tpl: Template) -> None:
    """Cross-references inside a template: index sets, rules and ``requires`` exist."""
    errors = []
    sets = {s.name for s in tpl.sets}
    params = {p.name: p for p in tpl.parameters}
    for item in [*tpl.parameters, *tpl.variables]:
        bad = [s for s in item.index_sets if s not in sets]
        if bad:
            errors.append(f"{item.name}: unknown index set(s) {bad}")
    for c in tpl.constraints:
        bad = [r for r in c.requires if r not in params or not params[r].optional]
        if bad:
            errors.append(f"constraint {c.name}: requires {bad}, which are not optional parameters")
    for s in tpl.sets:
        if s.default and _rule(s.default)[0] not in ("first", "last"):
            errors.append(f"set {s.name}: unknown default rule {s.default!r}")
    for p in tpl.parameters:
        if isinstance(p.default, str) and _rule(p.default)[0] not in _PARAM_RULES:
            errors.append(f"parameter {p.name}: unknown default rule {p.default!r}")
    if tpl.senses and tpl.senses[0] != tpl.objective.sense:
        errors.append("senses: the first must be the objective's own sense")
    if errors:
        raise TemplateError(f"template {tpl.id!r} is invalid: " + "; ".join(errors))


def phrases_found(text: str, phrases: list[str]) -> list[str]:
    """The phrases that occur in ``text`` as whole words (plurals included), as
    :func:`match_cues` finds cues."""
    low = " ".join(text.lower().split())
    return [c for c in phrases if re.search(rf"\b{re.escape(c.lower())}(?:e?s)?\b", low)]


def match_cues(text: str, *, top: int = 3) -> list[tuple[str, float, list[str]]]:
    """Templates whose classification cues occur in ``text``, best first: ``(id, score,
    cues found)``. A cue matches as a whole word or phrase, plural included ("plant" finds
    "plants"); a cue found with a longer form of it ("ship", "shipping") counts once. A cue of several words counts as many points as it has words; a template
    with no cue found is left out. A cheap first guess for a classifier, not a verdict."""
    scored = []
    for tpl in load_templates():
        hits = phrases_found(text, tpl.cues)
        # A cue and its plural or a longer form of it ("facility" and "facilities", "ship"
        # and "shipping", "assign" and "assignment") are one piece of evidence.
        hits = [c for c in hits if not any(c != h and _same_word(c, h) for h in hits)]
        if hits:
            scored.append((tpl.id, float(sum(len(c.split()) for c in hits)), hits))
    scored.sort(key=lambda t: (-t[1], t[0]))
    return scored[:top]


def _same_word(word: str, base: str) -> bool:
    """``word`` is ``base``'s plural or ``base`` with a suffix."""
    w, b = word.lower(), base.lower()
    return w.startswith(b) or (b.endswith("y") and w == b[:-1] + "ies")


# ---------------------------------------------------------------------------------------------
# Filling


_PARAM_RULES = ("size", "first", "sum", "window")


def _rule(text: str) -> tuple[str, list[str]]:
    kind, _, args = text.partition(":")
    return kind.strip(), [a.strip() for a in args.split(",") if a.strip()]


def _number(name: str, v: Any) -> float:
    if isinstance(v, bool) or v is None:
        raise TemplateFillError(f"parameter {name!r}: {v!r} is not a number")
    if isinstance(v, str):
        try:
            v = float(v.replace(",", "").strip())
        except ValueError:
            raise TemplateFillError(f"parameter {name!r}: {v!r} is not a number") from None
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        raise TemplateFillError(f"parameter {name!r}: {v!r} is not a finite number")
    return float(v)


def _shape_text(dims: list[tuple[str, list[str]]]) -> str:
    n = math.prod(len(e) for _, e in dims)
    shape = " x ".join(f"{s}({len(e)})" for s, e in dims)
    return f"{n} values ({shape}, row-major)"


def _key_parts(k: Any) -> tuple[str, ...]:
    if isinstance(k, tuple):
        return tuple(element_key(x).strip() for x in k)
    return tuple(p.strip() for p in element_key(k).split(","))


def _values(name: str, value: Any, dims: list[tuple[str, list[str]]]) -> list[float]:
    """A parameter's values in row-major order over ``dims``, from any accepted form."""
    size = math.prod(len(e) for _, e in dims)
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return [_number(name, value)] * size  # a scalar, or one value for every index
    if not dims:
        if isinstance(value, Sequence) and len(value) == 1:
            return [_number(name, value[0])]
        raise TemplateFillError(f"parameter {name!r} is a single number; got {value!r}")
    if isinstance(value, Mapping):
        return _from_mapping(name, value, dims)
    if isinstance(value, Sequence):
        if any(isinstance(v, (list, tuple)) for v in value):
            return _from_rows(name, value, dims, ())
        if len(value) != size:
            raise TemplateFillError(
                f"parameter {name!r} needs {_shape_text(dims)}, got {len(value)}"
            )
        return [_number(name, v) for v in value]
    raise TemplateFillError(f"parameter {name!r}: cannot read {type(value).__name__} {value!r}")


def _from_rows(
    name: str, rows: Any, dims: list[tuple[str, list[str]]], at: tuple[str, ...]
) -> list[float]:
    set_name, elements = dims[0]
    where = f" at [{', '.join(at)}]" if at else ""
    if not isinstance(rows, Sequence) or isinstance(rows, str):
        raise TemplateFillError(f"parameter {name!r}{where}: expected a list over {set_name}")
    if len(rows) != len(elements):
        raise TemplateFillError(
            f"parameter {name!r}{where}: needs one entry per element of {set_name} "
            f"({len(elements)}: {', '.join(elements[:8])}), got {len(rows)}; the whole "
            f"parameter needs {_shape_text(dims)}"
        )
    if len(dims) == 1:
        return [_number(name, v) for v in rows]
    out: list[float] = []
    for e, row in zip(elements, rows, strict=True):
        out += _from_rows(name, row, dims[1:], (*at, e))
    return out


def _from_mapping(name: str, value: Mapping, dims: list[tuple[str, list[str]]]) -> list[float]:
    flat: dict[tuple[str, ...], Any] = {}

    def walk(node: Any, prefix: tuple[str, ...]) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, (*prefix, *_key_parts(k)))
        else:
            flat[prefix] = node

    walk(value, ())
    keys = list(itertools.product(*(e for _, e in dims)))
    for k in flat:
        if len(k) != len(dims):
            raise TemplateFillError(
                f"parameter {name!r}: key {', '.join(k)!r} needs {len(dims)} part(s), one per "
                f"index set ({', '.join(s for s, _ in dims)})"
            )
        for part, (s, elements) in zip(k, dims, strict=True):
            if part not in elements:
                raise TemplateFillError(
                    f"parameter {name!r}: {part!r} is not an element of set {s} "
                    f"({', '.join(elements[:8])})"
                )
    missing = [k for k in keys if k not in flat]
    if missing:
        shown = "; ".join(",".join(k) for k in missing[:5])
        raise TemplateFillError(
            f"parameter {name!r}: no value for {len(missing)} of {len(keys)} indices "
            f"(e.g. {shown}); it needs {_shape_text(dims)}"
        )
    return [_number(name, flat[k]) for k in keys]


def _derive_param(
    tpl: Template,
    spec: ParameterSpec,
    sets: dict[str, list[str]],
    values: dict[str, list[float]],
) -> list[float]:
    dims = [(s, sets[s]) for s in spec.index_sets]
    size = math.prod(len(e) for _, e in dims)
    if not isinstance(spec.default, str):
        return [float(spec.default)] * size  # type: ignore[arg-type]
    kind, args = _rule(spec.default)
    if kind == "size":
        return [float(len(sets[args[0]]))] * size
    if kind == "first":
        first = sets[args[0]][0]
        try:
            return [float(first)] * size
        except ValueError:
            raise TemplateFillError(
                f"parameter {spec.name!r} is the first element of set {args[0]} as a number, "
                f"but that is {first!r}"
            ) from None
    if kind == "sum":
        if args[0] not in values:
            raise TemplateFillError(f"parameter {spec.name!r} needs parameter {args[0]!r} first")
        return [float(sum(values[args[0]]))] * size
    # window:PERIODS,SHIFTS,LENGTH: shift s covers `length` consecutive periods from the
    # period named like s, wrapping around (a week of days, a day of hours).
    periods, shifts, length_name = args
    if length_name not in values:
        p = tpl.parameter_spec(length_name)
        raise TemplateFillError(
            f"template {tpl.id!r} needs parameter {spec.name!r} "
            f"[{', '.join(spec.index_sets)}] ({spec.meaning}) or {length_name!r} "
            f"({p.meaning}) to derive it"
        )
    length = round(values[length_name][0])
    order = sets[periods]
    out = []
    for t in order:
        for s in sets[shifts]:
            if s not in order:
                raise TemplateFillError(
                    f"parameter {spec.name!r}: shift {s!r} is not a period of {periods}, so "
                    f"the cover cannot be derived from {length_name!r}; give {spec.name!r}"
                )
            start = order.index(s)
            covered = {order[(start + k) % len(order)] for k in range(length)}
            out.append(1.0 if t in covered else 0.0)
    return out


def fill(
    template_id: str,
    sets: Mapping[str, Sequence[Any]],
    params: Mapping[str, Any],
    *,
    sense: str | None = None,
    sources: Mapping[str, str] | None = None,
    name: str | None = None,
) -> ModelIR:
    """A concrete :class:`ModelIR` of template ``template_id`` with this problem's data.

    ``sets`` maps each set name to its elements; ``params`` maps each parameter name to its
    values (see the module doc for the accepted forms). ``sense`` picks another objective
    sense where the template allows one (``senses``); ``sources`` attaches the text each set
    or parameter came from. Raises :class:`TemplateFillError` naming every missing, unknown
    or mis-shaped set or parameter.
    """
    tpl = load_template(template_id)
    sources = dict(sources or {})
    problems: list[str] = []
    set_names = {s.name for s in tpl.sets}
    param_names = {p.name for p in tpl.parameters}
    for k in sets:
        if k not in set_names:
            problems.append(
                f"unknown set {k!r} (template {tpl.id!r} has sets {', '.join(sorted(set_names))})"
            )
    for k in params:
        if k not in param_names:
            problems.append(
                f"unknown parameter {k!r} (template {tpl.id!r} has parameters "
                f"{', '.join(p.name for p in tpl.parameters)})"
            )
    filled_sets: dict[str, list[str]] = {}
    for s in tpl.sets:
        if s.name in sets and sets[s.name] is not None:
            raw = sets[s.name]
            if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence):
                problems.append(f"set {s.name!r} must be a list of elements, got {raw!r}")
                continue
            elements = [element_key(e).strip() for e in raw]
            if not elements:
                problems.append(f"set {s.name!r} ({s.meaning}) is empty")
                continue
            dups = sorted({e for e in elements if elements.count(e) > 1})
            if dups:
                problems.append(f"set {s.name!r} has duplicate elements {dups}")
                continue
            if s.consecutive_integers and not _consecutive(elements):
                problems.append(
                    f"set {s.name!r} ({s.meaning}) must be consecutive whole numbers such as "
                    f"1, 2, 3; got {', '.join(elements[:6])}; number them in order"
                )
                continue
            filled_sets[s.name] = elements
        elif not s.default:
            problems.append(f"missing set {s.name!r}: {s.meaning}")
    for s in tpl.sets:  # default rules read other sets, so they run second
        if s.name not in filled_sets and s.default:
            _, args = _rule(s.default)
            base = filled_sets.get(args[0])
            if base is not None:
                pick = base[0] if s.default.startswith("first") else base[-1]
                filled_sets[s.name] = [pick]
    if problems:
        raise TemplateFillError(f"template {tpl.id!r}: " + "; ".join(problems))

    values: dict[str, list[float]] = {}
    omitted: set[str] = set()
    for p in tpl.parameters:
        dims = [(s, filled_sets[s]) for s in p.index_sets]
        if p.name in params and params[p.name] is not None:
            try:
                values[p.name] = _values(p.name, params[p.name], dims)
            except TemplateFillError as exc:
                problems.append(str(exc))
        elif p.default is None:
            if p.optional:
                omitted.add(p.name)
            else:
                idx = f"[{', '.join(p.index_sets)}]" if p.index_sets else " (a single number)"
                problems.append(f"missing parameter {p.name!r}{idx}: {p.meaning}")
    if problems:
        raise TemplateFillError(f"template {tpl.id!r}: " + "; ".join(problems))
    for p in tpl.parameters:  # defaults may read given parameters (sum:proc)
        if p.name not in values and p.name not in omitted:
            values[p.name] = _derive_param(tpl, p, filled_sets, values)

    chosen = sense or tpl.objective.sense
    allowed = tpl.senses or [tpl.objective.sense]
    if chosen not in allowed:
        raise TemplateFillError(
            f"template {tpl.id!r} {tpl.objective.sense}s; sense {chosen!r} is not allowed "
            f"(allowed: {', '.join(allowed)})"
        )
    data = {
        "name": name or tpl.id,
        "sets": [
            {"name": s.name, "elements": filled_sets[s.name], "source": sources.get(s.name, "")}
            for s in tpl.sets
        ],
        "parameters": [
            {
                "name": p.name,
                "index_sets": p.index_sets,
                "values": values[p.name],
                "source": sources.get(p.name, ""),
            }
            for p in tpl.parameters
            if p.name in values
        ],
        "variables": [v.model_dump() for v in tpl.variables],
        "objective": {"sense": chosen, "expression": tpl.objective.expression},
        "constraints": [
            {"name": c.name, "expression": c.expression, "for_all": c.for_all}
            for c in tpl.constraints
            if not (set(c.requires) & omitted)
        ],
    }
    try:
        ir = ModelIR.model_validate(data)
        validate_ir(ir)
    except ValidationError as exc:
        raise TemplateFillError(f"template {tpl.id!r}: the data does not fit: {exc}") from None
    except IRValidationError as exc:
        raise TemplateFillError(
            f"template {tpl.id!r}: the filled model is invalid: {exc}"
        ) from None
    return ir


def _consecutive(elements: list[str]) -> bool:
    try:
        nums = [float(e) for e in elements]
    except ValueError:
        return False
    return all(n.is_integer() for n in nums) and all(
        b - a == 1 for a, b in itertools.pairwise(nums)
    )
