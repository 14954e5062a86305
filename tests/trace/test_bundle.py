"""@bundle on functions and methods, sync and async, and trainable code."""

from __future__ import annotations

import asyncio
import gc
import linecache
import math

import pytest

from optiforge.trace import (
    BundleError,
    CodeError,
    CodeParameter,
    ExceptionNode,
    ExecutionError,
    MessageNode,
    Module,
    Node,
    ValueTypeError,
    bundle,
    is_tracing,
    node,
)

FACTOR = 10


@bundle
def add(a, b=1):
    """Add a and b."""
    return a + b


@bundle(trainable=True, constraint="must stay pure")
def poly(x):
    """Evaluate a polynomial."""
    return x * x


@bundle(trainable=True)
def uses_global(x):
    return x * FACTOR


@bundle(trainable=True)
async def async_double(x):
    """Double x, asynchronously."""
    await asyncio.sleep(0)
    return 2 * x


def test_function_call_records_inputs_doc_and_names():
    a, b = node(1), node(2)
    r = add(a, b)
    assert isinstance(r, MessageNode) and r.value == 3
    assert r.parents == (a, b) and r.argnames == ("a", "b")
    assert r.op.name == "add" and r.op.doc == "Add a and b."
    assert "return a + b" in add.source
    r2 = add(a, b=5)
    assert r2.argnames == ("a", "b") and r2.parents[1].value == 5
    r3 = add(3)
    assert type(r3.parents[0]) is Node and r3.parents[0].value == 3
    assert add.code is None and add.parameters() == []


def test_body_runs_on_plain_values_without_recording():
    seen = {}

    @bundle
    def probe(x, items):
        seen["x"] = x
        seen["items"] = items
        seen["tracing"] = is_tracing()
        return len(items)

    a, b = node(1), node("b")
    r = probe(a, [b, "c"])
    assert seen == {"x": 1, "items": [1 and "b", "c"], "tracing": False}
    assert r.parents == (a, b) and r.argnames == ("x", "items[0]")
    d = probe(a, {"k": b})
    assert d.argnames == ("x", "items['k']")


def test_returning_a_node_is_unwrapped():
    @bundle
    def passthrough(x):
        return node(x + 1)

    r = passthrough(node(1))
    assert r.value == 2 and not isinstance(r.value, Node)


def test_varargs_and_kwargs_names():
    @bundle
    def f(a, *rest, **kw):
        return a + sum(rest) + sum(kw.values())

    r = f(node(1), node(2), 3, z=node(4))
    assert r.value == 10
    assert r.argnames == ("a", "rest[0]", "rest[1]", "z")


def test_trainable_function_code_is_a_parameter_with_def_source():
    code = poly.code
    assert isinstance(code, CodeParameter) and code.kind == "code"
    assert code.value.startswith("def poly(x):")
    assert "@bundle" not in code.value
    assert code.name == "__code_poly" and code.constraint == "must stay pure"
    assert poly.parameters() == [code]
    r = poly(node(3))
    assert r.value == 9 and r.parents[-1] is code and r.argnames == ("x", "__code")


def test_new_code_is_compiled_once_and_used():
    original = poly.code.value
    try:
        poly.code.value = "def poly(x):\n    return x * x + 1\n"
        assert poly(node(3)).value == 10
        fn1 = poly._state._fn
        assert poly(node(4)).value == 17
        assert poly._state._fn is fn1  # compiled once per distinct text
    finally:
        poly.code.value = original
    assert poly(node(3)).value == 9


def test_new_code_may_import_and_define_helpers_and_repeat_decorator():
    original = poly.code.value
    try:
        poly.code.value = (
            "import math\n\ndef helper(v):\n    return math.floor(v)\n\n"
            "@bundle(trainable=True)\ndef poly(x):\n    return helper(math.sqrt(x))\n"
        )
        assert poly(node(10)).value == 3
        assert "helper" not in globals()  # new names do not leak into this module
    finally:
        poly.code.value = original


def test_single_def_sees_live_module_globals():
    global FACTOR
    original = uses_global.code.value
    try:
        uses_global.code.value = "def uses_global(x):\n    return x * FACTOR + 1\n"
        assert uses_global(node(2)).value == 21
        FACTOR = 100
        assert uses_global(node(2)).value == 201
    finally:
        FACTOR = 10
        uses_global.code.value = original


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("def poly(x):\n    return x *\n", "syntax error at line 2"),
        ("x = 1\n", "defines no function"),
        ("def a(x):\n    return x\n\ndef b(x):\n    return x\n", "defines a, b but not poly"),
        ("def poly(x, y):\n    return x\n", r"changes its signature from \(x\) to \(x, y\)"),
        ("async def poly(x):\n    return x\n", "must stay a plain def"),
        ("import no_such_module_xyz\ndef poly(x):\n    return x\n", "ModuleNotFoundError"),
        (42, "must be text"),
    ],
)
def test_bad_new_code_becomes_exception_node(source, match):
    original = poly.code.value
    try:
        poly.code.value = source
        with pytest.raises(ExecutionError, match=match) as info:
            poly(node(2))
        err = info.value.exception_node
        assert isinstance(err, ExceptionNode) and isinstance(err.value, CodeError)
        assert err.parents[-1] is poly.code
        with pytest.raises(CodeError, match=match):
            poly.code.validate(source) if isinstance(source, str) else poly.compile_source(source)
    finally:
        poly.code.value = original
    assert poly(node(2)).value == 4


def test_renamed_single_def_is_accepted():
    original = poly.code.value
    try:
        poly.code.value = "def better(x):\n    return x + 100\n"
        assert poly(node(1)).value == 101
    finally:
        poly.code.value = original


def test_validate_rejects_non_text_and_accepts_good_code():
    with pytest.raises(ValueTypeError, match="needs source text"):
        poly.code.validate(3)
    good = "def poly(x):\n    return -x\n"
    assert poly.code.validate(good) == good
    assert poly.code.value != good  # validate never sets


def test_runtime_error_in_new_code_has_traceback_with_its_lines():
    original = poly.code.value
    try:
        poly.code.value = "def poly(x):\n    y = x - x\n    return 1 / y\n"
        with pytest.raises(ExecutionError) as info:
            poly(node(5))
        tb = info.value.exception_node.traceback
        assert "ZeroDivisionError" in tb and "return 1 / y" in tb
        assert "optiforge/trace" not in tb
    finally:
        poly.code.value = original


def test_compiled_code_lines_are_dropped_from_linecache_when_unused():
    before = {k for k in linecache.cache if str(k).startswith("<optiforge code of")}
    for i in range(5):
        poly.compile_source(f"def poly(x):\n    return x + {i}\n")
    gc.collect()
    after = {k for k in linecache.cache if str(k).startswith("<optiforge code of")}
    assert after <= before


def test_closure_variables_are_available_to_new_code():
    base = 7

    @bundle(trainable=True)
    def shifted(x):
        return x + base

    assert shifted(node(1)).value == 8
    shifted.code.value = "def shifted(x):\n    return x - base\n"
    assert shifted(node(1)).value == -6


def test_lambdas_and_builtins_cannot_be_trainable():
    with pytest.raises(BundleError, match="lambda"):
        bundle(lambda x: x, trainable=True)
    with pytest.raises(BundleError, match="builtins"):
        bundle(math.sqrt, trainable=True)
    with pytest.raises(BundleError, match="not available"):
        ns: dict = {}
        exec("def made_by_exec(x):\n    return x\n", ns)
        bundle(ns["made_by_exec"], trainable=True)
    with pytest.raises(BundleError, match="needs a function"):
        bundle(3)
    with pytest.raises(BundleError, match="already bundled"):
        bundle(add)
    # Not trainable: fine, there is nothing to rewrite.
    assert bundle(math.sqrt)(node(9.0)).value == 3.0
    assert bundle(lambda x: x + 1)(node(1)).value == 2


def test_exception_in_function_becomes_exception_node():
    @bundle
    def parse(text):
        return int(text)

    t = node("abc")
    with pytest.raises(ExecutionError) as info:
        parse(t)
    err = info.value.exception_node
    assert isinstance(err.value, ValueError) and err.parents == (t,)
    assert "int(text)" in err.traceback
    assert err.op.name == "parse" and not err


class Greeter(Module):
    def __init__(self, greeting):
        self.greeting = node(greeting, trainable=True)

    @bundle(trainable=True)
    def greet(self, greeting, name):
        """Greet someone."""
        return f"{greeting}, {name}!"

    @bundle
    async def shout(self, text):
        """Upper-case text."""
        await asyncio.sleep(0)
        return text.upper()

    def forward(self, name):
        return self.greet(self.greeting, name)


def test_methods_bind_self_and_have_per_instance_code():
    g1, g2 = Greeter("Hello"), Greeter("Hi")
    r = g1(node("Ada"))
    assert r.value == "Hello, Ada!"
    assert r.argnames == ("greeting", "name", "__code")
    assert r.parents[0] is g1.greeting and r.parents[2] is g1.greet.code
    assert g1.greet.code is not g2.greet.code
    g1.greet.code.value = "def greet(self, greeting, name):\n    return f'{greeting} {name}'\n"
    assert g1(node("Ada")).value == "Hello Ada"
    assert g2(node("Ada")).value == "Hi, Ada!"
    assert Greeter.greet.code is not g1.greet.code  # the class-level one is separate
    assert g1.greet.op.name == "greet" and g1.greet.__name__ == "greet"


async def test_async_function_and_method():
    r = await async_double(node(21))
    assert isinstance(r, MessageNode) and r.value == 42
    assert r.parents[-1] is async_double.code
    g = Greeter("Hey")
    s = await g.shout(node("abc"))
    assert s.value == "ABC" and s.op.doc == "Upper-case text."
    async_double.code.value = "async def async_double(x):\n    return 3 * x\n"
    try:
        assert (await async_double(node(2))).value == 6
        async_double.code.value = "def async_double(x):\n    return x\n"
        with pytest.raises(ExecutionError, match="must stay an async def"):
            await async_double(node(2))
    finally:
        async_double.code.value = async_double.code.bundle.op.source


async def test_async_exception_becomes_exception_node():
    @bundle
    async def boom(x):
        await asyncio.sleep(0)
        raise RuntimeError(f"bad {x}")

    with pytest.raises(ExecutionError, match="bad 1") as info:
        await boom(node(1))
    assert isinstance(info.value.exception_node.value, RuntimeError)
    assert is_tracing()  # the flag was restored after the failure


def test_inspect_sees_async_bundles_and_bound_signatures():
    import inspect

    assert inspect.iscoroutinefunction(async_double)
    assert not inspect.iscoroutinefunction(add)
    g = Greeter("Hi")
    assert inspect.iscoroutinefunction(g.shout)
    assert not inspect.iscoroutinefunction(g.greet)
    assert list(inspect.signature(g.greet).parameters) == ["greeting", "name"]
    assert list(inspect.signature(add).parameters) == ["a", "b"]
    assert asyncio.iscoroutinefunction(async_double)


def test_bundles_under_no_trace_return_parentless_nodes():
    from optiforge.trace import no_trace

    a = node(1)
    with no_trace():
        r = add(a, 2)
        assert type(r) is Node and r.value == 3 and r.parents == ()
        with pytest.raises(ExecutionError) as info:
            add(a, "x")
        assert info.value.exception_node.parents == ()
    assert add(a, 2).parents[0] is a

    @no_trace()
    def quiet():
        return add(a, 5)

    assert quiet().parents == () and is_tracing()


class Base:
    def describe(self, x):
        return f"base {x}"


class Child(Base):
    @bundle(trainable=True)
    def describe(self, x):
        return "child " + super().describe(x)


def test_new_code_keeps_zero_argument_super_working():
    c = Child()
    assert c.describe(node(1)).value == "child base 1"
    c.describe.code.value = (
        "def describe(self, x):\n    return 'new ' + super().describe(x).upper()\n"
    )
    assert c.describe(node(2)).value == "new BASE 2"


def test_new_code_with_helpers_still_reads_live_globals_and_can_recurse():
    global FACTOR
    original = uses_global.code.value
    try:
        uses_global.code.value = (
            "import math\n\n"
            "def bump(v):\n    return v + FACTOR\n\n"
            "def uses_global(x):\n"
            "    return bump(x) if x > 3 else uses_global(x + 1) + math.floor(0.5)\n"
        )
        assert uses_global(node(1)).value == 14  # recursion calls the new function itself
        FACTOR = 20
        assert uses_global(node(5)).value == 25
        assert "bump" not in globals()
    finally:
        FACTOR = 10
        uses_global.code.value = original
