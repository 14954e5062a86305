"""Structured output: a pydantic model class becomes a JSON schema for ``response_format``;
replies are extracted, validated, and re-asked once with the validation error.

The real client and :class:`optiforge.llm.testing.ScriptedLLM` both go through these
functions (via :class:`optiforge.llm.base.BaseLLM`), so tests see the exact same parsing.
"""

from __future__ import annotations

import json
import re
import string
from functools import lru_cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, ValidationError

from optiforge.llm.errors import LLMError

_FENCE = re.compile(r"```[a-zA-Z0-9_+-]*\s*\n?(.*?)```", re.DOTALL)


def check_response_format(response_format: Any) -> type[BaseModel] | None:
    """Return the pydantic model class, or raise a clear error for anything else."""
    if response_format is None:
        return None
    if isinstance(response_format, type) and issubclass(response_format, BaseModel):
        return response_format
    raise LLMError(
        f"response_format must be a pydantic model class (got {response_format!r}); "
        "define `class Answer(BaseModel): ...` and pass `response_format=Answer`."
    )


@lru_cache(maxsize=256)
def schema_of(model_cls: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of ``model_cls`` (cached; pydantic builds it on every call)."""
    return model_cls.model_json_schema()


def response_format_payload(model_cls: type[BaseModel]) -> dict[str, Any]:
    """The OpenAI ``response_format`` value that asks the server to constrain output."""
    return {
        "type": "json_schema",
        "json_schema": {"name": model_cls.__name__, "schema": schema_of(model_cls), "strict": True},
    }


def _scan(text: str) -> tuple[list[str], str | None]:
    """Every complete top-level ``{...}`` span of ``text`` (quotes respected), in order; and
    the unclosed tail when ``text`` ends inside an object (a reply cut at max_tokens), with
    its missing ``]``/``}`` appended, or None when it ends inside a string (the cut string's
    value is unknown) or inside no object."""
    spans: list[str] = []
    stack: list[str] = []
    start = -1
    in_str: str | None = None
    escape = False
    for i, ch in enumerate(text):
        if in_str:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == in_str:
                in_str = None
            continue
        if ch in "\"'" and stack:
            in_str = ch
        elif ch == "{" or (ch == "[" and stack):
            if not stack:
                start = i
            stack.append("}" if ch == "{" else "]")
        elif stack and ch == stack[-1]:
            stack.pop()
            if not stack:
                spans.append(text[start : i + 1])
    if not stack or in_str:
        return spans, None
    tail = text[start:].rstrip().rstrip(",").rstrip()
    return spans, tail + "".join(reversed(stack))


# Bare words that may stand outside quotes in a repairable reply (JSON and Python literals).
_LITERALS = {"true", "false", "null", "True", "False", "None", "NaN", "Infinity", "-Infinity"}
_BARE = re.compile(r"[^\s{}\[\](),:\"']+")
_BARE_KEY = re.compile(r"\s*:")


def _bare_tokens_ok(candidate: str) -> bool:
    """True when every token outside quotes is a number, a literal or an unquoted key, so a
    repair can only add quotes, commas and brackets and drop comments, never reinterpret
    words (``3 + 4``, ``tru`` and ``1/2`` make the candidate unrepairable)."""
    outside: list[str] = []
    in_str: str | None = None
    escape = False
    i = 0
    while i < len(candidate):
        ch = candidate[i]
        if in_str:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == in_str:
                in_str = None
            outside.append(" ")
        elif candidate.startswith(("//", "#"), i):  # a comment: json-repair drops it
            end = candidate.find("\n", i)
            i = len(candidate) if end < 0 else end
            continue
        elif candidate.startswith("/*", i):
            end = candidate.find("*/", i + 2)
            i = len(candidate) if end < 0 else end + 2
            continue
        else:
            if ch in "\"'":
                in_str = ch
            outside.append(ch)
        i += 1
    bare = "".join(outside)
    for m in _BARE.finditer(bare):
        tok = m.group()
        if tok in _LITERALS or _BARE_KEY.match(bare, m.end()):
            continue
        try:
            float(tok)
        except ValueError:
            return False
    return True


def _strings_quoted(value: Any, candidate: str) -> bool:
    """True when every string in ``value`` (keys aside) was written quoted in ``candidate``:
    json-repair fills a missing value with ``""`` and turns stray words into strings."""
    if isinstance(value, dict):
        return all(_strings_quoted(v, candidate) for v in value.values())
    if isinstance(value, list):
        return all(_strings_quoted(v, candidate) for v in value)
    if isinstance(value, str):
        escaped = json.dumps(value, ensure_ascii=False)[1:-1]
        # As written: raw, JSON-escaped, \u-escaped, or with \' inside single quotes.
        forms = {value, escaped, json.dumps(value)[1:-1], escaped.replace("'", "\\'")}
        return any(
            q + f + q in candidate or (f and q + f in candidate) for q in "\"'" for f in forms
        )
    return True


def repair_json(candidate: str) -> Any | None:
    """``candidate`` parsed as JSON, else repaired with json-repair (unquoted keys, missing
    or trailing commas, single quotes, Python ``True``/``None``, comments aside); None when
    it cannot be read without changing what it says.

    A repair is refused when it would have to reinterpret a bare word or fill in a missing
    value (see :func:`_bare_tokens_ok`, :func:`_strings_quoted`). Callers pass a complete
    ``{...}`` span or a cut reply with its brackets closed (:func:`_scan`), never free prose.
    """
    candidate = candidate.strip()
    try:
        return json.loads(candidate, strict=False)
    except (json.JSONDecodeError, ValueError, RecursionError):
        pass
    if not candidate or candidate[0] not in "{[" or not _bare_tokens_ok(candidate):
        return None
    import json_repair  # small, pure Python; imported on the first malformed reply

    try:
        value = json_repair.loads(candidate)
    except (ValueError, RecursionError):  # pragma: no cover - json-repair rarely raises
        return None
    if not isinstance(value, (dict, list)) or not _strings_quoted(value, candidate):
        return None
    return value


def find_json(text: str, kinds: tuple[type, ...] = (dict, list)) -> Any | None:
    """The first JSON value of a type in ``kinds`` found in a model's reply: the whole text,
    a fenced block, a top-level ``{...}`` span (repaired if need be), a cut reply with its
    missing brackets closed, else the first decodable object/array. None when there is none.

    Valid JSON always wins over a repair, so well-formed replies parse exactly as before.
    """
    if not text:
        return None
    stripped = text.strip()
    fences = [m.group(1).strip() for m in _FENCE.finditer(text)]
    for cand in (stripped, *fences):
        try:
            value = json.loads(cand, strict=False)
        except (json.JSONDecodeError, ValueError, RecursionError):
            continue
        if isinstance(value, kinds):
            return value
    spans, tail = _scan(text)
    for cand in (*fences, *spans, *([tail] if tail else [])):
        value = repair_json(cand)
        if isinstance(value, kinds):
            return value
    # Last resort: the first decodable object or array anywhere, even nested in broken text.
    decoder = json.JSONDecoder(strict=False)
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                value, _ = decoder.raw_decode(text, i)
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(value, kinds):
                return value
    return None


def extract_json(text: str) -> str | None:
    """The JSON value inside ``text`` as JSON text (see :func:`find_json`): the reply's own
    text when it is valid JSON, else the repaired value re-serialized. None when there is
    none."""
    stripped = text.strip()
    candidates = [stripped]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(text)]
    for cand in candidates:
        try:
            json.loads(cand)
            return cand
        except (json.JSONDecodeError, ValueError):
            pass
    value = find_json(text)
    return None if value is None else json.dumps(value)


def parse_reply(text: str, model_cls: type[BaseModel]) -> tuple[BaseModel | None, str | None]:
    """Validate one reply. Returns ``(object, None)`` or ``(None, error message)``."""
    raw = extract_json(text)
    if raw is None:
        snippet = text.strip()[:200] or "<empty reply>"
        return None, f"no JSON value found in the reply (it began: {snippet!r})"
    try:
        return model_cls.model_validate_json(raw), None
    except ValidationError as exc:
        return None, _short_validation_error(exc)


def _short_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:8]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "<root>"
        parts.append(f"{loc}: {err.get('msg')}")
    more = exc.error_count() - len(parts)
    if more > 0:
        parts.append(f"... and {more} more")
    return "the JSON did not match the schema: " + "; ".join(parts)


@lru_cache(maxsize=8)
def _template(name: str) -> string.Template:
    text = resources.files("optiforge.llm").joinpath(name).read_text(encoding="utf-8")
    return string.Template(text)


def repair_messages(
    messages: list[dict[str, Any]], bad_reply: str, error: str, model_cls: type[BaseModel]
) -> list[dict[str, Any]]:
    """The conversation for the one re-ask: the original, the bad reply, the error."""
    schema = json.dumps(schema_of(model_cls), separators=(",", ":"))
    note = _template("json_repair.md").substitute(error=error, schema=schema).strip()
    return [
        *messages,
        {"role": "assistant", "content": bad_reply},
        {"role": "user", "content": note},
    ]


def with_schema_instruction(
    messages: list[dict[str, Any]], model_cls: type[BaseModel]
) -> list[dict[str, Any]]:
    """Messages that ask for the schema in words, for servers that cannot constrain output."""
    schema = json.dumps(schema_of(model_cls), separators=(",", ":"))
    note = _template("json_instruction.md").substitute(schema=schema).strip()
    out = [dict(m) for m in messages]
    last = out[-1]
    if last.get("role") == "user" and isinstance(last.get("content"), str):
        last["content"] = f"{last['content']}\n\n{note}"
    else:
        out.append({"role": "user", "content": note})
    return out
