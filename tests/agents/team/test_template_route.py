"""The ``templates`` lever with scripted models: classification from cues, one extraction
call, the filled template solved as an attempt that joins the vote, and its failures,
budget, deadline and trace."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from optiforge.agents.team import asolve, asolve_graph
from optiforge.agents.team.levers import parse_levers, team_config
from optiforge.agents.team.state import TeamConfig, used_prompts
from optiforge.agents.team.template_route import MIN_CHARS, classify
from optiforge.llm.testing import ScriptedLLM
from optiforge.solvers import ModelIR, solve_ir

DATA = Path(__file__).resolve().parents[2] / "data"
# A 2x3 transportation problem with a Markdown table, and the extractor's reply to it.
TRANSPORT = (DATA / "transport_2x3.md").read_text().rstrip("\n")
EXTRACTED = json.loads((DATA / "transport_2x3_extraction.json").read_text())


def forgetful(store: str) -> str:
    """A hand-written formulation that forgets one store's demand (a typical slip on a
    table: 20 lines written out one by one)."""
    demand = {
        "a": ("Store A needs 4", "x_n_a + x_s_a >= 4"),
        "b": ("Store B needs 5", "x_n_b + x_s_b >= 5"),
        "c": ("Store C needs 3", "x_n_c + x_s_c >= 3"),
    }
    return json.dumps(
        {
            "variables": [
                {"name": f"x_{p}_{s}", "description": f"bags {p} to {s}", "units": "bags"}
                for p in ("n", "s")
                for s in ("a", "b", "c")
            ],
            "objective": {
                "sense": "minimize",
                "expression": "4*x_n_a + 7*x_n_b + 2*x_n_c + 5*x_s_a + 3*x_s_b + 6*x_s_c",
            },
            "constraints": [
                {"source": "North supply 7", "expression": "x_n_a + x_n_b + x_n_c <= 7"},
                {"source": "South supply 9", "expression": "x_s_a + x_s_b + x_s_c <= 9"},
            ]
            + [{"source": src, "expression": e} for k, (src, e) in demand.items() if k != store],
        }
    )


# Each formulation forgets another store, so no two agree.
FORMULATIONS = [forgetful("c"), forgetful("b"), forgetful("a")]

SHORT_LP = (
    "A factory makes chairs and tables. Each chair needs 2 hours and each table 3 hours; "
    "120 hours are available. Chairs give $30 and tables $50 profit. Maximize profit."
)


def optimum() -> float:
    """The transportation optimum, by the solver on a model written out here."""
    ship = [f"x{i}{j}" for i in range(2) for j in range(3)]
    cost = [[4, 7, 2], [5, 3, 6]]
    ir = {
        "variables": [{"name": v} for v in ship],
        "objective": {
            "sense": "minimize",
            "expression": " + ".join(f"{cost[i][j]}*x{i}{j}" for i in range(2) for j in range(3)),
        },
        "constraints": [
            {"name": "s0", "expression": "x00 + x01 + x02 <= 7"},
            {"name": "s1", "expression": "x10 + x11 + x12 <= 9"},
            {"name": "d0", "expression": "x00 + x10 >= 4"},
            {"name": "d1", "expression": "x01 + x11 >= 5"},
            {"name": "d2", "expression": "x02 + x12 >= 3"},
        ],
    }
    return solve_ir(ModelIR.from_json(ir)).objective


def script(extractor=lambda: json.dumps(EXTRACTED)):
    asked = []

    def reply(messages, tag=None, **kw):
        if tag == "formulator":
            asked.append(1)
            return FORMULATIONS[(len(asked) - 1) % len(FORMULATIONS)]
        if tag == "extractor":
            return extractor()
        return json.dumps({"verdict": "correct", "problems": [], "fixes": []})

    return reply


def calls(llm: ScriptedLLM, tag: str) -> int:
    return sum(r.tag == tag for r in llm.requests)


def test_classify_needs_cues_a_clear_winner_and_size():
    c = classify(TRANSPORT)
    assert c.template == "transportation" and "supply" in c.cues and "table" in c.reason
    short = classify(SHORT_LP)
    assert short.template is None
    long_text = "A company ships goods from plants to markets to meet demand. " * 12
    assert len(long_text) >= MIN_CHARS and classify(long_text).template == "transportation"
    assert "short" in classify(long_text[:200]).reason
    assert classify("Minimize x subject to x >= 1.").reason.startswith("no template")
    assert classify(TRANSPORT, min_score=50).template is None


def test_a_template_whose_structure_the_text_lacks_is_not_chosen():
    """Cues are a cheap guess: "supply", "demand" and "market" occur in product-mix LPs
    whose table lists products against attributes, and "budget" and "capacity" in LPs
    that select nothing. The templates-train run spent an extraction call on each."""
    product_mix = (
        "A bakery sells to a local market and must meet demand; its flour supply is limited "
        "to 900 kg a week.\n\n"
        "| Product | Profit per Unit | Flour Required (g) |\n|---|---|---|\n"
        "| Bread | $2 | 500 |\n| Cake | $5 | 800 |\n| Tart | $3 | 300 |\n\n"
        "Each product sells at least 20 units a week. How many of each should it bake?"
    )
    c = classify(product_mix)
    assert c.template is None and c.reason.startswith("structure: transportation needs")
    assert "'Profit per Unit'" in c.reason
    # The same cues over a table of plants by markets: a transportation problem.
    shipping = (
        "Two plants supply three markets; each market's demand must be met.\n\n"
        "| From / To | Market East | Market West | Market North |\n|---|---|---|---|\n"
        "| Plant A (Leeds) | 4 | 6 | 9 |\n| Plant B (York) | 5 | 3 | 7 |\n\n"
        "Plant A can ship at most 300 units and Plant B at most 400. The markets need 200, "
        "250 and 150 units. Minimize the shipping cost."
    )
    assert classify(shipping).template == "transportation"
    no_selection = (
        "A firm has a budget of $5,000 and a warehouse capacity of 800 units for two "
        "products. " + "It wants the most profit from what it buys and sells. " * 12
    )
    c = classify(no_selection)
    assert c.template is None and "knapsack needs one of" in c.reason
    assert "facility_location needs one of" in c.reason  # "warehouse", "capacity": no site
    assert classify(no_selection + " It must select which products to carry.").template == (
        "knapsack"
    )


def test_attribute_labels_and_matrix_tables():
    from optiforge.agents.team.tables import attribute_label, parse_tables

    for label in ("Cost per Unit", "Profit ($)", "Demand", "Weight (kg)", "Flour Required (g)"):
        assert attribute_label(label), label
    for label in ("Plant A", "Center II (Pittsburgh)", "Job 3", "Day 1", "Store B", "1"):
        assert not attribute_label(label), label
    assert parse_tables(TRANSPORT)[0].is_matrix()  # stores across, plants down (+ totals)
    products = parse_tables(
        "| Product | Price | Cost |\n|---|---|---|\n| A | 3 | 1 |\n| B | 4 | 2 |"
    )
    assert not products[0].is_matrix()


def test_the_lever_is_in_the_switch_and_adds_the_extractor_prompt():
    assert parse_levers("templates")["templates"] is True
    assert parse_levers("all")["templates"] is True
    assert team_config("templates").templates is True
    assert "extractor_system" in used_prompts("team", TeamConfig(templates=True))
    assert "extractor_system" not in used_prompts("team", TeamConfig())


async def test_a_filled_template_outvotes_forgetful_formulations():
    right = optimum()
    off_llm = ScriptedLLM(script())
    off = await asolve(TRANSPORT, llm=off_llm, samples=3)
    assert off.answer is not None and off.answer < right  # a store's demand forgotten
    assert calls(off_llm, "extractor") == 0 and off.levers == []

    # A budget of the first round: three formulations and the extraction.
    llm = ScriptedLLM(script())
    sol = await asolve(TRANSPORT, llm=llm, samples=3, budget=4, config=TeamConfig(templates=True))
    assert sol.answer == pytest.approx(right)
    assert sol.levers == ["templates"] and calls(llm, "extractor") == 1
    # The winning formulation is the indexed template, written once over its sets.
    assert sol.formulation is not None and [s.name for s in sol.formulation.sets] == [
        "SOURCES",
        "DESTINATIONS",
    ]
    planner = [s for s in sol.steps if s.role == "planner" and s.plan_id == "template"]
    assert planner and planner[0].detail["classification"]["template"] == "transportation"
    extractor = [s for s in sol.steps if s.role == "extractor"]
    assert len(extractor) == 1 and extractor[0].calls == 1
    # The extraction call counts against the budget like any role call.
    assert sol.calls == len(llm.requests) == calls(llm, "formulator") + 1


async def test_a_short_problem_makes_no_extraction_call():
    llm = ScriptedLLM(script())
    sol = await asolve(SHORT_LP, llm=llm, samples=2, config=TeamConfig(templates=True))
    assert calls(llm, "extractor") == 0 and "templates" not in sol.levers


async def test_a_broken_extraction_loses_nothing():
    llm = ScriptedLLM(script(extractor=lambda: "this is not JSON"))
    sol = await asolve(TRANSPORT, llm=llm, samples=3, config=TeamConfig(templates=True))
    assert sol.answer is not None  # the formulator's answer stands
    assert sol.levers == ["templates"]
    failed = [s for s in sol.steps if s.role == "extractor"]
    assert failed and not failed[0].ok


async def test_an_extraction_that_does_not_fit_the_template_is_not_solved():
    bad = {**EXTRACTED, "parameters": {**EXTRACTED["parameters"]}}
    bad["parameters"]["demand"] = {"units": "bags", "values": [4, 5]}  # one store short
    llm = ScriptedLLM(script(extractor=lambda: json.dumps(bad)))
    sol = await asolve(TRANSPORT, llm=llm, samples=3, config=TeamConfig(templates=True))
    solver = [s for s in sol.steps if s.role == "solver" and s.plan_id == "template"]
    assert solver and not solver[0].ok and sol.answer != pytest.approx(optimum())


async def test_unused_numbers_make_the_template_attempt_suspicious():
    text = TRANSPORT.replace(
        "How should", "No more than 8 bags may go on any one route. How should"
    )
    llm = ScriptedLLM(script())
    sol = await asolve(text, llm=llm, samples=3, config=TeamConfig(templates=True))
    solver = [s for s in sol.steps if s.role == "solver" and s.plan_id == "template"]
    assert solver and "suspicious" in solver[0].summary
    assert any(i["check"] == "numbers" for i in solver[0].detail["issues"])


async def test_no_extraction_when_the_budget_is_spent_by_the_first_round():
    llm = ScriptedLLM(script())
    sol = await asolve(TRANSPORT, llm=llm, budget=1, config=TeamConfig(templates=True))
    assert calls(llm, "extractor") == 0 and sol.calls <= 1
    skipped = [s for s in sol.steps if s.role == "extractor" and not s.ok]
    assert skipped and "budget" in skipped[0].summary


async def test_the_deadline_cancels_an_extraction_in_flight():
    async def hangs(messages, tag=None, **kw):
        if tag == "extractor":
            await asyncio.sleep(60)
        return script()(messages, tag=tag)

    t0 = time.monotonic()
    sol = await asolve(
        TRANSPORT,
        llm=ScriptedLLM(hangs),
        samples=3,
        time_limit=2.0,
        config=TeamConfig(templates=True),
    )
    assert time.monotonic() - t0 < 6
    assert sol.stopped == "deadline" and sol.answer is not None
    assert any(s.role == "extractor" and s.detail.get("cancelled") for s in sol.steps)


async def test_the_recorded_run_has_template_ops_and_a_trainable_extractor_prompt(tmp_path):
    from optiforge.trace import load_graph, save_graph

    llm = ScriptedLLM(script())
    out = await asolve_graph(TRANSPORT, llm=llm, samples=3, config=TeamConfig(templates=True))
    doc = load_graph(save_graph(out, tmp_path / "g.json"))
    ops = [n.get("op") for n in doc["nodes"]]
    assert {"classify", "extract", "fill_template"} <= set(ops)
    params = {n["name"] for n in doc["nodes"] if n["kind"] == "parameter" and n["trainable"]}
    assert "extractor_system" in params


async def test_a_template_that_leaves_the_texts_numbers_unused_does_not_fit():
    # A product-mix problem with supply-and-demand words: the cues pick transportation,
    # but the template's data cannot account for the text's other numbers.
    text = TRANSPORT.replace(
        "How should",
        "Each truck carries 12 bags, the company has 30 drivers, 4 depots and a budget of "
        "$500 a day for fuel, with 15 hours of loading time. How should",
    )
    llm = ScriptedLLM(script())
    sol = await asolve(text, llm=llm, samples=3, budget=4, config=TeamConfig(templates=True))
    assert calls(llm, "extractor") == 1 and sol.levers == ["templates"]
    solver = [s for s in sol.steps if s.role == "solver" and s.plan_id == "template"]
    assert solver and not solver[0].ok and "does not fit" in solver[0].summary
    assert "12" in solver[0].summary and "30" in solver[0].summary


def test_solve_prints_the_expanded_template_on_request(capsys):
    from optiforge.agents.solution import Solution
    from optiforge.agents.team.templates import fill
    from optiforge.cli.solve import _print_solution

    model = fill(
        "transportation",
        {"SOURCES": ["North", "South"], "DESTINATIONS": ["A", "B", "C"]},
        {"supply": [7, 9], "demand": [4, 5, 3], "cost": [[4, 7, 2], [5, 3, 6]]},
    )
    res = solve_ir(model)
    sol = Solution(problem_text=TRANSPORT, agent="team", answer=res.objective, result=res)
    sol.formulation = model
    _print_solution(sol, show_code=False)
    compact = capsys.readouterr().out
    # The compact form: the data once, each constraint once over its set.
    assert "SOURCES = {North, South}" in compact
    assert "cost[SOURCES, DESTINATIONS] = 4, 7, 2 | 5, 3, 6" in compact
    assert "for all i in" in compact and "supply_limit[North]" not in compact
    _print_solution(sol, show_code=False, expanded=True)
    full = capsys.readouterr().out
    assert "supply_limit[North]" in full and "demand_met[C]" in full


async def test_the_verifier_leaves_a_filled_template_alone():
    def reply(messages, tag=None, **kw):
        if tag == "verifier":
            return json.dumps({"expression": "x_n_a + x_s_a >= 4"})
        return script()(messages, tag=tag)

    sol = await asolve(
        TRANSPORT,
        llm=ScriptedLLM(reply),
        samples=3,
        budget=8,
        config=TeamConfig(templates=True, verify=True),
    )
    template = next(
        s.detail["attempt"] for s in sol.steps if s.role == "solver" and s.plan_id == "template"
    )
    checked = [
        s.detail.get("attempt") for s in sol.steps if s.role == "verifier" and "attempt" in s.detail
    ]
    assert checked and template not in checked
