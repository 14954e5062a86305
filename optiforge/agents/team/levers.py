"""The team's accuracy levers as one switch: ``--levers verify,hints`` on the command line.

Each lever is a ``bool`` field of :class:`~optiforge.agents.team.state.TeamConfig`, off by
default until a measurement shows it pays (``docs/team.md``, "Accuracy levers"). A run
records the levers that changed something in ``Solution.levers`` (and the eval journal's
``levers``), so an ablation re-runs only the problems where the lever it removes fired.

:func:`parse_levers` reads the switch's small language:

- ``verify,hints``: these on, the others off;
- ``all``: every lever on; ``all,-verify``: every lever but ``verify`` (one ablation row);
- ``none`` (or an empty string): every lever off, the defaults.

It returns every lever's value, so ``run.json`` records the full state of a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from optiforge.agents.team.state import TeamConfig, TeamError

#: The accuracy levers, in the order the docs and reports list them.
LEVERS = ("verify", "grounded_critique", "hints", "experience", "weighted_vote", "templates")


def parse_levers(spec: str | None) -> dict[str, bool]:
    """``{lever: on}`` for every lever from a ``--levers`` value (see the module docs).

    Raises :class:`TeamError` naming the unknown lever, or a lever this build's
    :class:`TeamConfig` does not have.
    """
    text = (spec or "").strip()
    state = dict.fromkeys(LEVERS, False)
    if not text or text.lower() == "none":
        return state
    for raw in text.split(","):
        item = raw.strip().lower()
        off = item.startswith("-")
        name = item.lstrip("-").strip().replace("-", "_")
        if not name:
            raise TeamError(f"--levers {spec!r}: empty item; write e.g. 'verify,hints' or 'all'")
        if name == "all":
            if off:
                raise TeamError(f"--levers {spec!r}: '-all' means nothing; use 'none'")
            state = dict.fromkeys(LEVERS, True)
            continue
        if name == "none":
            raise TeamError(f"--levers {spec!r}: 'none' cannot be combined with other items")
        if name not in LEVERS:
            raise TeamError(
                f"--levers {spec!r}: unknown lever {name!r}; choose from {', '.join(LEVERS)}, "
                "'all', 'all,-LEVER' or 'none'"
            )
        state[name] = not off
    missing = [n for n, on in state.items() if on and n not in TeamConfig.model_fields]
    if missing:
        raise TeamError(f"--levers: this build of the team has no lever {', '.join(missing)}")
    return state


def _state(levers: str | Mapping[str, bool] | None) -> Mapping[str, bool]:
    """Every lever's on/off from a ``--levers`` value, or the parsed state as it is."""
    return parse_levers(levers) if levers is None or isinstance(levers, str) else levers


def default_levers() -> dict[str, bool]:
    """Every lever's state in a run without ``--levers`` (the :class:`TeamConfig`
    defaults), so ``run.json`` says what ran rather than "the defaults"."""
    return {
        n: bool(TeamConfig.model_fields[n].default) for n in LEVERS if n in TeamConfig.model_fields
    }


def team_config(levers: str | Mapping[str, bool] | None = None, **overrides: Any) -> TeamConfig:
    """A :class:`TeamConfig` with ``levers`` (a ``--levers`` value, or what
    :func:`parse_levers` returned, as ``run.json`` and an ``AgentSpec`` keep it) and
    ``overrides``."""
    state = _state(levers)
    unknown = sorted(set(state) - set(LEVERS))
    if unknown:
        raise TeamError(f"unknown lever(s) {', '.join(unknown)}; choose from {', '.join(LEVERS)}")
    fields = {k: v for k, v in state.items() if k in TeamConfig.model_fields}
    try:
        return TeamConfig(**{**fields, **overrides})
    except Exception as exc:
        raise TeamError(f"invalid team settings: {exc}") from None


def experience_library(
    levers: str | Mapping[str, bool] | None, library: str | Path | None
) -> ExperienceLibraryInfo | None:
    """Check the experience lever's library before a run starts (not once per problem):
    ``library`` (``--experience-library``) needs the lever on, and the lever on needs a
    library (``library``, or the shipped one). Returns what ``run.json`` records of it (the
    file, the sha256 of its bytes and its entry count), or None with the lever off.

    Raises :class:`TeamError` (a library without the lever) or
    :class:`~optiforge.agents.team.experience.ExperienceError` (no library, or a bad one)."""
    state = _state(levers)
    on = bool(state.get("experience"))
    if library is not None and not on:
        raise TeamError(
            "--experience-library is the library of the experience lever: turn the lever on "
            "with --levers experience (or all)"
        )
    if not on:
        return None
    import hashlib

    from optiforge.agents.team.experience import DEFAULT_LIBRARY, load_library

    lib = load_library(library)
    path = Path(library) if library is not None else DEFAULT_LIBRARY
    return ExperienceLibraryInfo(
        file=str(path),
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        entries=len(lib),
    )


class ExperienceLibraryInfo(BaseModel):
    """What ``run.json`` records of the experience library a run used."""

    file: str
    sha256: str
    entries: int
