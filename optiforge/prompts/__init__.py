"""Prompt templates, kept as files and loaded by name.

A template lives at ``optiforge/prompts/<group>/<name>.md`` and is addressed as
``"<group>/<name>"``. Placeholders use :class:`string.Template` syntax (``$name`` or
``${name}``), so JSON, code and braces in prompts need no escaping; write ``$$`` for a
literal dollar sign.
"""

from __future__ import annotations

import string
from functools import lru_cache
from pathlib import Path

from optiforge.errors import OptiforgeError

_ROOT = Path(__file__).resolve().parent


class PromptError(OptiforgeError):
    """A prompt template is missing or a placeholder has no value."""


@lru_cache(maxsize=256)
def load_prompt(name: str) -> str:
    """Return the raw text of template ``name`` (e.g. ``"optimizers/optoprime_system"``)."""
    path = (_ROOT / f"{name}.md").resolve()
    if _ROOT not in path.parents or not path.is_file():
        available = ", ".join(list_prompts()) or "none"
        raise PromptError(f"no prompt template named {name!r}; available: {available}")
    return path.read_text(encoding="utf-8")


def render_prompt(name: str, /, **values: object) -> str:
    """Fill template ``name`` with ``values``; a missing placeholder raises PromptError."""
    try:
        return string.Template(load_prompt(name)).substitute({k: str(v) for k, v in values.items()})
    except KeyError as exc:
        raise PromptError(f"prompt {name!r} needs a value for ${exc.args[0]}") from None
    except ValueError as exc:
        raise PromptError(f"prompt {name!r} is malformed: {exc}") from None


def list_prompts() -> list[str]:
    """Names of every shipped template."""
    return sorted(str(p.relative_to(_ROOT).with_suffix("")) for p in _ROOT.rglob("*.md"))
