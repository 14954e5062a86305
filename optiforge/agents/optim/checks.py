"""Reading a suggested value out of a reply, and comparing values.

Whether a value fits a parameter is decided by the parameter itself
(:meth:`ParameterNode.validate <optiforge.trace.nodes.ParameterNode.validate>`, the rule in
:mod:`optiforge.trace.values`; a trainable function's code is compiled by
:class:`~optiforge.trace.bundle.CodeParameter`). An optimizer only cleans what the model
wrote (:func:`clean_reply_value`: a code fence around it, quotes around a number or a
bool) and hands the result to :func:`validate`, which turns the trace engine's refusal into
an :class:`InvalidValueError` the step can log and retry.
"""

from __future__ import annotations

import math
import re
import textwrap
from typing import Any

from optiforge.agents.optim.errors import InvalidValueError
from optiforge.trace import ParameterNode, ValueTypeError
from optiforge.trace.values import looks_like_code

_FENCE = re.compile(r"\s*```[a-zA-Z0-9_+-]*[ \t]*\n(.*?)\n?```\s*", re.DOTALL)


def is_code(p: ParameterNode) -> bool:
    """True if ``p`` holds function source: the code of a trainable bundle, or text whose
    current value is a ``def``."""
    return p.kind == "code" or looks_like_code(p.value)


def clean_reply_value(raw: Any, p: ParameterNode) -> Any:
    """What the model wrote for ``p``, without the wrapping models add: a Markdown code fence
    (for code and for non-text values) and, for code, the common indentation. Text for a
    text parameter is kept as written; the type check itself is the parameter's."""
    if not isinstance(raw, str):
        return raw
    code = is_code(p)
    if code or not isinstance(p.value, str):
        fence = _FENCE.fullmatch(raw.strip("\n"))
        if fence:
            raw = fence.group(1)
    if code:
        raw = textwrap.dedent(raw.strip("\n"))
    return raw


def validate(p: ParameterNode, raw: Any) -> Any:
    """``raw`` cleaned (:func:`clean_reply_value`) and converted by ``p.validate``; raises
    :class:`InvalidValueError` with the parameter's reason when it does not fit."""
    try:
        return p.validate(clean_reply_value(raw, p))
    except ValueTypeError as exc:
        raise InvalidValueError(str(exc)) from None


def same_value(a: Any, b: Any) -> bool:
    """Equality used for 'did it change' and OPRO de-duplication: numbers compare with a
    relative tolerance, strings ignore surrounding and repeated whitespace."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, str) and isinstance(b, str):
        return " ".join(a.split()) == " ".join(b.split())
    return a == b
