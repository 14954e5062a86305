"""The team as a trace graph: a node per role call and step, feedback per role, prompt files.

Scripted models (real solver, real sandbox); the run with the real 1.5B model is in
test_team_slow.py.
"""

from __future__ import annotations

import json
import sys

import pytest

from optiforge.agents import Solution, TeamModule, asolve, asolve_graph
from optiforge.agents.optim.sections import render_sections
from optiforge.agents.team import (
    PromptFileError,
    TeamConfig,
    TeamError,
    load_prompt_values,
    save_prompts,
    used_prompts,
)
from optiforge.agents.team.prompts import PROMPTS_KIND
from optiforge.agents.team.team import run_graph
from optiforge.llm.testing import ScriptedLLM
from optiforge.trace import feedback_subgraphs, graph_to_dict, no_trace

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_team import GOOD, INFEASIBLE, PRINTERS, WRONG, draft, router

ROLE_OPS = {"plan", "formulate", "repair", "critique", "code"}
BROKEN = draft(["color <= 20 +", "bw <= 30"])  # never builds: the code route has to rescue it
PLAN = json.dumps({"integer_variables": True, "nonlinear": False, "reason": "whole printers"})


def _with_planner(formulator):
    inner = router(formulator)

    def script(messages, tag=None, **kw):
        return PLAN if tag == "planner" else inner(messages, tag=tag, **kw)

    return script


# (script, solve kwargs): a repair after an infeasible draft; the code route after drafts
# that never build; the planner model on; a wrong sample outvoted.
SCENARIOS = {
    "repair": (lambda: router([INFEASIBLE, GOOD]), {"samples": 1, "budget": 6}),
    "code": (
        lambda: router([BROKEN], critic=json.dumps({"verdict": "correct"})),
        {"samples": 1, "budget": 10},
    ),
    "planner": (
        lambda: _with_planner([WRONG, GOOD]),
        {"samples": 2, "budget": 8, "config": TeamConfig(llm_planner=True)},
    ),
    "direct": (lambda: [GOOD.join(["```python\n", "\n```"])], {"agent": "direct"}),
}


def _calls(llm):
    return [(r.tag, r.messages, r.temperature, r.seed) for r in llm.requests]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_recording_a_graph_changes_no_call(name):
    script, kwargs = SCENARIOS[name]
    plain_llm, graph_llm = ScriptedLLM(script()), ScriptedLLM(script())
    plain = await asolve(PRINTERS, llm=plain_llm, **kwargs)
    out = await asolve_graph(PRINTERS, llm=graph_llm, **kwargs)
    assert isinstance(out.value, Solution)
    # Same roles asked the same messages with the same sampling, in the same order.
    assert _calls(plain_llm) == _calls(graph_llm)
    assert len(plain_llm.requests) >= 1
    assert (plain.answer, plain.failure_class, plain.error) == (
        out.value.answer,
        out.value.failure_class,
        out.value.error,
    )
    assert plain.code == out.value.code and plain.calls == out.value.calls


def _nodes(out):
    return graph_to_dict(out)["nodes"]


async def test_graph_has_a_node_per_role_call_and_the_prompts_as_parameters():
    llm = ScriptedLLM(router([INFEASIBLE, GOOD]))
    out = await asolve_graph(PRINTERS, llm=llm, samples=1, budget=6)
    nodes = _nodes(out)
    role_nodes = [n for n in nodes if n.get("op") in ROLE_OPS]
    assert len(role_nodes) == len(llm.requests) == 5
    assert sorted(n["op"] for n in role_nodes) == [
        "critique",
        "formulate",
        "formulate",
        "formulate",
        "repair",
    ]
    params = {n["name"]: n for n in nodes if n["kind"] == "parameter"}
    assert set(params) == {"formulator_system", "critic_system"}
    assert all(p["trainable"] for p in params.values())
    by_id = {n["id"]: n for n in nodes}
    for n in role_nodes:  # every role call reads its own role's prompt
        prompt = {"critique": "critic_system"}.get(n["op"], "formulator_system")
        assert any(by_id[p]["name"] == prompt for p in n["parents"])
    # Each attempt: draft -> model -> solver result -> critic's findings; then vote -> decide.
    ops = [n.get("op") for n in nodes]
    assert ops.count("build_model") == ops.count("solve") == ops.count("check") == 4
    assert ops.count("vote") == 1 and by_id[graph_to_dict(out)["outputs"][0]]["op"] == "decide"
    repair = next(n for n in nodes if n.get("op") == "repair")
    assert {by_id[p]["op"] for p in repair["parents"] if "op" in by_id[p]} == {
        "formulate",
        "check",
        "critique",
    }


async def test_backward_gives_each_role_prompt_the_feedback_of_its_own_steps():
    module = TeamModule(llm=ScriptedLLM(router([INFEASIBLE, GOOD])), samples=1, budget=6)
    out = await module(PRINTERS)
    assert isinstance(out.value, Solution) and out.value.answer == pytest.approx(5050)
    out.backward("The answer 5050 is right, but the first draft was infeasible.")
    formulator, critic = module.formulator_system, module.critic_system
    for p in (formulator, critic):
        assert p.feedback == "The answer 5050 is right, but the first draft was infeasible."
    (crit,) = feedback_subgraphs([critic])
    crit_ops = [getattr(n, "op", None) and n.op.name for n in crit.nodes]
    # The critic's subgraph: its critique, the repair it fed, that repair's model, result,
    # findings, the vote and the decision; no draft the critic had nothing to do with.
    assert crit_ops[:3] == [None, "critique", "repair"] and crit_ops[-2:] == ["vote", "decide"]
    assert "formulate" not in crit_ops
    (form,) = feedback_subgraphs([formulator])
    form_ops = [n.op.name for n in form.nodes if hasattr(n, "op")]
    assert form_ops.count("formulate") == 3 and form_ops.count("repair") == 1
    # The coder was never asked: its prompt got nothing.
    assert module.coder_system.feedback is None and not module.coder_system.feedback_records
    text = render_sections([crit]).documentation + render_sections([crit]).others
    assert "critic model" in text


async def test_the_coder_prompt_gets_the_feedback_of_its_programs():
    script, kwargs = SCENARIOS["code"]
    module = TeamModule(llm=ScriptedLLM(script()), **kwargs)
    out = await module(PRINTERS)
    assert out.value.answer == pytest.approx(5050)
    out.backward("correct")
    (sub,) = feedback_subgraphs([module.coder_system])
    ops = [n.op.name for n in sub.nodes if hasattr(n, "op")]
    assert {"code", "run_code", "check", "vote", "decide"} <= set(ops)
    assert "formulate" not in ops


def test_only_prompts_that_some_step_uses_are_trainable():
    default = TeamModule(llm=ScriptedLLM(GOOD))
    names = [p.name for p in default.parameters()]
    assert "planner_system" not in names
    assert sorted(names) == sorted(used_prompts("team", TeamConfig()))
    assert default.planner_system.value  # kept (and saved) even when not offered
    with_planner = TeamModule(llm=ScriptedLLM(GOOD), config=TeamConfig(llm_planner=True))
    assert "planner_system" in [p.name for p in with_planner.parameters()]
    direct = TeamModule(llm=ScriptedLLM(GOOD), agent="direct")
    assert [p.name for p in direct.parameters()] == ["coder_system"]
    no_critic = TeamConfig(llm_critic=False, code_route=False)
    assert used_prompts("team", no_critic) == ("formulator_system",)


async def test_module_keeps_its_api_and_raises_bad_arguments_directly(tmp_path):
    module = TeamModule({"formulator_system": "TUNED RULES"}, llm=ScriptedLLM(router([GOOD])))
    assert module.formulator_system.value == "TUNED RULES"
    assert module.prompt_values()["formulator_system"] == "TUNED RULES"
    with pytest.raises(TeamError, match="empty"):
        await module("   ")
    module.formulator_system.value = "NEW RULES"
    llm = ScriptedLLM(router([GOOD]))
    out = await module(PRINTERS, llm=llm, samples=1)
    assert llm.requests[0].system == "NEW RULES"
    path = tmp_path / "p.json"
    save_prompts(module.prompt_values(), path, meta={"note": "x"})
    assert load_prompt_values(path)["formulator_system"] == "NEW RULES"
    assert out.value.formulation is not None and out.value.formulation.objective.sense


async def test_nothing_is_recorded_outside_a_recording_context():
    with no_trace():
        out = await run_graph(PRINTERS, llm=ScriptedLLM(router([GOOD])), samples=2)
    assert out.parents == () and out.value.answer == pytest.approx(5050)


def test_prompts_file_has_a_version_and_the_roles(tmp_path):
    path = tmp_path / "p.json"
    save_prompts({"formulator_system": "A", "critic_system": "B"}, path)
    doc = json.loads(path.read_text())
    # The shared state format (one envelope for modules, optimizers and prompt files).
    assert (doc["format"], doc["version"], doc["kind"]) == ("optiforge.state", 1, PROMPTS_KIND)
    assert doc["parameters"] == {"formulator_system": "A", "critic_system": "B"}
    assert doc["roles"] == {
        "formulator": ["formulator_system"],
        "planner": [],
        "coder": [],
        "critic": ["critic_system"],
    }
    assert load_prompt_values(path) == {"formulator_system": "A", "critic_system": "B"}
    # The older team-prompts files (version 2 with roles, version 1) are still read.
    v2 = tmp_path / "v2.json"
    v2.write_text(
        json.dumps(
            {
                "format": "optiforge.team-prompts",
                "version": 2,
                "roles": doc["roles"],
                "prompts": {"formulator_system": "A", "critic_system": "B"},
                "meta": {},
            }
        )
    )
    assert load_prompt_values(v2) == {"formulator_system": "A", "critic_system": "B"}
    v1 = tmp_path / "v1.json"
    v1.write_text(
        json.dumps({"format": "optiforge.team-prompts/1", "prompts": {"coder_system": "C"}})
    )
    assert load_prompt_values(v1) == {"coder_system": "C"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 3}, "version 3 of the optiforge state format"),
        ({"version": None}, "version None"),
        ({"kind": "module"}, "state of kind 'module'"),
        ({"format": "someone-else/1"}, "not an optiforge team-prompts file"),
        ({"format": "optiforge.team-prompts", "version": 3}, "version 3 of the old team-prompts"),
        ({"roles": {"formulator": ["formulator_system"], "judge": []}}, "written for the roles"),
        (
            {
                "roles": {
                    "formulator": [],
                    "planner": [],
                    "coder": [],
                    "critic": ["formulator_system"],
                }
            },
            "not the critic's",
        ),
        (
            {"roles": {"formulator": [], "planner": [], "coder": [], "critic": []}},
            "was edited by hand",
        ),
        ({"roles": ["formulator"]}, "must map each role"),
    ],
)
def test_a_prompts_file_for_other_roles_or_version_fails_at_once(tmp_path, change, message):
    path = tmp_path / "p.json"
    save_prompts({"formulator_system": "A"}, path)
    doc = {**json.loads(path.read_text()), **change}
    path.write_text(json.dumps(doc))
    with pytest.raises(PromptFileError, match="prompts file") as exc:
        load_prompt_values(path)
    assert message in str(exc.value)
    # The team refuses it before any model call.
    llm = ScriptedLLM(router([GOOD]))
    with pytest.raises(PromptFileError):
        from optiforge.agents import solve

        solve(PRINTERS, llm=llm, prompts=path)
    assert llm.requests == []


async def test_the_eval_journal_still_records_the_formulation_and_its_markdown():
    from optiforge.datasets.problem import Problem
    from optiforge.evals.records import ResultRecord
    from optiforge.evals.runner import record_from_solution

    sol = await asolve(PRINTERS, llm=ScriptedLLM(router([GOOD])), samples=2)
    problem = Problem(
        id="printers", dataset="test", text=PRINTERS, answer=5050.0, answer_kind="value"
    )
    rec = record_from_solution(problem, sol, elapsed_s=1.0, started_at=0.0, session=1)
    assert rec.formulation == sol.formulation.model_dump()
    assert rec.formulation["objective"]["sense"] == "maximize"
    assert rec.formulation_markdown == sol.formulation_markdown
    line = ResultRecord.model_validate_json(rec.model_dump_json())
    assert line.formulation == rec.formulation and rec.correct
