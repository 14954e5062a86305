"""Tolerant parsing of optimizer replies.

Small local models make format mistakes: JSON inside code fences, trailing commas, Python
literals instead of JSON, unquoted keys, missing commas, replies cut at max_tokens (all
repaired by json-repair, see :func:`optiforge.llm.structured.find_json`), a tag format
instead of JSON, a parameter called ``offset`` when the graph calls it ``offset:0``. Everything here turns such replies into
``{parameter name: raw value}`` or raises :class:`ReplyError` saying what was wrong.
Structured output (a pydantic schema sent as ``response_format``) is tried first by the
optimizers; these functions are the fallback and also validate structured replies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from optiforge.agents.optim.errors import ReplyError
from optiforge.llm.structured import find_json

_INDEX_SUFFIX = re.compile(r"(?::\d+|\d+)$")


def extract_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object found in ``text`` (whole text, fenced block, or a ``{...}``
    span), repaired when malformed and closed when cut off; None when there is none.

    The parsing and its limits (a repair never reinterprets a bare word or invents a value)
    are :func:`optiforge.llm.structured.find_json`'s, shared with structured output.
    """
    return find_json(text, kinds=(dict,))


def _tag(text: str, name: str) -> list[str]:
    pattern = re.compile(rf"<{name}>\s*(.*?)\s*</{name}>", re.DOTALL | re.IGNORECASE)
    return pattern.findall(text)


def extract_tagged(text: str) -> tuple[str, dict[str, str]] | None:
    """Parse the tag format::

        <reasoning>...</reasoning>
        <variable><name>offset:0</name><value>3.5</value></variable>

    Returns ``(reasoning, {name: value text})`` or None when no variable tag is present.
    """
    variables = _tag(text, "variable")
    if not variables:
        return None
    found: dict[str, str] = {}
    for block in variables:
        names = _tag(block, "name")
        values = _tag(block, "value")
        if names and values:
            found[names[0].strip()] = _strip_fence(values[0])
    reasoning = " ".join(_tag(text, "reasoning")).strip()
    return (reasoning, found) if found else None


def _strip_fence(value: str) -> str:
    """Drop one surrounding code fence (models fence code inside values)."""
    m = re.fullmatch(r"\s*```[a-zA-Z0-9_+-]*\s*\n(.*?)\n?```\s*", value, re.DOTALL)
    return m.group(1) if m else value


def normalize_name(name: str) -> str:
    """Lower-case ``name`` without decoration models add (backticks, quotes, ``#``, type
    prefixes like ``(float) ``)."""
    name = name.strip().strip("`'\"#*").strip()
    name = re.sub(r"^\([^)]*\)\s*", "", name)  # "(float) offset:0" -> "offset:0"
    name = name.split("=", 1)[0].strip()
    return name.lower()


def _base(name: str) -> str:
    return _INDEX_SUFFIX.sub("", name)


def match_name(key: str, names: Iterable[str]) -> str | None:
    """The parameter in ``names`` that reply key ``key`` refers to, or None.

    Tried in order: exact, case/decoration-insensitive, then with the index suffix dropped
    on both sides (``offset`` or ``offset0`` for ``offset:0``). A base name shared by two
    parameters matches neither: guessing would change the wrong one.
    """
    names = list(names)
    if key in names:
        return key
    norm = normalize_name(key)
    by_norm = [n for n in names if normalize_name(n) == norm]
    if len(by_norm) == 1:
        return by_norm[0]
    by_py = [n for n in names if normalize_name(n).replace(":", "") == norm.replace(":", "")]
    if len(by_py) == 1:
        return by_py[0]
    # The model dropped the ":0" index suffix.
    by_prefix = [n for n in names if re.sub(r":\d+$", "", normalize_name(n)) == norm]
    if len(by_prefix) == 1:
        return by_prefix[0]
    by_base = [n for n in names if _base(normalize_name(n)) == _base(norm)]
    if len(by_base) == 1:
        return by_base[0]
    return None


def _flatten_suggestion(obj: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Find the suggestion mapping inside a parsed JSON reply.

    Accepts ``{"reasoning": .., "suggestion": {..}}`` and common variants (``answer``,
    ``suggestions``, ``variables``, a list of ``{"name":..,"value":..}``) and a bare
    mapping of names to values.
    """
    reasoning = ""
    for key in ("reasoning", "reason", "analysis", "thought", "explanation"):
        if isinstance(obj.get(key), str):
            reasoning = obj[key]
            break
    for key in ("suggestion", "suggestions", "variables", "values", "new_values", "answer"):
        inner = obj.get(key)
        if isinstance(inner, dict):
            return reasoning, dict(inner)
        if isinstance(inner, list) and all(
            isinstance(it, dict) and "name" in it and "value" in it for it in inner
        ):
            return reasoning, {str(it["name"]): it["value"] for it in inner}
    skip = {"reasoning", "reason", "analysis", "thought", "explanation", "answer"}
    return reasoning, {k: v for k, v in obj.items() if k not in skip}


def parse_suggestion(
    reply: str | Mapping[str, Any] | None, names: Iterable[str]
) -> tuple[str, dict[str, Any]]:
    """Turn a reply into ``(reasoning, {parameter name: raw value})``.

    ``reply`` is the parsed structured output (a mapping) or the reply text. Keys are
    matched to ``names`` with :func:`match_name`; keys that match no parameter are
    reported in the error when nothing matched, and otherwise dropped. Raises
    :class:`ReplyError` when no usable suggestion is present.
    """
    names = list(names)
    if reply is None or (isinstance(reply, str) and not reply.strip()):
        raise ReplyError("the reply was empty")
    if isinstance(reply, Mapping):
        reasoning, raw = _flatten_suggestion(reply)
    else:
        obj = extract_json_object(reply)
        tagged = None if obj is not None else extract_tagged(reply)
        if obj is not None:
            reasoning, raw = _flatten_suggestion(obj)
        elif tagged is not None:
            reasoning, raw = tagged
        else:
            snippet = reply.strip().replace("\n", " ")[:160]
            raise ReplyError(
                f"no JSON object or <variable> tags found in the reply (starts: {snippet!r})"
            )
    matched: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in raw.items():
        name = match_name(str(key), names)
        if name is None:
            unknown.append(str(key))
        elif name not in matched:
            matched[name] = value
    if not matched:
        if unknown:
            raise ReplyError(
                f"the reply names no known parameter: got {unknown[:5]}, expected some of {names}"
            )
        raise ReplyError("the reply contains no suggested values")
    return reasoning.strip(), matched
