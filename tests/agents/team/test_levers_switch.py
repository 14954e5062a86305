"""The --levers switch: its small language, and what it turns on in the team's config."""

from __future__ import annotations

import pytest

from optiforge.agents.team.levers import LEVERS, parse_levers, team_config
from optiforge.agents.team.state import TeamConfig, TeamError


def test_names_all_none_and_all_but_one():
    assert parse_levers(None) == dict.fromkeys(LEVERS, False)
    assert parse_levers("none") == dict.fromkeys(LEVERS, False)
    assert parse_levers(" VERIFY , hints") == {n: n in ("verify", "hints") for n in LEVERS}
    assert parse_levers("all") == dict.fromkeys(LEVERS, True)
    assert parse_levers("all,-verify") == {n: n != "verify" for n in LEVERS}
    assert parse_levers("all,-grounded-critique")["grounded_critique"] is False
    config = team_config("all,-verify", samples_per_pull=3)
    assert config.verify is False and config.hints and config.experience
    assert config.samples_per_pull == 3
    # what run.json and an AgentSpec keep: the parsed state
    assert team_config(parse_levers("all,-verify")) == config.model_copy(
        update={"samples_per_pull": TeamConfig().samples_per_pull}
    )
    with pytest.raises(TeamError, match="unknown lever"):
        team_config({"verfy": True})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("verfy", "unknown lever 'verfy'"),
        ("hints,,verify", "empty item"),
        ("-all", "'-all' means nothing"),
        ("none,hints", "'none' cannot be combined"),
    ],
)
def test_bad_values_are_clear_errors(spec, message):
    with pytest.raises(TeamError, match=message):
        parse_levers(spec)


def test_every_lever_is_a_bool_field_of_the_config():
    for name in LEVERS:
        field = TeamConfig.model_fields.get(name)
        assert field is not None, f"TeamConfig has no lever {name}"
        assert field.annotation is bool and field.default is False


async def test_an_agent_spec_with_levers_runs_the_team_with_them():
    """What eval and Ray workers build from --levers: the team runs with those levers."""
    import importlib.util
    from pathlib import Path

    from optiforge.agents.spec import AgentSpec, BuiltAgent
    from optiforge.datasets import Problem
    from optiforge.llm.testing import ScriptedLLM

    path = Path(__file__).with_name("test_hints.py")
    spec = importlib.util.spec_from_file_location("_hints_helpers", path)
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    problem = Problem(id="deli", dataset="toy", text=helpers.DELI, answer=None)

    on = BuiltAgent(
        AgentSpec(agent="team", samples=3, levers=parse_levers("hints")),
        llm=ScriptedLLM(helpers.router([helpers.deli_draft()])),
    )
    off = BuiltAgent(
        AgentSpec(agent="team", samples=3, levers=parse_levers("none")),
        llm=ScriptedLLM(helpers.router([helpers.deli_draft()])),
    )
    assert (await on.solve(problem)).levers == ["hints"]
    assert (await off.solve(problem)).levers == []
