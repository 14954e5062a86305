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

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


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


def extract_json(text: str) -> str | None:
    """The JSON value inside ``text``: the whole text, a fenced block, or the first
    decodable object/array. None when there is none."""
    stripped = text.strip()
    candidates = [stripped]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(text)]
    for cand in candidates:
        try:
            json.loads(cand)
            return cand
        except (json.JSONDecodeError, ValueError):
            pass
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                _, end = decoder.raw_decode(text, i)
            except json.JSONDecodeError:
                continue
            return text[i:end]
    return None


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
