"""The model IR: a typed, JSON-friendly description of an optimization problem.

The IR is what a formulator emits as grammar-constrained JSON, so its schema is kept flat
(no recursion), small and easy for a small model to fill. Expressions are strings in a safe
grammar (see :mod:`optiforge.solvers.expr`); they are parsed, never evaluated as Python.

Structural checks (types, names, sizes) run when the model is built. Semantic checks (unknown
names, wrong indexing, bad syntax) run in :func:`validate_ir`, which lists every problem with
the item it belongs to, e.g. ``constraint 'budget': unknown variable 'z'``; they are the
compiler's (:mod:`optiforge.solvers.compile`), which reads the fields and items defined in
:mod:`optiforge.solvers.schema` (re-exported here) and so does not import this module.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from optiforge.solvers.compile import compile_ir
from optiforge.solvers.errors import IRValidationError
from optiforge.solvers.schema import (
    RESERVED_NAMES,
    IRConstraint,
    IRObjective,
    IRParameter,
    IRSet,
    IRVariable,
    ModelIRBase,
    element_key,
)

__all__ = [
    "RESERVED_NAMES",
    "IRConstraint",
    "IRObjective",
    "IRParameter",
    "IRSet",
    "IRVariable",
    "ModelIR",
    "element_key",
    "validate_ir",
]


class ModelIR(ModelIRBase):
    """An optimization model: sets, parameters, variables, one objective, constraints."""

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

    def __repr__(self) -> str:
        """The model in one compact line (objective, constraints, variables with domain and
        bounds, then sets and parameters, long data cut), for traces that show it to an
        optimizer and for logs; ``model_dump()`` has everything."""
        obj = self.objective
        parts = [f"{obj.sense} {obj.expression}"]
        for c in self.constraints:
            each = f" for all {c.for_all}" if (c.for_all or "").strip() else ""
            parts.append(f"{c.name}: {c.expression}{each}")
        for v in self.variables:
            idx = f"[{','.join(v.index_sets)}]" if v.index_sets else ""
            lb = "-inf" if v.lb is None else f"{v.lb:g}"
            ub = "inf" if v.ub is None else f"{v.ub:g}"
            bounds = "" if v.lb == 0.0 and v.ub is None else f" in [{lb}, {ub}]"
            parts.append(f"var {v.name}{idx} {v.domain}{bounds}")
        for st in self.sets:
            parts.append(f"set {st.name} = {_few(st.elements)}")
        for p in self.parameters:
            idx = f"[{','.join(p.index_sets)}]" if p.index_sets else ""
            parts.append(f"param {p.name}{idx} = {_few([f'{x:g}' for x in p.values])}")
        return f"ModelIR({'; '.join(parts)})"

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


def _few(items: list[str], n: int = 12) -> str:
    shown = ", ".join(items[:n])
    return f"[{shown}{f', ... ({len(items)} in all)' if len(items) > n else ''}]"


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
    return compile_ir(ir).warnings
