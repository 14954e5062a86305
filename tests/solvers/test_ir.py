"""Model IR: schema shape, structural and semantic validation, safe expressions."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from optiforge.errors import OptiforgeError
from optiforge.solvers import IRValidationError, ModelIR, classify_ir, validate_ir


def make(**over):
    base = {
        "variables": [{"name": "x"}, {"name": "y"}],
        "objective": {"sense": "maximize", "expression": "3*x + 2*y"},
        "constraints": [{"name": "budget", "expression": "x + y <= 4"}],
    }
    base.update(over)
    return ModelIR.model_validate(base)


def errors_of(data) -> list[str]:
    with pytest.raises(IRValidationError) as ei:
        ModelIR.from_json(data)
    return ei.value.errors


def test_import_is_lazy():
    code = (
        "import sys, optiforge.solvers as s; assert 'pyomo' not in sys.modules; "
        "assert 'highspy' not in sys.modules and 'pyscipopt' not in sys.modules; "
        "s.ModelIR; assert 'pyomo' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_schema_is_flat_and_usable_as_response_format():
    schema = ModelIR.model_json_schema()
    text = json.dumps(schema)
    assert "$ref" not in text and "$defs" not in text
    props = schema["properties"]
    assert set(props) == {"name", "sets", "parameters", "variables", "objective", "constraints"}
    var_props = props["variables"]["items"]["properties"]
    assert var_props["domain"]["enum"] == ["continuous", "integer", "binary"]
    assert {"name", "expression", "for_all", "source"} <= set(
        props["constraints"]["items"]["properties"]
    )
    rf = ModelIR.response_format()
    assert rf["type"] == "json_schema" and rf["json_schema"]["schema"] == schema
    # The schema accepts what the model produces: a round trip through JSON.
    ir = make()
    assert ModelIR.from_json(ir.model_dump_json()) == ir


def test_errors_name_the_offending_item():
    errs = errors_of(
        {
            "sets": [{"name": "I", "elements": ["a", "b"]}],
            "parameters": [{"name": "c", "index_sets": ["I"], "values": [1, 2, 3]}],
            "variables": [{"name": "x", "index_sets": ["I"]}, {"name": "y"}],
            "objective": {"sense": "max", "expression": "sum(x[i] for i in I)"},
            "constraints": [
                {"name": "budget", "expression": "y + z <= 3"},
                {"name": "cap", "expression": "x[i] <= 3", "for_all": "i in J"},
                {"name": "attr", "expression": "y.value <= 2"},
                {"name": "idx", "expression": "x <= 2"},
                {"name": "bad_elem", "expression": "x['q'] <= 2"},
                {"name": "uses_c", "expression": "c[i] * x[i] <= 1", "for_all": "i in I"},
            ],
        }
    )
    text = "\n".join(errs)
    assert "parameter 'c': needs 2 values" in text
    assert "constraint 'budget': unknown variable 'z'" in text
    assert "constraint 'cap':" in text and "'J'" in text
    assert "constraint 'attr': attribute access" in text
    assert "constraint 'idx': variable 'x' is indexed by [I]" in text
    assert "constraint 'bad_elem':" in text and "'q' is not an element of set I" in text
    # Uses of an invalid declaration are not reported again.
    assert "uses_c" not in text
    assert len(errs) == 6


def test_structural_errors_name_items_too():
    errs = errors_of(
        {
            "variables": [{"name": "x", "domain": "fractional"}, {"name": "2bad"}],
            "objective": {"sense": "maximize", "expression": "x"},
        }
    )
    assert any(e.startswith("variable 'x': domain") for e in errs)
    assert any("variable '2bad'" in e and "identifier" in e for e in errs)
    assert isinstance(IRValidationError(["a"]), OptiforgeError)
    assert "not valid JSON" in errors_of("{not json")[0]


@pytest.mark.parametrize(
    "expr, fragment",
    [
        ("__import__('os').system('ls') <= 1", "is not allowed; only sum()"),
        ("__import__('os') <= 1", "function '__import__' is not allowed"),
        ("eval('1') <= 1", "function 'eval' is not allowed"),
        ("(lambda: x)() <= 1", "is not allowed"),
        ("x ^ 2 <= 1", "'^' is not a power"),
        ("x.__class__ <= 1", "attribute access"),
        ("x + y", "must compare two sides"),
        ("x != y", "'!=' cannot be a constraint"),
        ("x <= ", "syntax error"),
        ("[x for x in y] <= 1", "a loop must be inside sum"),
        ("sum(x[i] for i in 5) <= 1", "loop over a set name"),
        ("'abc' <= x", "can only be an index"),
        ("x / 0 <= 1", "division by zero"),
        ("sum(x, y) <= 1", "sum() takes one argument"),
        ("x if y else 1 <= 2", "IfExp"),
        ("x @ y <= 1", "'@' is not supported"),
    ],
)
def test_expression_whitelist(expr, fragment):
    errs = errors_of(
        {
            "variables": [{"name": "x"}, {"name": "y"}],
            "objective": {"sense": "maximize", "expression": "x"},
            "constraints": [{"name": "c", "expression": expr}],
        }
    )
    assert errs[0].startswith("constraint 'c': ")
    assert fragment in errs[0], errs[0]


def test_strict_inequality_is_read_as_non_strict_with_warning():
    ir = make(constraints=[{"name": "less", "expression": "x < 3"}])
    warnings = validate_ir(ir)
    assert len(warnings) == 1 and "constraint 'less'" in warnings[0] and "'<='" in warnings[0]


def test_names_must_be_unique_and_not_reserved():
    errs = errors_of(
        {
            "sets": [{"name": "x", "elements": ["a"]}],
            "variables": [{"name": "x"}, {"name": "sum"}],
            "objective": {"sense": "maximize", "expression": "1"},
            "constraints": [
                {"name": "c", "expression": "1 <= 2"},
                {"name": "c", "expression": "1 <= 2"},
            ],
        }
    )
    text = "\n".join(errs)
    assert "variable 'sum'" in text and "reserved" in text


def test_duplicate_constraint_and_variable_names():
    errs = errors_of(
        {
            "sets": [{"name": "x", "elements": ["a"]}],
            "variables": [{"name": "x"}],
            "objective": {"sense": "maximize", "expression": "1"},
            "constraints": [
                {"name": "c", "expression": "1 <= 2"},
                {"name": "c", "expression": "1 <= 2"},
            ],
        }
    )
    text = "\n".join(errs)
    assert "variable 'x': name already used by a set" in text
    assert "constraint 'c': name used twice" in text


def test_bounds_and_elements_are_checked():
    errs = errors_of(
        {
            "sets": [{"name": "S", "elements": ["a", "a"]}],
            "variables": [{"name": "x", "lb": 5, "ub": 1}],
            "objective": {"sense": "maximize", "expression": "x"},
        }
    )
    assert any("set 'S'" in e and "duplicate" in e for e in errs)
    errs = errors_of(
        {
            "variables": [{"name": "x", "lb": 5, "ub": 1}],
            "objective": {"sense": "maximize", "expression": "x"},
        }
    )
    assert errs == ["variable 'x': lower bound 5.0 exceeds upper bound 1.0"]


def test_indexed_features_and_numeric_elements():
    ir = ModelIR.model_validate(
        {
            "sets": [{"name": "T", "elements": [1, 2, 3]}, {"name": "P", "elements": ["a", "b"]}],
            "parameters": [
                {"name": "d", "index_sets": ["T"], "values": [4, 5, 6]},
                {"name": "cost", "index_sets": ["P", "T"], "values": [1, 2, 3, 4, 5, 6]},
                {"name": "k", "values": 2},
            ],
            "variables": [
                {"name": "x", "index_sets": ["P", "T"]},
                {"name": "s", "index_sets": ["T"]},
            ],
            "objective": {
                "sense": "minimize",
                "expression": "sum(cost[p, t] * x[p, t] for p in P for t in T) + sum(s)",
            },
            "constraints": [
                {
                    "name": "demand",
                    "expression": "sum(x[p, t] for p in P) >= d[t]",
                    "for_all": "t in T",
                },
                {"name": "flow", "expression": "s[t] == s[t-1] + k", "for_all": "t in T if t >= 2"},
                {"name": "pair", "expression": "x[p, t] <= 10", "for_all": "p in P, t in T"},
                {"name": "rng", "expression": "sum(s[t] for t in range(1, 3)) <= 100"},
            ],
        }
    )
    assert ir.sets[0].elements == ["1", "2", "3"]
    cls = classify_ir(ir)
    assert cls.problem_class == "LP" and cls.num_variables == 9
    assert cls.num_constraints == 3 + 2 + 6 + 1


def test_schema_converts_to_a_llama_cpp_grammar():
    xllamacpp = pytest.importorskip("xllamacpp")
    grammar = xllamacpp.json_schema_to_grammar(json.dumps(ModelIR.model_json_schema()))
    assert grammar and "objective" in grammar


def test_friendly_inputs_are_normalised():
    ir = ModelIR.model_validate(
        {
            "sets": [{"name": "A", "elements": ["a", "b"]}, {"name": "B", "elements": [1, 2, 3]}],
            "parameters": [
                {"name": "t", "index_sets": ["A", "B"], "values": [[1, 2, 3], [4, 5, 6]]}
            ],
            "variables": [
                {"name": "x", "index_sets": ["A", "B"], "domain": "Int"},
                {"name": "y", "domain": "real"},
                {"name": "z", "domain": "bool"},
            ],
            "objective": {
                "sense": "Max",
                "expression": "sum(t[a, b] * x[a, b] for a in A for b in B)",
            },
            "constraints": [
                {"name": "c", "expression": "x[a, b] <= 1", "for_all": "a in A and b in B"}
            ],
        }
    )
    assert ir.parameters[0].values == [1, 2, 3, 4, 5, 6]
    assert [v.domain for v in ir.variables] == ["integer", "continuous", "binary"]
    assert ir.objective.sense == "maximize"
    assert classify_ir(ir).num_constraints == 6


def test_common_slips_are_normalised_or_explained():
    ir = make(
        constraints=[
            {"name": "eq", "expression": "x + y = 3"},
            {"name": "uni", "expression": "2·x − y ≤ 1e1"},
        ]
    )
    assert validate_ir(ir) == []
    assert classify_ir(ir).num_constraints == 2
    errs = errors_of(make(constraints=[{"name": "imp", "expression": "3x + 2y <= 4"}]).model_dump())
    assert errs[0].startswith("constraint 'imp': syntax error") and "write 3*x, not 3x" in errs[0]
