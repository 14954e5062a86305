"""The model IR: a typed, JSON-friendly description of an optimization problem.

The IR is what a formulator emits as grammar-constrained JSON, so its schema is kept flat
(no recursion), small and easy for a small model to fill. Expressions are strings in a safe
grammar (see :mod:`optiforge.solvers.expr`); they are parsed, never evaluated as Python.

Structural checks (types, names, sizes) run when the model is built. Semantic checks (unknown
names, wrong indexing, bad syntax) run in :func:`validate_ir`, which lists every problem with
the item it belongs to, e.g. ``constraint 'budget': unknown variable 'z'``.
"""

from __future__ import annotations

import json
import keyword
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from optiforge.solvers.errors import IRValidationError

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: Names an expression can call; they cannot name a set, parameter or variable.
RESERVED_NAMES = frozenset(
    {"sum", "exp", "log", "log10", "sqrt", "abs", "min", "max", "sin", "cos", "range"}
)


def _check_identifier(kind: str, name: str) -> str:
    if not _IDENT.match(name or ""):
        raise ValueError(
            f"{kind} name {name!r} must be an identifier (letters, digits, _; not starting "
            "with a digit), e.g. 'x_chairs'"
        )
    if keyword.iskeyword(name) or name in RESERVED_NAMES:
        raise ValueError(f"{kind} name {name!r} is reserved; pick another, e.g. '{name}_'")
    return name


def element_key(value: Any) -> str:
    """Set elements are strings; numbers become their shortest text (2.0 -> '2')."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IRSet(_Item):
    """An index set, e.g. ``ITEMS = ['chair', 'table']`` or ``T = ['1', '2', '3']``."""

    name: str
    elements: list[str]
    source: str = Field(default="", description="Sentence of the problem text this came from")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_identifier("set", v)

    @field_validator("elements", mode="before")
    @classmethod
    def _elements(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [element_key(e) for e in v]
        return v

    @field_validator("elements")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        seen: set[str] = set()
        dups = [e for e in v if e in seen or seen.add(e)]  # type: ignore[func-returns-value]
        if dups:
            raise ValueError(f"duplicate elements {sorted(set(dups))}")
        if not v:
            raise ValueError("a set needs at least one element")
        return v


class IRParameter(_Item):
    """A named constant, scalar (``index_sets=[]``, ``values=[v]``) or indexed.

    Indexed values are listed in row-major order over the index sets: for ``cost`` over
    ``[PLANTS, MARKETS]`` all markets of the first plant come first.
    """

    name: str
    index_sets: list[str] = Field(default_factory=list)
    values: list[float]
    source: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_identifier("parameter", v)

    @field_validator("values", mode="before")
    @classmethod
    def _values(cls, v: Any) -> Any:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return [v]
        if isinstance(v, (list, tuple)) and any(isinstance(e, (list, tuple)) for e in v):
            return _flatten(v)  # a table written as rows: row-major, as documented
        return v


def _flatten(v: Any) -> list[Any]:
    out: list[Any] = []
    for e in v:
        out.extend(_flatten(e) if isinstance(e, (list, tuple)) else [e])
    return out


_DOMAIN_ALIASES = {
    "real": "continuous",
    "reals": "continuous",
    "float": "continuous",
    "int": "integer",
    "integers": "integer",
    "bool": "binary",
    "boolean": "binary",
    "0-1": "binary",
}


class IRVariable(_Item):
    """A decision variable, scalar or indexed. ``lb`` defaults to 0 (set null for free)."""

    name: str
    index_sets: list[str] = Field(default_factory=list)
    domain: Literal["continuous", "integer", "binary"] = "continuous"
    lb: float | None = 0.0
    ub: float | None = None
    units: str = ""
    description: str = ""
    source: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_identifier("variable", v)

    @field_validator("domain", mode="before")
    @classmethod
    def _domain(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip().lower()
            return _DOMAIN_ALIASES.get(v, v)
        return v


class IRObjective(_Item):
    """What to optimize: ``sense`` and an expression such as ``50*x + 40*y``."""

    sense: Literal["minimize", "maximize"]
    expression: str
    source: str = ""

    @field_validator("sense", mode="before")
    @classmethod
    def _sense(cls, v: Any) -> Any:
        aliases = {"min": "minimize", "max": "maximize", "minimise": "minimize"}
        if isinstance(v, str):
            v = v.strip().lower()
            return aliases.get(v, "maximize" if v == "maximise" else v)
        return v


class IRConstraint(_Item):
    """A constraint such as ``3*x + 2*y <= 100``.

    ``for_all`` repeats it for each index binding, e.g. ``i in ITEMS`` or
    ``i in PLANTS, j in MARKETS``; the expression then uses ``i`` (and ``j``).
    """

    name: str
    expression: str
    for_all: str | None = None
    source: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or not v.strip():
            raise ValueError("constraint name must not be empty")
        return v


class ModelIR(_Item):
    """An optimization model: sets, parameters, variables, one objective, constraints."""

    name: str = "model"
    sets: list[IRSet] = Field(default_factory=list)
    parameters: list[IRParameter] = Field(default_factory=list)
    variables: list[IRVariable]
    objective: IRObjective
    constraints: list[IRConstraint] = Field(default_factory=list)

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """The JSON schema with every ``$ref`` inlined (flat, no ``$defs``).

        Usable directly as ``response_format={"type": "json_schema", "json_schema":
        {"name": "model_ir", "schema": ModelIR.model_json_schema()}}`` for grammar-constrained
        decoding (llama.cpp, vLLM, OpenAI).
        """
        schema = super().model_json_schema(*args, **kwargs)
        return _inline_refs(schema)

    @classmethod
    def response_format(cls) -> dict[str, Any]:
        """An OpenAI-style ``response_format`` for structured output of a ModelIR."""
        return {
            "type": "json_schema",
            "json_schema": {"name": "model_ir", "schema": cls.model_json_schema()},
        }

    @classmethod
    def from_json(cls, text: str | bytes | dict[str, Any]) -> ModelIR:
        """Parse and fully validate an IR from JSON text or a dict.

        Raises :class:`IRValidationError` listing every problem (structure and expressions).
        """
        try:
            data = json.loads(text) if isinstance(text, (str, bytes)) else text
        except json.JSONDecodeError as e:
            raise IRValidationError([f"model IR is not valid JSON: {e}"]) from None
        try:
            ir = cls.model_validate(data)
        except ValidationError as e:
            raise IRValidationError(_pydantic_errors(e, data)) from None
        validate_ir(ir)
        return ir


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                target = dict(defs[ref.split("/")[-1]])
                extra = {k: v for k, v in node.items() if k != "$ref"}
                target.update(extra)
                return walk(target)
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def _pydantic_errors(err: ValidationError, data: Any) -> list[str]:
    """Turn pydantic's locations into item names: ``variable 'x': lb: ...``."""
    out = []
    for e in err.errors():
        loc = list(e["loc"])
        where = ".".join(str(p) for p in loc)
        if len(loc) >= 2 and isinstance(loc[1], int) and isinstance(data, dict):
            group = str(loc[0])
            kind = {
                "sets": "set",
                "parameters": "parameter",
                "variables": "variable",
                "constraints": "constraint",
            }.get(group, group)
            try:
                item_name = data[group][loc[1]].get("name")
            except (KeyError, IndexError, TypeError, AttributeError):
                item_name = None
            label = f"{kind} {item_name!r}" if item_name else f"{kind} #{loc[1] + 1}"
            field = ".".join(str(p) for p in loc[2:])
            where = f"{label}: {field}" if field else label
        msg = e["msg"].removeprefix("Value error, ")
        out.append(f"{where}: {msg}")
    return out


def validate_ir(ir: ModelIR) -> list[str]:
    """Check every name and expression of ``ir``.

    Returns warnings (e.g. strict ``<`` read as ``<=``); raises :class:`IRValidationError`
    listing every error, each naming its item.
    """
    from optiforge.solvers.compile import compile_ir

    return compile_ir(ir).warnings
