"""The expanded rendering: every row per element, next to the compact indexed form."""

from __future__ import annotations

from optiforge.solvers import ModelIR, ir_markdown, ir_plaintext, ir_to_markdown
from optiforge.solvers.render import ir_expanded

TRANSPORT = ModelIR.model_validate(
    {
        "name": "transport",
        "sets": [
            {"name": "S", "elements": ["P1", "P2"]},
            {"name": "D", "elements": ["A", "B"]},
        ],
        "parameters": [
            {"name": "supply", "index_sets": ["S"], "values": [20, 30]},
            {"name": "demand", "index_sets": ["D"], "values": [10, 25]},
            {"name": "cost", "index_sets": ["S", "D"], "values": [[8, 6], [9, 12]]},
            {"name": "fee", "values": 5},
        ],
        "variables": [{"name": "x", "index_sets": ["S", "D"]}, {"name": "y", "lb": None}],
        "objective": {
            "sense": "minimize",
            "expression": "sum(cost[i, j]*x[i, j] for i in S for j in D) + fee + 2*y",
        },
        "constraints": [
            {
                "name": "sup",
                "expression": "sum(x[i, j] for j in D) <= supply[i]",
                "for_all": "i in S",
            },
            {
                "name": "dem",
                "expression": "sum(x[i, j] for i in S) >= demand[j] - 1",
                "for_all": "j in D",
            },
            {"name": "free", "expression": "y >= -3 + x['P1', 'A']"},
        ],
    }
)


def test_expanded_writes_each_row_with_terms_collected():
    text = ir_expanded(TRANSPORT)
    lines = text.splitlines()
    assert lines[0] == "minimize  8 x[P1,A] + 6 x[P1,B] + 9 x[P2,A] + 12 x[P2,B] + 2 y + 5"
    assert "  sup[P1]  x[P1,A] + x[P1,B] <= 20" in lines
    assert "  sup[P2]  x[P2,A] + x[P2,B] <= 30" in lines
    assert "  dem[B]   x[P1,B] + x[P2,B] >= 24" in lines  # the constant moved right
    assert "  free     -x[P1,A] + y >= -3" in lines
    assert "  0 <= x[P1,A], x[P1,B], x[P2,A], x[P2,B]  (continuous)" in lines
    assert "  -inf <= y  (continuous)" in lines


def test_expanded_caps_rows_and_writes_out_nonlinear_sums():
    assert "... and 3 more rows" in ir_expanded(TRANSPORT, max_rows=2)
    nl = ModelIR.model_validate(
        {
            "sets": [{"name": "I", "elements": ["a", "b"]}],
            "parameters": [{"name": "w", "index_sets": ["I"], "values": [2, 3.5]}],
            "variables": [{"name": "x", "index_sets": ["I"], "ub": 5}],
            "objective": {"sense": "maximize", "expression": "sum(log(1 + w[i]*x[i]) for i in I)"},
            "constraints": [
                {"name": "d", "expression": "exp(x[i]) <= 3*w[i]", "for_all": "i in I"}
            ],
        }
    )
    text = ir_expanded(nl)
    assert text.startswith("maximize  log(1 + 2 * x[a]) + log(1 + 3.5 * x[b])")
    assert "  d[b]  exp(x[b]) <= 3 * 3.5" in text


def test_compact_and_expanded_forms_both_render():
    compact = ir_plaintext(TRANSPORT)
    assert "sum(x[i, j] for j in D) <= supply[i]  for all i in S" in compact
    assert "x[P1,A]" not in compact
    both = ir_plaintext(TRANSPORT, expanded=True)
    assert both.startswith(compact) and "sup[P2]  x[P2,A] + x[P2,B] <= 30" in both
    md = ir_to_markdown(TRANSPORT, expanded=True)
    assert r"$\forall\ i \in S$" in md and "**Expanded model**" in md
    assert "sup[P1]  x[P1,A] + x[P1,B] <= 20" in md
    assert "Expanded" not in ir_to_markdown(TRANSPORT) and "Expanded" in ir_markdown(
        TRANSPORT, expanded=True
    )


def test_expanded_of_a_broken_draft_says_why():
    draft = {
        "objective": {"sense": "maximize", "expression": "3*x + z"},
        "constraints": [{"name": "c", "expression": "x <= 4"}],
        "variables": [{"name": "x"}],
    }
    text = ir_plaintext(draft, expanded=True)
    assert "cannot be expanded" in text and "unknown variable 'z'" in text
