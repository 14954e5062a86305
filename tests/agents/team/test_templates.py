"""Problem-class templates: each solves a hand-made instance to an optimum computed here
another way (enumeration over a tiny instance), fill() names bad data, and every shipped
template loads, fills its own example and reaches the example's stated optimum."""

from __future__ import annotations

import heapq
import itertools
import math

import pytest

from optiforge.agents.team.templates import (
    TemplateError,
    TemplateFillError,
    fill,
    load_template,
    load_templates,
    template_ids,
)
from optiforge.solvers import SolveStatus, solve_ir

ALL = [
    "assignment",
    "diet",
    "facility_location",
    "job_shop",
    "knapsack",
    "max_flow",
    "min_cost_flow",
    "production_inventory",
    "set_cover",
    "shift_cover",
    "shortest_path",
    "transportation",
    "transshipment",
    "tsp",
]


def solved(template_id: str, sets: dict, params: dict, **kw) -> float:
    res = solve_ir(fill(template_id, sets, params, **kw))
    assert res.status == SolveStatus.OPTIMAL, res.message
    return res.objective


def test_library_is_complete_and_every_example_reaches_its_optimum():
    assert template_ids() == ALL
    for tpl in load_templates():
        assert tpl.description.strip() and tpl.assumptions and tpl.cues
        assert tpl.example is not None and tpl.example.optimum is not None
        got = solved(tpl.id, tpl.example.sets, tpl.example.params)
        assert got == pytest.approx(tpl.example.optimum, rel=1e-6, abs=1e-6), tpl.id


# ---------------------------------------------------------------------------------------------
# Independent optima on tiny instances


def brute_transportation(supply, demand, cost):
    """Two sources: the first ships x (whole units), the second the rest of each demand."""
    best = math.inf
    for x in itertools.product(*(range(d + 1) for d in demand)):
        rest = [d - a for d, a in zip(demand, x, strict=False)]
        if sum(x) <= supply[0] and sum(rest) <= supply[1]:
            best = min(
                best,
                sum(c * a for c, a in zip(cost[0], x, strict=False))
                + sum(c * r for c, r in zip(cost[1], rest, strict=False)),
            )
    return best


def test_transportation_unbalanced():
    supply, demand = [7, 9], [4, 5, 3]
    cost = [[4, 7, 2], [5, 3, 6]]
    got = solved(
        "transportation",
        {"SOURCES": ["Detroit", "Austin"], "DESTINATIONS": ["NY", "LA", "SF"]},
        {"supply": supply, "demand": {"NY": 4, "LA": 5, "SF": 3}, "cost": cost},
    )
    assert got == pytest.approx(brute_transportation(supply, demand, cost))


def test_assignment_both_senses():
    cost = [[9, 2, 7, 8], [6, 4, 3, 7], [5, 8, 1, 8], [7, 6, 9, 4]]
    sets = {"AGENTS": ["a", "b", "c", "d"], "TASKS": [1, 2, 3, 4]}
    perms = list(itertools.permutations(range(4)))
    best_min = min(sum(cost[a][p[a]] for a in range(4)) for p in perms)
    best_max = max(sum(cost[a][p[a]] for a in range(4)) for p in perms)
    assert solved("assignment", sets, {"cost": cost}) == pytest.approx(best_min)
    assert solved("assignment", sets, {"cost": cost}, sense="maximize") == pytest.approx(best_max)


def test_transshipment_equals_transportation_over_cheapest_hub():
    cost_in, cost_out = [[2, 4], [3, 1]], [[5, 3, 4], [2, 6, 1]]
    supply, demand = [6, 5], [3, 4, 2]
    direct = [
        [min(cost_in[i][h] + cost_out[h][j] for h in range(2)) for j in range(3)] for i in range(2)
    ]
    got = solved(
        "transshipment",
        {"SOURCES": ["P1", "P2"], "HUBS": ["W1", "W2"], "DESTINATIONS": ["C1", "C2", "C3"]},
        {"supply": supply, "demand": demand, "cost_in": cost_in, "cost_out": cost_out},
    )
    assert got == pytest.approx(brute_transportation(supply, demand, direct))
    # A hub limit binds: W2 may pass only 2 units, so the cost goes up.
    limited = solved(
        "transshipment",
        {"SOURCES": ["P1", "P2"], "HUBS": ["W1", "W2"], "DESTINATIONS": ["C1", "C2", "C3"]},
        {
            "supply": supply,
            "demand": demand,
            "cost_in": cost_in,
            "cost_out": cost_out,
            "hub_capacity": [100, 2],
        },
    )
    assert limited > got


NET_NODES = ["s", "a", "b", "c", "t"]
NET_CAP = {
    ("s", "a"): 3,
    ("s", "b"): 2,
    ("a", "b"): 1,
    ("a", "c"): 2,
    ("b", "c"): 2,
    ("b", "t"): 2,
    ("c", "t"): 3,
}
NET_COST = {
    ("s", "a"): 1,
    ("s", "b"): 4,
    ("a", "b"): 1,
    ("a", "c"): 3,
    ("b", "c"): 1,
    ("b", "t"): 5,
    ("c", "t"): 1,
}


def matrix(d, default=0):
    return [[d.get((i, j), default) for j in NET_NODES] for i in NET_NODES]


def enumerate_flows():
    arcs = list(NET_CAP)
    for f in itertools.product(*(range(NET_CAP[a] + 1) for a in arcs)):
        net = dict.fromkeys(NET_NODES, 0)
        for (i, j), v in zip(arcs, f, strict=False):
            net[i] += v
            net[j] -= v
        yield dict(zip(arcs, f, strict=False)), net


def test_min_cost_flow():
    best = min(
        sum(NET_COST[a] * v for a, v in flow.items())
        for flow, net in enumerate_flows()
        if net["s"] <= 4 and net["t"] <= -4 and all(net[n] <= 0 for n in "abc")
    )
    got = solved(
        "min_cost_flow",
        {"NODES": NET_NODES},
        {"net_supply": [4, 0, 0, 0, -4], "capacity": matrix(NET_CAP), "cost": matrix(NET_COST)},
    )
    assert got == pytest.approx(best)


def test_max_flow():
    best = max(net["s"] for flow, net in enumerate_flows() if all(net[n] == 0 for n in "abc"))
    assert solved("max_flow", {"NODES": NET_NODES}, {"capacity": matrix(NET_CAP)}) == best
    # Another sink, given explicitly: from s to c.
    to_c = max(net["s"] for flow, net in enumerate_flows() if all(net[n] == 0 for n in "abt"))
    got = solved("max_flow", {"NODES": NET_NODES, "SINK": ["c"]}, {"capacity": matrix(NET_CAP)})
    assert got == to_c


def dijkstra(src, dst, length):
    dist, heap = {src: 0}, [(0, src)]
    while heap:
        d, u = heapq.heappop(heap)
        if u == dst:
            return d
        for (i, j), w in length.items():
            if i == u and d + w < dist.get(j, math.inf):
                dist[j] = d + w
                heapq.heappush(heap, (d + w, j))
    return math.inf


def test_shortest_path():
    got = solved(
        "shortest_path",
        {"NODES": NET_NODES},
        {"length": matrix(NET_COST), "arc": matrix(dict.fromkeys(NET_COST, 1))},
    )
    assert got == dijkstra("s", "t", NET_COST)
    got_ab = solved(
        "shortest_path",
        {"NODES": NET_NODES, "ORIGIN": ["a"], "DESTINATION": ["t"]},
        {"length": matrix(NET_COST), "arc": matrix(dict.fromkeys(NET_COST, 1))},
    )
    assert got_ab == dijkstra("a", "t", NET_COST)


def test_diet_lp_optimum_is_the_best_vertex():
    import numpy as np

    cost = [2.0, 3.0, 1.5]
    content = [[4, 1], [3, 4], [1, 1]]  # per food: protein, fat
    need, cap = [12, 8], [10, 10, 3]  # need per nutrient; food availability
    # Constraints A x >= b: nutrients, x >= 0, -x >= -cap.
    rows = [([content[f][n] for f in range(3)], need[n]) for n in range(2)]
    rows += [([1.0 if k == f else 0.0 for k in range(3)], 0.0) for f in range(3)]
    rows += [([-1.0 if k == f else 0.0 for k in range(3)], -cap[f]) for f in range(3)]
    best = math.inf
    for trio in itertools.combinations(rows, 3):
        a = np.array([r[0] for r in trio])
        if abs(np.linalg.det(a)) < 1e-9:
            continue
        x = np.linalg.solve(a, np.array([r[1] for r in trio]))
        if all(np.dot(r[0], x) >= r[1] - 1e-9 for r in rows):
            best = min(best, float(np.dot(cost, x)))
    got = solved(
        "diet",
        {"INGREDIENTS": ["oats", "milk", "bran"], "NUTRIENTS": ["protein", "fat"]},
        {"cost": cost, "content": content, "min_amount": need, "available": cap},
    )
    assert got == pytest.approx(best)


def test_knapsack():
    value, weight, cap = [10, 13, 7, 8, 4], [5, 6, 3, 4, 2], 11
    best = max(
        sum(v for v, t in zip(value, take, strict=False) if t)
        for take in itertools.product((0, 1), repeat=5)
        if sum(w for w, t in zip(weight, take, strict=False) if t) <= cap
    )
    got = solved(
        "knapsack",
        {"ITEMS": list("abcde")},
        {"value": value, "weight": weight, "capacity": cap},
    )
    assert got == best


def test_set_cover_default_cost_counts_candidates():
    covers = [[1, 0, 1, 0], [1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 1], [0, 1, 1, 0]]
    best = min(
        sum(pick)
        for pick in itertools.product((0, 1), repeat=4)
        if all(sum(r[s] * pick[s] for s in range(4)) >= 1 for r in covers)
    )
    got = solved(
        "set_cover",
        {"ELEMENTS": [f"e{k}" for k in range(5)], "CANDIDATES": ["s1", "s2", "s3", "s4"]},
        {"covers": covers},
    )
    assert got == best


def test_facility_location():
    fixed, cap, demand = [10, 8, 12], [4, 3, 5], [3, 2]
    cost = [[2, 3], [4, 1], [3, 3]]
    best = math.inf
    for opened in itertools.product((0, 1), repeat=3):
        # Whole-unit shipments from open facilities only.
        lanes = [(f, c) for f in range(3) for c in range(2) if opened[f]]
        for amounts in itertools.product(*(range(demand[c] + 1) for _, c in lanes)):
            got_c = [
                sum(a for (f, c2), a in zip(lanes, amounts, strict=False) if c2 == c)
                for c in range(2)
            ]
            out_f = [
                sum(a for (f2, _), a in zip(lanes, amounts, strict=False) if f2 == f)
                for f in range(3)
            ]
            if got_c == demand and all(out_f[f] <= cap[f] for f in range(3)):
                total = sum(fixed[f] for f in range(3) if opened[f]) + sum(
                    cost[f][c] * a for (f, c), a in zip(lanes, amounts, strict=False)
                )
                best = min(best, total)
    got = solved(
        "facility_location",
        {"FACILITIES": ["F1", "F2", "F3"], "CUSTOMERS": ["c1", "c2"]},
        {"fixed_cost": fixed, "capacity": cap, "demand": demand, "cost": cost},
    )
    assert got == pytest.approx(best)


def test_production_inventory():
    demand, cap, pc, hc = [2, 4, 3], [4, 4, 4], [3, 5, 6], [1, 1, 1]
    best = math.inf
    for make in itertools.product(range(5), repeat=3):
        stock, total, ok = 1, 0, True  # initial stock 1
        for t in range(3):
            stock += make[t] - demand[t]
            ok &= stock >= 0
            total += pc[t] * make[t] + hc[t] * stock
        if ok and stock >= 1:  # final stock at least 1
            best = min(best, total)
    got = solved(
        "production_inventory",
        {"PERIODS": [1, 2, 3]},
        {
            "demand": demand,
            "capacity": cap,
            "production_cost": pc,
            "holding_cost": 1,
            "initial_stock": 1,
            "final_stock": 1,
        },
    )
    assert got == pytest.approx(best)


def test_shift_cover_derives_the_cover_from_shift_length():
    required = [2, 1, 3, 1]
    best = min(
        sum(w)
        for w in itertools.product(range(4), repeat=4)
        # shift s covers periods s and s+1 (wrapping)
        if all(w[t] + w[(t - 1) % 4] >= required[t] for t in range(4))
    )
    days = ["d1", "d2", "d3", "d4"]
    got = solved(
        "shift_cover",
        {"PERIODS": days, "SHIFTS": days},
        {"required": required, "shift_length": 2},
    )
    assert got == best


def test_tsp_mtz_finds_the_best_tour():
    d = [[0, 2, 9, 10, 7], [1, 0, 6, 4, 3], [15, 7, 0, 8, 3], [6, 3, 12, 0, 11], [9, 7, 5, 6, 0]]
    best = min(
        sum(d[a][b] for a, b in zip((0, *p), (*p, 0), strict=False))
        for p in itertools.permutations(range(1, 5))
    )
    got = solved("tsp", {"CITIES": ["A", "B", "C", "D", "E"]}, {"distance": d})
    assert got == pytest.approx(best)


def test_job_shop_makespan_matches_enumerated_sequences():
    proc = {
        ("J1", "M1"): 3,
        ("J1", "M2"): 2,
        ("J2", "M1"): 2,
        ("J2", "M2"): 4,
        ("J3", "M1"): 4,
        ("J3", "M2"): 1,
    }
    routes = {"J1": ["M1", "M2"], "J2": ["M2", "M1"], "J3": ["M1", "M2"]}
    jobs, machines = ["J1", "J2", "J3"], ["M1", "M2"]

    def makespan(seqs):
        # Earliest start times of this machine order (None if the order deadlocks).
        start, done = {}, set()
        while len(done) < 6:
            moved = False
            for j in jobs:
                for k, m in enumerate(routes[j]):
                    op = (j, m)
                    if op in done:
                        continue
                    prev_job = (j, routes[j][k - 1]) if k else None
                    pos = seqs[m].index(j)
                    prev_mach = (seqs[m][pos - 1], m) if pos else None
                    if all(p is None or p in done for p in (prev_job, prev_mach)):
                        start[op] = max(
                            [0] + [start[p] + proc[p] for p in (prev_job, prev_mach) if p]
                        )
                        done.add(op)
                        moved = True
                    break
            if not moved:
                return None
        return max(start[o] + proc[o] for o in start)

    spans = [
        makespan({"M1": list(a), "M2": list(b)})
        for a in itertools.permutations(jobs)
        for b in itertools.permutations(jobs)
    ]
    best = min(s for s in spans if s is not None)
    route = [[routes[j].index(m) + 1 for m in machines] for j in jobs]
    got = solved(
        "job_shop",
        {"JOBS": jobs, "MACHINES": machines},
        {"proc": {j: {m: proc[j, m] for m in machines} for j in jobs}, "route": route},
    )
    assert got == pytest.approx(best, abs=1e-5)


# ---------------------------------------------------------------------------------------------
# fill(): clear errors


TRANSPORT_SETS = {"SOURCES": ["P1", "P2"], "DESTINATIONS": ["A", "B", "C"]}
TRANSPORT_PARAMS = {"supply": [20, 30], "demand": [10, 25, 15], "cost": [[8, 6, 10], [9, 12, 13]]}


def test_fill_accepts_every_value_form():
    forms = [
        [8, 6, 10, 9, 12, 13],
        [[8, 6, 10], [9, 12, 13]],
        {"P1": {"A": 8, "B": 6, "C": 10}, "P2": {"A": 9, "B": 12, "C": 13}},
        {
            ("P1", "A"): 8,
            ("P1", "B"): 6,
            ("P1", "C"): 10,
            ("P2", "A"): 9,
            ("P2", "B"): 12,
            ("P2", "C"): 13,
        },
        {"P1,A": 8, "P1,B": 6, "P1,C": 10, "P2,A": 9, "P2,B": 12, "P2,C": 13},
    ]
    for cost in forms:
        ir = fill("transportation", TRANSPORT_SETS, {**TRANSPORT_PARAMS, "cost": cost})
        assert next(p for p in ir.parameters if p.name == "cost").values == [8, 6, 10, 9, 12, 13]
    # One number for every index (broadcast).
    ir = fill("transportation", TRANSPORT_SETS, {**TRANSPORT_PARAMS, "cost": 5})
    assert next(p for p in ir.parameters if p.name == "cost").values == [5.0] * 6


@pytest.mark.parametrize(
    ("sets", "params", "needle"),
    [
        ({"SOURCES": ["P1", "P2"]}, TRANSPORT_PARAMS, "missing set 'DESTINATIONS'"),
        (
            TRANSPORT_SETS,
            {"supply": [20, 30], "cost": 1},
            "missing parameter 'demand'[DESTINATIONS]",
        ),
        (
            TRANSPORT_SETS,
            {**TRANSPORT_PARAMS, "supply": [20, 30, 40]},
            "parameter 'supply' needs 2 values (SOURCES(2)",
        ),
        (
            TRANSPORT_SETS,
            {**TRANSPORT_PARAMS, "cost": [[8, 6], [9, 12]]},
            "parameter 'cost' at [P1]: needs one entry per element of DESTINATIONS (3",
        ),
        (
            TRANSPORT_SETS,
            {**TRANSPORT_PARAMS, "cost": [[8, 6, 10]]},
            "needs one entry per element of SOURCES",
        ),
        (
            TRANSPORT_SETS,
            {**TRANSPORT_PARAMS, "demand": {"A": 1, "B": 2}},
            "parameter 'demand': no value for 1 of 3 indices (e.g. C)",
        ),
        (
            TRANSPORT_SETS,
            {**TRANSPORT_PARAMS, "demand": {"A": 1, "B": 2, "Z": 3}},
            "'Z' is not an element of set DESTINATIONS",
        ),
        (
            TRANSPORT_SETS,
            {**TRANSPORT_PARAMS, "supply": ["lots", 3]},
            "parameter 'supply': 'lots' is not a number",
        ),
        (TRANSPORT_SETS, {**TRANSPORT_PARAMS, "tariff": 3}, "unknown parameter 'tariff'"),
        ({**TRANSPORT_SETS, "PLANTS": ["x"]}, TRANSPORT_PARAMS, "unknown set 'PLANTS'"),
        (
            {"SOURCES": [], "DESTINATIONS": ["A"]},
            TRANSPORT_PARAMS,
            "set 'SOURCES' (places goods are shipped from",
        ),
        (
            {"SOURCES": ["P1", "P1"], "DESTINATIONS": ["A", "B", "C"]},
            TRANSPORT_PARAMS,
            "duplicate elements ['P1']",
        ),
    ],
)
def test_fill_errors_name_the_set_or_parameter(sets, params, needle):
    with pytest.raises(TemplateFillError) as e:
        fill("transportation", sets, params)
    assert needle in str(e.value)


def test_fill_errors_for_rules_and_senses():
    with pytest.raises(TemplateFillError, match="consecutive whole numbers"):
        fill(
            "production_inventory",
            {"PERIODS": ["Jan", "Feb"]},
            {"demand": 1, "capacity": 1, "production_cost": 1, "holding_cost": 1},
        )
    with pytest.raises(TemplateFillError, match=r"'covers'.*or 'shift_length'"):
        fill("shift_cover", {"PERIODS": ["a", "b"], "SHIFTS": ["a", "b"]}, {"required": [1, 1]})
    with pytest.raises(TemplateFillError, match="sense 'maximize' is not allowed"):
        fill("transportation", TRANSPORT_SETS, TRANSPORT_PARAMS, sense="maximize")
    with pytest.raises(TemplateError, match="no template 'nope'"):
        fill("nope", {}, {})


def test_optional_parameters_drop_their_constraints_and_sources_are_kept():
    ir = fill(
        "diet",
        {"INGREDIENTS": ["a"], "NUTRIENTS": ["n"]},
        {"cost": 1, "content": 1, "min_amount": 1},
        sources={"cost": "Oats cost $1."},
    )
    names = [c.name for c in ir.constraints]
    assert names == ["nutrient_min"]
    assert next(p for p in ir.parameters if p.name == "cost").source == "Oats cost $1."
    ir = fill(
        "diet",
        {"INGREDIENTS": ["a"], "NUTRIENTS": ["n"]},
        {"cost": 1, "content": 1, "min_amount": 1, "batch_size": 4},
    )
    assert [c.name for c in ir.constraints] == ["nutrient_min", "batch"]


def test_template_summary_lists_what_it_needs():
    text = load_template("tsp").data_summary()
    assert "set DEPOT" in text and "default: first:CITIES" in text
    assert "parameter distance[CITIES, CITIES]" in text


def test_docs_describe_every_template():
    from pathlib import Path

    docs = (Path(__file__).parents[3] / "docs" / "templates.md").read_text(encoding="utf-8")
    for tpl in load_templates():
        assert f"### `{tpl.id}`: {tpl.class_name}" in docs
        for a in tpl.assumptions:
            assert a in docs, (tpl.id, a)


def test_cues_rank_the_fitting_template_first():
    from optiforge.agents.team.templates import match_cues

    ship = (
        "Two plants supply a product to three markets; the shipping cost per unit on each route is"
    )
    assert match_cues(ship)[0][0] == "transportation"
    tour = "A salesman must visit each city exactly once and return to the start; find the shortest tour."
    best = match_cues(tour)
    assert best[0][0] == "tsp" and "exactly once" in best[0][2]
    assert match_cues("Nothing here is relevant.") == []
    assert match_cues("Each worker has two matches.")[0][0] == "assignment"  # plurals count
