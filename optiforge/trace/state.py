"""The one file format for saved parameter state.

A module (:meth:`Module.save <optiforge.trace.module.Module.save>`) and an optimizer
(:meth:`Optimizer.save <optiforge.agents.optim.base.Optimizer.save>`) write the same JSON
document::

    {"format": "optiforge.state", "version": 1, "kind": "module" | "optimizer" | ...,
     "parameters": {name: value, ...}, ...fields of that kind}

``parameters`` holds plain JSON values by name (dotted paths for a module, the optimizer's
parameter names for an optimizer); the other fields belong to the kind (``class`` for a
module; ``optimizer``, ``step_count``, ``log`` and the optimizer's memory for an optimizer).

``version`` is the version of this envelope. A reader accepts its own version and, through
a ``legacy`` converter given by the caller, the files each kind wrote before this format
existed (``optiforge.module/1`` module files, version-1 optimizer states). A newer version,
or another kind, is refused with a message that names it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from optiforge.fileio import write_text_atomic
from optiforge.trace.errors import SerializationError

__all__ = [
    "STATE_FORMAT",
    "STATE_VERSION",
    "check_state",
    "read_state",
    "state_document",
    "write_state",
]

STATE_FORMAT = "optiforge.state"
STATE_VERSION = 1

#: Turns an older document into the current one, or returns None when it is not one.
Legacy = Callable[[Mapping[str, Any]], dict[str, Any] | None]


def state_document(kind: str, parameters: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    """A state document of ``kind`` holding ``parameters`` (name -> JSON value) and the
    kind's own ``fields``."""
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "kind": kind,
        "parameters": dict(parameters),
        **fields,
    }


def check_state(
    doc: Any, kind: str, source: str = "the state", *, legacy: Legacy | None = None
) -> dict[str, Any]:
    """Return ``doc`` as a current state document of ``kind``, or raise
    :class:`~optiforge.trace.errors.SerializationError` saying what it is instead.

    A document without ``"format": "optiforge.state"`` is passed to ``legacy`` (when given),
    which converts an older file of this kind or returns None.
    """
    if not isinstance(doc, Mapping):
        raise SerializationError(f"{source} does not hold a JSON object")
    if doc.get("format") != STATE_FORMAT:
        converted = legacy(doc) if legacy is not None else None
        if converted is None:
            raise SerializationError(
                f'{source} is not an optiforge {kind} file (expected "format": '
                f'"{STATE_FORMAT}", got {doc.get("format")!r})'
            )
        doc = converted
    version = doc.get("version")
    if version != STATE_VERSION:
        raise SerializationError(
            f"{source} is version {version!r} of the optiforge state format; this optiforge "
            f"reads version {STATE_VERSION}; save it again with the optiforge that reads it"
        )
    if doc.get("kind") != kind:
        raise SerializationError(f"{source} holds state of kind {doc.get('kind')!r}, not {kind!r}")
    if not isinstance(doc.get("parameters"), Mapping):
        raise SerializationError(f'{source} has no "parameters" object')
    return dict(doc)


def write_state(path: str | os.PathLike, doc: Mapping[str, Any]) -> Path:
    """Write a state document as readable JSON, atomically; returns the path. Values must
    be plain JSON (NaN and infinities are refused)."""
    try:
        text = json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"cannot write the state to {path}: {exc}") from None
    return write_text_atomic(Path(path), text)


def read_state(
    path: str | os.PathLike, kind: str, *, legacy: Legacy | None = None
) -> dict[str, Any]:
    """Read and check a state file of ``kind`` (see :func:`check_state`)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SerializationError(f"no such parameter file: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SerializationError(f"cannot read {p}: {exc}") from None
    except ValueError as exc:
        raise SerializationError(f"{p} is not valid JSON: {exc}") from None
    return check_state(doc, kind, str(p), legacy=legacy)
