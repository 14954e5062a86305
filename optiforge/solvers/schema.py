"""The model IR's items and fields, with their structural checks (types, names, sizes).

:class:`~optiforge.solvers.ir.ModelIR` adds loading with full validation, which runs the
compiler (:mod:`optiforge.solvers.compile`); the compiler reads the fields defined here
(:class:`ModelIRBase`), so it does not import :mod:`optiforge.solvers.ir`. Import the IR
from :mod:`optiforge.solvers.ir` (or :mod:`optiforge.solvers`), which re-exports these.
"""

from __future__ import annotations

import keyword
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "RESERVED_NAMES",
    "IRConstraint",
    "IRObjective",
    "IRParameter",
    "IRSet",
    "IRVariable",
    "ModelIRBase",
    "element_key",
]

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


class ModelIRBase(_Item):
    """The fields of :class:`~optiforge.solvers.ir.ModelIR`: sets, parameters, variables,
    one objective, constraints (what the compiler reads)."""

    name: str = "model"
    sets: list[IRSet] = Field(default_factory=list)
    parameters: list[IRParameter] = Field(default_factory=list)
    variables: list[IRVariable]
    objective: IRObjective
    constraints: list[IRConstraint] = Field(default_factory=list)
