"""``Module``: a class whose trainable parameters are found automatically.

Parameters are the :class:`~optiforge.trace.nodes.ParameterNode` attributes of the instance
(also inside lists, tuples and dicts), those of sub-modules, and the code parameters of
trainable ``@bundle`` methods. ``save``/``load`` write and read a readable JSON state file
(:mod:`optiforge.trace.state`).
"""

from __future__ import annotations

import math
import os
from collections import deque
from pathlib import Path
from typing import Any

from optiforge.trace.bundle import Bundle
from optiforge.trace.errors import SerializationError
from optiforge.trace.nodes import ParameterNode
from optiforge.trace.state import (
    STATE_FORMAT,
    STATE_VERSION,
    read_state,
    state_document,
    write_state,
)

__all__ = ["Module", "check_json_value"]

#: The module file format before :mod:`optiforge.trace.state` (still read).
LEGACY_FORMAT = "optiforge.module/1"


class Module:
    """Base class for traced workflows. Subclasses define ``forward``; calling the module
    calls ``forward``. Calling ``super().__init__()`` is not required.

    A :class:`ParameterNode` assigned to an attribute without an explicit name takes the
    attribute's name (``self.offset = node(1, trainable=True)`` is named ``"offset"``).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if (
            isinstance(value, ParameterNode)
            and not value._explicit_name
            and not name.startswith("_")
        ):
            value.name = name
            value._explicit_name = True
        object.__setattr__(self, name, value)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the workflow; override in subclasses."""
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # ----- parameters -----------------------------------------------------------------
    def named_parameters(self, include_frozen: bool = False) -> dict[str, ParameterNode]:
        """Map dotted paths (``"planner.prompt"``, ``"scale.__code"``) to parameters.

        Each parameter appears once (under its shortest path, first in attribute order). Frozen parameters
        (``trainable=False``) are left out unless ``include_frozen``.
        """
        found: dict[str, ParameterNode] = {}
        seen_params: set[int] = set()
        seen_objs: set[int] = set()
        # Breadth first, in attribute order: a shared parameter is listed under its shortest path.
        stack: deque[tuple[str, Any]] = deque([("", self)])
        while stack:
            prefix, obj = stack.popleft()
            for path, p in _direct_parameters(prefix, obj, stack, seen_objs):
                if id(p) in seen_params:
                    continue
                seen_params.add(id(p))
                if p.trainable or include_frozen:
                    found[path] = p
        return dict(sorted(found.items(), key=lambda kv: _path_key(kv[0])))

    def parameters(self) -> list[ParameterNode]:
        """The trainable parameters, in a stable order (sorted by path)."""
        return list(self.named_parameters().values())

    def zero_feedback(self) -> None:
        """Clear feedback and feedback records on every parameter (frozen ones too)."""
        for p in self.named_parameters(include_frozen=True).values():
            p.zero_feedback()

    # ----- persistence -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Parameter values by path (frozen ones included), checked to be JSON values."""
        out = {}
        for path, p in self.named_parameters(include_frozen=True).items():
            check_json_value(p._value, path)
            out[path] = p._value
        return out

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Set parameter values from ``state`` (as returned by :meth:`state_dict`).

        With ``strict`` every path must match exactly; otherwise unknown paths are an error
        and missing ones keep their current value. Nothing changes if there is an error.
        """
        params = self.named_parameters(include_frozen=True)
        unknown = sorted(set(state) - set(params))
        missing = sorted(set(params) - set(state))
        if unknown:
            raise SerializationError(
                f"the saved parameters {unknown} do not exist in {type(self).__name__} "
                f"(its parameters are {sorted(params)}); was the file saved from another class?"
            )
        if strict and missing:
            raise SerializationError(
                f"the saved state has no value for {missing}; pass strict=False to keep their "
                "current values"
            )
        for path, value in state.items():
            current = params[path]._value
            if isinstance(current, tuple) and isinstance(value, list):
                value = tuple(value)
            params[path]._value = value

    def save(self, path: str | os.PathLike) -> Path:
        """Write the parameter values to ``path`` (atomically) as a readable state file
        (:mod:`optiforge.trace.state`, kind ``"module"``)."""
        doc = state_document("module", self.state_dict(), **{"class": _class_path(type(self))})
        return write_state(path, doc)

    def load(self, path: str | os.PathLike, strict: bool = True) -> None:
        """Read parameter values saved by :meth:`save` into this module (files in the
        older ``optiforge.module/1`` format too)."""
        doc = read_state(path, "module", legacy=_legacy_module_file)
        self.load_state_dict(doc["parameters"], strict=strict)


def _legacy_module_file(doc: Any) -> dict[str, Any] | None:
    """A module file written before the shared state format (``optiforge.module/1``)."""
    if doc.get("format") != LEGACY_FORMAT:
        return None
    rest = {k: v for k, v in doc.items() if k != "format"}
    return {"format": STATE_FORMAT, "version": STATE_VERSION, "kind": "module", **rest}


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _path_key(path: str) -> tuple:
    return tuple(path.split("."))


def _direct_parameters(prefix: str, obj: Any, stack: list, seen_objs: set[int]):
    """Yield (path, param) found directly in ``obj``; push sub-modules/containers on stack."""
    if id(obj) in seen_objs:
        return
    seen_objs.add(id(obj))
    join = (lambda k: f"{prefix}.{k}") if prefix else (lambda k: str(k))
    if isinstance(obj, ParameterNode):
        yield prefix, obj
        return
    if isinstance(obj, Module):
        items = [(k, v) for k, v in vars(obj).items() if k != "_optiforge_code_"]
        # Trainable bundled methods: each instance owns its code parameter.
        for klass in type(obj).__mro__:
            for attr, member in vars(klass).items():
                if isinstance(member, Bundle) and member.trainable:
                    st = member.state_for(obj)
                    if st is not None:
                        yield join(f"{attr}.__code"), st.code
        for k, v in items:
            if isinstance(v, ParameterNode):
                yield join(k), v
            elif isinstance(v, (Module, list, tuple, dict)):
                stack.append((join(k), v))
            elif isinstance(v, Bundle) and v.trainable:
                yield join(f"{k}.__code"), v.code
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            if isinstance(v, ParameterNode):
                yield join(i), v
            elif isinstance(v, (Module, list, tuple, dict)):
                stack.append((join(i), v))
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, ParameterNode):
                yield join(k), v
            elif isinstance(v, (Module, list, tuple, dict)):
                stack.append((join(k), v))


def check_json_value(value: Any, where: str = "value") -> None:
    """Raise :class:`SerializationError` unless ``value`` is plain JSON data (str, int,
    float, bool, None, lists/tuples and str-keyed dicts of those; no NaN or infinity)."""
    stack = [(value, where)]
    while stack:
        v, at = stack.pop()
        if v is None or isinstance(v, (str, bool, int)):
            continue
        if isinstance(v, float):
            if not math.isfinite(v):
                raise SerializationError(
                    f"{at} is {v}, which JSON cannot store; use a finite number"
                )
            continue
        if isinstance(v, (list, tuple)):
            stack.extend((x, f"{at}[{i}]") for i, x in enumerate(v))
            continue
        if isinstance(v, dict):
            for k, x in v.items():
                if not isinstance(k, str):
                    raise SerializationError(
                        f"{at} has a {type(k).__name__} key {k!r}; JSON object keys must be text"
                    )
                stack.append((x, f"{at}[{k!r}]"))
            continue
        raise SerializationError(
            f"{at} holds a {type(v).__name__}, which cannot be saved as JSON; keep parameter "
            "values to text, numbers, booleans, None, lists and dicts"
        )
