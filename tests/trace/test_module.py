"""Module: parameter discovery and JSON save/load."""

from __future__ import annotations

import json

import pytest

from optiforge.trace import Module, SerializationError, bundle, node


class Inner(Module):
    def __init__(self):
        self.prompt = node("Be brief.", trainable=True, description="system prompt")
        self.frozen = node(0.5, trainable=True)
        self.frozen.trainable = False

    @bundle(trainable=True)
    def step(self, x):
        return x + 1

    def forward(self, x):
        return self.step(x)


class Outer(Module):
    def __init__(self):
        super().__init__()
        self.inner = Inner()
        self.weights = [node(1, trainable=True), node(2, trainable=True)]
        self.table = {"a": node({"k": [1, 2]}, trainable=True), "b": Inner()}
        self.named = node(3, trainable=True, name="explicit")
        self.alias = self.named  # the same parameter twice is listed once
        self.plain = node(9)  # not a parameter
        self._private = node(4, trainable=True)
        self.loop = self  # cycles do not hang

    def forward(self, x):
        return self.inner(x) * self.weights[0]


def test_named_parameters_walks_everything_once_in_stable_order():
    m = Outer()
    names = list(m.named_parameters())
    assert names == sorted(names, key=lambda s: tuple(s.split(".")))
    assert set(names) == {
        "_private",
        "named",
        "inner.prompt",
        "inner.step.__code",
        "table.a",
        "table.b.prompt",
        "table.b.step.__code",
        "weights.0",
        "weights.1",
    }
    assert m.named_parameters()["named"] is m.named
    assert "inner.frozen" in m.named_parameters(include_frozen=True)
    assert m.inner.prompt.name == "prompt"  # named after its attribute
    assert m.named.name == "explicit"  # an explicit name is kept
    assert len(m.parameters()) == len(names)


def test_module_without_forward_says_what_to_do():
    class Empty(Module):
        pass

    with pytest.raises(NotImplementedError, match="must define forward"):
        Empty()(1)


def test_save_and_load_round_trip(tmp_path):
    m = Outer()
    m.inner.prompt.value = "Be very brief."
    m.inner.step.code.value = "def step(self, x):\n    return x + 2\n"
    m.weights[1].value = 20
    m.table["a"].value = {"k": [3]}
    path = m.save(tmp_path / "sub" / "outer.json")
    doc = json.loads(path.read_text())
    assert (doc["format"], doc["version"], doc["kind"]) == ("optiforge.state", 1, "module")
    assert doc["class"].endswith("Outer")
    assert doc["parameters"]["inner.prompt"] == "Be very brief."
    assert doc["parameters"]["inner.frozen"] == 0.5
    fresh = Outer()
    fresh.load(path)
    assert fresh.inner.prompt.value == "Be very brief."
    assert fresh.weights[1].value == 20
    assert fresh.table["a"].value == {"k": [3]}
    assert fresh(node(1)).value == 3  # the loaded code is compiled and used
    assert fresh.state_dict() == m.state_dict()


def test_non_serializable_parameter_is_a_clear_error_and_writes_nothing(tmp_path):
    m = Outer()
    m.weights[0].value = object()
    target = tmp_path / "x.json"
    with pytest.raises(SerializationError, match=r"weights\.0 holds a object"):
        m.save(target)
    assert not target.exists()
    m.weights[0].value = float("nan")
    with pytest.raises(SerializationError, match="finite"):
        m.save(target)
    m.weights[0].value = {1: "a"}
    with pytest.raises(SerializationError, match="keys must be text"):
        m.save(target)
    assert list(tmp_path.iterdir()) == []


def test_load_errors_change_nothing(tmp_path):
    m = Outer()
    good = m.save(tmp_path / "good.json")
    doc = json.loads(good.read_text())
    doc["parameters"]["inner.prompt"] = "changed"
    doc["parameters"]["no.such"] = 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(SerializationError, match=r"no\.such"):
        m.load(bad)
    assert m.inner.prompt.value == "Be brief."
    del doc["parameters"]["no.such"]
    del doc["parameters"]["weights.0"]
    bad.write_text(json.dumps(doc))
    with pytest.raises(SerializationError, match="strict=False"):
        m.load(bad)
    m.load(bad, strict=False)
    assert m.inner.prompt.value == "changed" and m.weights[0].value == 1
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(SerializationError, match="not valid JSON"):
        m.load(tmp_path / "junk.json")
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(SerializationError, match="not an optiforge module file"):
        m.load(tmp_path / "other.json")
    with pytest.raises(SerializationError, match="no such parameter file"):
        m.load(tmp_path / "missing.json")


def test_tuple_values_round_trip_as_tuples(tmp_path):
    class T(Module):
        def __init__(self):
            self.pair = node((1, 2), trainable=True)

    t = T()
    t.save(tmp_path / "t.json")
    t2 = T()
    t2.pair.value = (0, 0)
    t2.load(tmp_path / "t.json")
    assert t2.pair.value == (1, 2)


def test_zero_feedback_clears_all_parameters():
    m = Outer()
    y = m(node(1))
    y.backward("fb")
    assert m.inner.step.code.feedback == "fb" and m.weights[0].feedback == "fb"
    m.zero_feedback()
    assert all(p.feedback is None and not p.feedback_records for p in m.parameters())


def test_deepcopy_keeps_optimized_code_and_is_independent():
    import copy

    m = Inner()
    m.step.code.value = "def step(self, x):\n    return x + 10\n"
    m.prompt.value = "tuned"
    best = copy.deepcopy(m)
    assert best(node(1)).value == 11 and best.prompt.value == "tuned"
    m.step.code.value = "def step(self, x):\n    return x - 1\n"
    m.prompt.value = "worse"
    assert m(node(1)).value == 0
    assert best(node(1)).value == 11 and best.prompt.value == "tuned"
    assert best.step.code is not m.step.code
    assert list(best.named_parameters()) == list(m.named_parameters())


def test_module_files_of_the_old_format_still_load(tmp_path):
    m = Outer()
    new = m.state_dict()
    new["inner.prompt"] = "old file"
    old = tmp_path / "old.json"
    old.write_text(
        json.dumps({"format": "optiforge.module/1", "class": "x.Outer", "parameters": new})
    )
    m.load(old)
    assert m.inner.prompt.value == "old file"


def test_newer_versions_and_other_kinds_are_refused_by_name(tmp_path):
    m = Outer()
    doc = json.loads(m.save(tmp_path / "m.json").read_text())
    (tmp_path / "v9.json").write_text(json.dumps({**doc, "version": 9}))
    with pytest.raises(SerializationError, match="is version 9 of the optiforge state format"):
        m.load(tmp_path / "v9.json")
    (tmp_path / "opt.json").write_text(json.dumps({**doc, "kind": "optimizer"}))
    with pytest.raises(SerializationError, match="state of kind 'optimizer', not 'module'"):
        m.load(tmp_path / "opt.json")
