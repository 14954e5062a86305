"""The deterministic table parser: Markdown pipes, ASCII boxes, aligned columns, label
lists, inline number lists and "and so on" runs."""

from __future__ import annotations

from optiforge.agents.team.tables import cell_number, parse_tables


def test_cell_numbers():
    assert cell_number("$1,200") == 1200
    assert cell_number("12%") == 12
    assert cell_number(" 3.5 kg ") == 3.5
    assert cell_number("-4") == -4
    assert cell_number("-") is None
    assert cell_number("Plant 1") is None


def test_markdown_table_with_a_supply_column_and_a_demand_row():
    text = """Shipping costs ($ per unit):

| Plant | Store A | Store B | Supply |
|:------|--------:|---------|--------|
| P1    | $8      | 6       | 20     |
| P2    | 9       | 12      | 30     |
| Demand| 10      | 25      |        |

Minimize the cost."""
    (t,) = parse_tables(text)
    assert t.kind == "markdown" and t.line == 3
    assert t.caption == "Shipping costs ($ per unit):"
    assert t.column_labels == ["Store A", "Store B", "Supply"]
    assert t.row_labels == ["P1", "P2", "Demand"]
    assert t.rows[0] == ["P1", "$8", "6", "20"]
    assert t.rows[2] == ["Demand", "10", "25", ""]
    assert t.numbers() == [8, 6, 20, 9, 12, 30, 10, 25]
    assert "Table 1 (markdown" in t.render(1) and "P1: $8, 6, 20" in t.render(1)


def test_ascii_box_and_aligned_columns():
    text = """Hours needed per unit:
            Machine 1   Machine 2
Product X   3           2.5
Product Y   4           1

Weights:
+------+-----+
| Item | kg  |
+------+-----+
| a    | 5   |
| b    | 6   |
+------+-----+
"""
    aligned, box = parse_tables(text)
    assert aligned.kind == "aligned" and aligned.caption == "Hours needed per unit:"
    assert aligned.header == ["", "Machine 1", "Machine 2"]  # no corner label: padded
    assert aligned.rows == [["Product X", "3", "2.5"], ["Product Y", "4", "1"]]
    assert box.kind == "markdown" and box.caption == "Weights:"
    assert box.column_labels == ["kg"] and box.rows == [["a", "5"], ["b", "6"]]


def test_label_lists_and_inline_number_lists():
    text = """Each plant can produce:
- Plant A: 20 units
- Plant B: 35 units
Demands for months 1 to 4 are 100, 150, 120 and 130 respectively.
Slot prices are 2, 4, 6, ..., 12 dollars.
Week 1 needs 10 nurses, week 2 needs 12 nurses, and so on until week 5."""
    lst, months, slots, weeks = parse_tables(text)
    assert lst.kind == "list" and lst.rows == [["Plant A", "20"], ["Plant B", "35"]]
    assert months.kind == "sequence" and months.rows[0][1:] == ["100", "150", "120", "130"]
    assert months.caption.endswith("months 1 to 4 are")
    assert slots.rows[0][1:] == ["2", "4", "6", "8", "10", "12"]  # the run is written out
    assert weeks.rows[0][1:] == ["10", "12", "14", "16", "18"]


def test_prose_without_tables_or_lists():
    text = "A farmer has 100 acres and $2,000. Wheat earns $30 per acre and corn $40."
    assert parse_tables(text) == []
    # An uneven run after "..." is not guessed.
    assert all(t.rows[0][1:] != ["1", "2", "4"] for t in parse_tables("Sizes 1, 2, 4, ..., 64."))


def test_prose_with_double_spaces_is_not_a_table():
    text = (
        "The farm has 100 acres of land available for planting.  Wheat needs 3 hours.\n"
        "Corn needs 2 hours of labour per acre and sells well.  It earns 40 dollars per acre."
    )
    assert parse_tables(text) == []
