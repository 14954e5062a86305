"""The team's prompts: shipped defaults, tuned overrides, the prompts file, and rendering.

Every role prompt is a file ``optiforge/prompts/team/<name>.md``. The *system* prompts of
the roles (``formulator_system``, ``critic_system``, ``coder_system``, ``planner_system``,
``verifier_system`` of the ``verify`` lever and ``extractor_system`` of the ``templates``
lever) are trainable: ``optiforge tune`` saves new values with :func:`save_prompts`, and
:func:`load_prompt_values` reads them back for ``solve`` and ``eval`` (``--prompts FILE``).

A prompts file is a state document in the shared format (:mod:`optiforge.trace.state`):
``{"format": "optiforge.state", "version": 1, "kind": "team-prompts", "parameters": {name:
text}, "roles": {role: [prompt names]}, "meta": {...}}``. ``roles`` names the team's roles
and the prompts of each that the file holds; a file written for other roles, or of another
version or kind, is refused at once with a message that says why. The older team-prompts
files (``"format": "optiforge.team-prompts"`` version 2, and ``"optiforge.team-prompts/1"``)
and a plain ``{name: text}`` object are still read.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from optiforge.errors import OptiforgeError
from optiforge.prompts import load_prompt
from optiforge.trace.errors import SerializationError
from optiforge.trace.state import check_state, state_document, write_state

#: Prompts an optimizer may change (the roles' instructions).
TRAINABLE = (
    "formulator_system",
    "critic_system",
    "coder_system",
    "planner_system",
    "verifier_system",
    "extractor_system",
)
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
    "verifier_user",
    "extractor_user",
)
#: The role each prompt belongs to (the direct agent's prompt is the coder's).
PROMPT_ROLES = {
    "formulator_system": "formulator",
    "formulator_user": "formulator",
    "formulator_repair": "formulator",
    "critic_system": "critic",
    "critic_user": "critic",
    "coder_system": "coder",
    "coder_user": "coder",
    "coder_repair": "coder",
    "direct_user": "coder",
    "planner_system": "planner",
    "planner_user": "planner",
    # The verifier (the ``verify`` lever) is a check on the critic's side.
    "verifier_system": "critic",
    "verifier_user": "critic",
    # The extractor (the ``templates`` lever) writes the formulation's data.
    "extractor_system": "formulator",
    "extractor_user": "formulator",
}
#: The team's roles, in the order the prompts file lists them.
TEAM_ROLES = ("formulator", "planner", "coder", "critic")
#: The state kind of a prompts file (the shared optiforge state format, see
#: :mod:`optiforge.trace.state`), and the older team-prompts formats still read.
PROMPTS_KIND = "team-prompts"
_V2_FORMAT = "optiforge.team-prompts"
_V1_FORMAT = "optiforge.team-prompts/1"

#: What each trainable prompt is for (shown to optimizers as the parameter's description).
DESCRIPTIONS = {
    "formulator_system": "System prompt of the formulator: instructions and examples for turning "
    "a word problem into a JSON optimization model (variables with domains, objective, "
    "constraints). Keep the JSON field names.",
    "critic_system": "System prompt of the critic: how to review a model and its solver result "
    "and give concrete fixes.",
    "coder_system": "System prompt of the coder: how to write a Pyomo program that ends with "
    "report(model=m, results=res).",
    "planner_system": "System prompt of the planner: how to decide integrality and nonlinearity.",
    "verifier_system": "System prompt of the sentence-level verifier: how to decide whether one "
    "constraint or objective says what its sentences say (directions, ratios, which number "
    "multiplies which variable) and write the fixed expression.",
    "extractor_system": "System prompt of the data extractor: how to read the sets and the "
    "parameter tables of a problem as JSON (names, index sets, units, which table or row "
    "holds the values) without building the model. Keep the JSON field names.",
}


class PromptFileError(OptiforgeError):
    """A tuned-prompts file is missing, unreadable, of another version or for other roles."""


def _check_roles(roles: Any, names: list[str], source: str) -> None:
    if not isinstance(roles, dict) or not all(
        isinstance(k, str) and isinstance(v, list) for k, v in roles.items()
    ):
        raise PromptFileError(
            f'{source}: "roles" must map each role to the list of its prompt names'
        )
    if set(roles) != set(TEAM_ROLES):
        raise PromptFileError(
            f"{source} was written for the roles {sorted(roles)}, but this team's roles are "
            f"{sorted(TEAM_ROLES)}; tune the prompts again for this team"
        )
    for role, listed in roles.items():
        wrong = sorted(n for n in listed if PROMPT_ROLES.get(n) != role)
        if wrong:
            raise PromptFileError(
                f"{source}: role {role!r} lists prompt(s) {wrong} that are not the {role}'s "
                f"in this team ({', '.join(sorted(k for k, r in PROMPT_ROLES.items() if r == role))})"
            )
    listed_all = sorted(n for v in roles.values() for n in v)
    if listed_all != sorted(names):
        raise PromptFileError(
            f'{source}: "roles" lists {listed_all} but "prompts" holds {sorted(names)}; the '
            "file was edited by hand or is damaged"
        )


def _legacy_prompts(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """A version-2 or version-1 team prompts file as a current state document."""
    fmt, version = doc.get("format"), doc.get("version")
    if not (fmt == _V2_FORMAT and version == 2) and not (fmt == _V1_FORMAT and version is None):
        if fmt == _V2_FORMAT:
            raise PromptFileError(
                f"a prompts file of version {version!r} of the old team-prompts format; this "
                "optiforge reads versions 1 and 2 of it; tune the prompts again with this version"
            )
        return None
    if not isinstance(doc.get("prompts"), dict):
        raise PromptFileError('the prompts file has no "prompts" object')
    return state_document(
        PROMPTS_KIND, doc["prompts"], roles=doc.get("roles"), meta=doc.get("meta") or {}
    )


def load_prompt_values(prompts: str | Path | Mapping[str, Any] | None) -> dict[str, str]:
    """Read tuned prompt values: a path to a JSON file, a dict, or None (no overrides).

    A file written by :func:`save_prompts` is checked: its version must be one this code
    reads and its roles must be the team's. A plain ``{name: text}`` object works too.
    Unknown names, another version or other roles raise :class:`PromptFileError`.
    """
    if prompts is None:
        return {}
    source = "the prompts"
    if isinstance(prompts, (str, Path)):
        path = Path(prompts)
        source = f"prompts file {path}"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PromptFileError(
                f"prompts file {path} does not exist; create one with 'optiforge tune'"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PromptFileError(f"cannot read prompts file {path}: {exc}") from None
    else:
        data = dict(prompts)
    if isinstance(data, dict) and "format" in data:
        try:
            doc = check_state(data, PROMPTS_KIND, source, legacy=_legacy_prompts)
        except SerializationError as exc:
            raise PromptFileError(str(exc)) from None
        if doc.get("roles") is not None:
            _check_roles(doc["roles"], list(doc["parameters"]), source)
        data = doc["parameters"]
    elif isinstance(data, dict) and isinstance(data.get("prompts"), dict):
        data = data["prompts"]  # {"prompts": {name: text}}, written by hand
    if not isinstance(data, dict):
        raise PromptFileError("tuned prompts must be a JSON object {name: text}")
    unknown = sorted(set(data) - set(ALL_PROMPTS))
    if unknown:
        raise PromptFileError(f"unknown prompt name(s) {unknown}; known: {', '.join(ALL_PROMPTS)}")
    bad = [k for k, v in data.items() if not isinstance(v, str) or not v.strip()]
    if bad:
        raise PromptFileError(f"prompt value(s) {bad} must be non-empty strings")
    return {k: str(v) for k, v in data.items()}


def prompts_document(values: Mapping[str, str], meta: dict[str, Any] | None = None) -> dict:
    """The JSON document :func:`save_prompts` writes for ``values`` (checked)."""
    unknown = sorted(set(values) - set(ALL_PROMPTS))
    if unknown:
        raise PromptFileError(f"unknown prompt name(s) {unknown}; known: {', '.join(ALL_PROMPTS)}")
    roles = {
        r: [n for n in ALL_PROMPTS if n in values and PROMPT_ROLES[n] == r] for r in TEAM_ROLES
    }
    return state_document(PROMPTS_KIND, values, roles=roles, meta=meta or {})


def save_prompts(
    values: Mapping[str, str], path: str | Path, meta: dict[str, Any] | None = None
) -> None:
    """Write tuned prompts atomically as a versioned prompts file (see the module doc)."""
    path = Path(path)
    write_state(path, prompts_document(values, meta))


def prompt_parameter(name: str, text: str) -> Any:
    """A trainable :class:`~optiforge.trace.ParameterNode` for prompt ``name``."""
    from optiforge.trace import node

    return node(text, name=name, trainable=True, description=DESCRIPTIONS.get(name))


class PromptSet:
    """The prompt texts one team run uses: defaults from files plus overrides."""

    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        self.overrides = dict(overrides or {})

    def text(self, name: str) -> str:
        """The raw template ``name`` (override first, else the shipped file)."""
        if name in self.overrides:
            return self.overrides[name]
        return load_prompt(f"team/{name}")

    def with_values(self, **values: str) -> PromptSet:
        """A copy with ``values`` overriding these texts (a step's current prompt value)."""
        return PromptSet({**self.overrides, **values})

    def render(self, name: str, **values: Any) -> str:
        """Fill template ``name``; unknown ``$words`` in tuned text are left as they are."""
        return string.Template(self.text(name)).safe_substitute(
            {k: str(v) for k, v in values.items()}
        )

    def values(self) -> dict[str, str]:
        """Current text of every trainable prompt."""
        return {name: self.text(name) for name in TRAINABLE}
