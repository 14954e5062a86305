"""Names and text for nodes (optiforge.trace.render); the prompt sections built from them
are tested in tests/agents/optim/test_sections.py."""

from __future__ import annotations

from optiforge.trace import node
from optiforge.trace.render import assign_names, feedback_text, format_value


def test_assign_names_is_unique_and_keeps_parameter_names():
    a = node(1, trainable=True, name="w")
    b = node(2, trainable=True, name="w")
    c = node(3, trainable=True, name="my prompt")
    d = node(4)
    e = node(5, name="int0")
    names = assign_names([d, a, b, c, e])
    assert names[a] == "w" and names[b] == "w1" and names[c] == "my_prompt"
    assert len(set(names.values())) == 5
    assert names[d].startswith("int")


def test_values_and_feedback_as_text():
    assert format_value("abc") == "abc"
    assert format_value(ValueError("bad")) == "ValueError: bad"
    assert format_value([1, 2]) == "[1, 2]"
    cut = format_value("x" * 500, max_chars=100)
    assert len(cut) < 130 and cut.endswith("more chars]")
    assert feedback_text("ok") == "ok"
    assert feedback_text({"score": 1}) == '{\n "score": 1\n}'


def test_a_broken_repr_does_not_break_rendering():
    class Broken:
        def __repr__(self):
            raise RuntimeError("no")

    assert format_value(Broken()) == "<Broken (repr failed: no)>"
