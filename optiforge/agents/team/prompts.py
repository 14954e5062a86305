"""The team's prompts: shipped defaults, tuned overrides, and rendering.

Every role prompt is a file ``optiforge/prompts/team/<name>.md``. The *system* prompts of
the roles (``formulator_system``, ``critic_system``, ``coder_system``, ``planner_system``)
are trainable: ``optiforge tune`` saves new values for them as a JSON object
``{"formulator_system": "...", ...}``, and :func:`load_prompt_values` reads it back for
``solve`` and ``eval`` (``--prompts FILE``).
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from optiforge.errors import OptiforgeError
from optiforge.prompts import load_prompt

#: Prompts an optimizer may change (the roles' instructions).
TRAINABLE = ("formulator_system", "critic_system", "coder_system", "planner_system")
#: Every template the team uses.
ALL_PROMPTS = (
    *TRAINABLE,
    "formulator_user",
    "formulator_repair",
    "critic_user",
    "coder_user",
    "coder_repair",
    "direct_user",
    "planner_user",
)


class PromptFileError(OptiforgeError):
    """A tuned-prompts file is missing, unreadable or has unknown keys."""


def load_prompt_values(prompts: str | Path | Mapping[str, Any] | None) -> dict[str, str]:
    """Read tuned prompt values: a path to a JSON file, a dict, or None (no overrides).

    A file written by ``optiforge tune`` has ``{"prompts": {...}, ...}``; a plain
    ``{name: text}`` object works too. Unknown names raise :class:`PromptFileError`.
    """
    if prompts is None:
        return {}
    if isinstance(prompts, (str, Path)):
        path = Path(prompts)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PromptFileError(
                f"prompts file {path} does not exist; create one with 'optiforge tune'"
            ) from None
        except (OSError, json.JSONDecodeError) as exc:
            raise PromptFileError(f"cannot read prompts file {path}: {exc}") from None
    else:
        data = dict(prompts)
    if isinstance(data, dict) and isinstance(data.get("prompts"), dict):
        data = data["prompts"]
    if not isinstance(data, dict):
        raise PromptFileError("tuned prompts must be a JSON object {name: text}")
    unknown = sorted(set(data) - set(ALL_PROMPTS))
    if unknown:
        raise PromptFileError(f"unknown prompt name(s) {unknown}; known: {', '.join(ALL_PROMPTS)}")
    bad = [k for k, v in data.items() if not isinstance(v, str) or not v.strip()]
    if bad:
        raise PromptFileError(f"prompt value(s) {bad} must be non-empty strings")
    return {k: str(v) for k, v in data.items()}


class PromptSet:
    """The prompt texts one team run uses: defaults from files plus overrides."""

    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        self.overrides = dict(overrides or {})

    def text(self, name: str) -> str:
        """The raw template ``name`` (override first, else the shipped file)."""
        if name in self.overrides:
            return self.overrides[name]
        return load_prompt(f"team/{name}")

    def render(self, name: str, **values: Any) -> str:
        """Fill template ``name``; unknown ``$words`` in tuned text are left as they are."""
        return string.Template(self.text(name)).safe_substitute(
            {k: str(v) for k, v in values.items()}
        )

    def values(self) -> dict[str, str]:
        """Current text of every trainable prompt."""
        return {name: self.text(name) for name in TRAINABLE}
