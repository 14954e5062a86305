"""An optimizer's state as a document of :mod:`optiforge.trace.state` (kind
``"optimizer"``), restoring it, and the JSON file :meth:`Optimizer.save` writes.

``opt`` below is an :class:`~optiforge.agents.optim.base.Optimizer` (not imported: base
imports this module)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from optiforge.agents.optim.checks import validate
from optiforge.agents.optim.errors import OptimizerError, ReplyError
from optiforge.agents.optim.replies import jsonable
from optiforge.fileio import write_text_atomic
from optiforge.trace import SerializationError
from optiforge.trace.state import STATE_FORMAT, STATE_VERSION, check_state, state_document

#: The version of optimizer state files before :mod:`optiforge.trace.state` (still read).
LEGACY_STATE_VERSION = 1


def optimizer_state(opt: Any) -> dict[str, Any]:
    """The base state of ``opt``: parameter values, ``optimizer`` (its kind),
    ``step_count`` and ``log``."""
    return state_document(
        "optimizer",
        {k: jsonable(v) for k, v in opt.values().items()},
        optimizer=opt.kind,
        step_count=opt.step_count,
        log=opt.log,
    )


def restore_optimizer_state(
    opt: Any, state: Mapping[str, Any], *, restore_values: bool = True
) -> None:
    """Check ``state`` (or a version-1 state from before the shared format) against
    ``opt`` and restore its values (all checked before any is set), step count and log."""
    try:
        state = check_state(state, "optimizer", "the optimizer state", legacy=legacy_state)
    except SerializationError as exc:
        raise OptimizerError(str(exc)) from None
    if state.get("optimizer") != opt.kind:
        raise OptimizerError(
            f"state is for optimizer {state.get('optimizer')!r}, not {opt.kind!r}; "
            "load it into the same optimizer class"
        )
    values = dict(state.get("parameters", {}))
    unknown = [n for n in values if n not in opt.names]
    if unknown:
        raise OptimizerError(
            f"state names parameters this optimizer does not have: {unknown}; known: {opt.names}"
        )
    if restore_values:
        checked = {}
        for name, value in values.items():
            p = opt.parameter(name)
            try:
                checked[name] = validate(p, value)
            except ReplyError as exc:
                raise OptimizerError(f"state value for {name!r} is invalid: {exc}") from None
        for name, value in checked.items():
            opt.parameter(name).set(value, validate=False)
    opt.step_count = int(state.get("step_count", 0))
    opt.log = list(state.get("log", []))


def write_state(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` as JSON to ``path`` (atomically) and return the path."""
    return write_text_atomic(path, json.dumps(state, indent=2, default=repr))


def read_state(path: str | Path) -> dict[str, Any]:
    """The state object in a file written by :func:`write_state`; OptimizerError when the
    file is missing, unreadable or not a JSON object."""
    path = Path(path)
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OptimizerError(f"no optimizer state at {path}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise OptimizerError(f"cannot read optimizer state {path}: {exc}") from None
    if not isinstance(state, dict):
        raise OptimizerError(f"{path} does not hold an optimizer state object")
    return state


def legacy_state(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """An optimizer state written before the shared state format: ``{"version": 1,
    "optimizer": kind, ...}`` with the same fields and no ``format``."""
    if "format" in doc or "optimizer" not in doc:
        return None
    if doc.get("version") != LEGACY_STATE_VERSION:
        raise SerializationError(
            f"unsupported optimizer state version {doc.get('version')!r} (this optiforge "
            f"reads version {LEGACY_STATE_VERSION} and the {STATE_FORMAT!r} format)"
        )
    return {**doc, "format": STATE_FORMAT, "version": STATE_VERSION, "kind": "optimizer"}
