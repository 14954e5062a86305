"""The package layering of docs/DESIGN.md, enforced on every import, and no import cycles.

Every module under ``optiforge/`` is parsed with :mod:`ast`; every ``import`` and
``from ... import`` counts, including those inside functions (lazy imports are still
dependencies). A package may import only the packages its row of :data:`ALLOWED` names.
Edges are between files: ``from optiforge.solvers.ir import ModelIR`` is an edge to
``optiforge/solvers/ir.py``; a name imported from a package is an edge to the submodule
when one has that name, else to the package's ``__init__``.

:data:`KNOWN_DEBT` lists what the code still does against the design. The test fails on
anything new *and* on an entry that no longer happens, so the list only ever shrinks.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "optiforge"

# Who may import whom (besides itself). "optiforge" is the root package (its __init__ holds
# only the version), "errors" the shared exception base and "fileio" the atomic file write
# (standard library only): every layer may use them.
_BASE = {"optiforge", "errors", "fileio"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "fileio": set(),
    "trace": set(),
    "llm": set(),
    "solvers": set(),
    "datasets": set(),
    "prompts": set(),
    "config": set(),
    "agents": {"trace", "llm", "prompts", "solvers", "config"},
    "evals": {"datasets", "solvers", "config", "agents"},
    "cli": {"trace", "llm", "prompts", "solvers", "datasets", "agents", "evals", "config"},
    "__main__": {"cli"},
}
# evals receives the agent as a callable; only tuning builds one (and writes the feedback
# its optimizer reads, from prompts/tune).
AGENTS_FROM_EVALS = {"optiforge.evals.tune"}

# What the code still does against the design. Issue 13 paid off the last entries (the
# trace and solvers cycles, the sandbox reading config); keep it empty: fix the import
# rather than list it.
KNOWN_DEBT: set[str] = set()


# Inside llm, the serving code (model store, embedded server, vLLM launcher) sits apart from
# the client: serving may use the client's modules, nothing else in llm may import serving.
# The old import paths optiforge.llm.{local,store,vllm} are aliases of the serving modules
# (each replaces itself in sys.modules), so they are the one exception.
SERVING = "optiforge.llm.serving"
SERVING_ALIASES = {"optiforge.llm.local", "optiforge.llm.store", "optiforge.llm.vllm"}


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file below ``root`` (a package dir)."""
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = f.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same top package it imports (anywhere in the file)."""
    mods = module_files(root)
    top = root.name
    graph: dict[str, set[str]] = defaultdict(set)
    for name, f in mods.items():
        package = name if f.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"), str(f))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in mods]
                # A name imported from a package is an edge to its __init__ unless every
                # name is a submodule.
                targets = subs if len(subs) == len(node.names) else [module, *subs]
            for t in targets:
                if t != top and not t.startswith(top + "."):
                    continue
                while t not in mods and "." in t:  # `import optiforge.x.y` names a module
                    t = t.rpartition(".")[0]
                if t != name:
                    graph[name].add(t)
    return graph


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[0] if len(parts) == 1 else parts[1]


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """``layer: a -> b`` for every import that points against :data:`ALLOWED`."""
    out = []
    for a, targets in graph.items():
        la = layer_of(a)
        for b in sorted(targets):
            lb = layer_of(b)
            if lb == la or lb in _BASE:
                continue
            allowed = ALLOWED.get(la, set())
            if la == "evals" and a in AGENTS_FROM_EVALS:
                allowed = allowed | {"prompts"}  # tuning renders its judge's feedback templates
            elif la == "evals":
                allowed = allowed - {"agents"}
            if lb not in allowed:
                out.append(f"layer: {a} -> {b}")
    return sorted(out)


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
    """``cycle: a <> b <> ...`` for every strongly connected set of two or more files."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[str] = []
    counter = 0

    def visit(v: str) -> None:  # Tarjan's algorithm
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append("cycle: " + " <> ".join(sorted(comp)))

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return sorted(found)


def private_imports(root: Path) -> list[str]:
    """``private: a imports b._name`` for every ``_name`` imported from another module."""
    out = []
    for name, f in module_files(root).items():
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"), str(f))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(root.name):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        out.append(f"private: {name} imports {node.module}.{a.name}")
    return sorted(out)


def test_no_private_name_is_imported_across_modules():
    assert private_imports(ROOT) == []


def test_a_planted_private_import_is_caught(tmp_path):
    root = _plant(
        tmp_path,
        {"__init__.py": "", "a.py": "def _x(): ...\n", "b.py": "from optiforge.a import _x\n"},
    )
    assert private_imports(root) == ["private: optiforge.b imports optiforge.a._x"]


def test_every_layer_is_known():
    layers = {layer_of(m) for m in module_files(ROOT)}
    assert layers <= set(ALLOWED) | {"optiforge"}, sorted(layers - set(ALLOWED))


def test_imports_follow_the_design_and_have_no_cycles():
    graph = import_graph(ROOT)
    found = set(layer_violations(graph)) | set(import_cycles(graph))
    new = sorted(found - KNOWN_DEBT)
    fixed = sorted(KNOWN_DEBT - found)
    assert not new, "imports against docs/DESIGN.md:\n" + "\n".join(new)
    assert not fixed, "fixed, so remove from KNOWN_DEBT:\n" + "\n".join(fixed)


def serving_violations(graph: dict[str, set[str]]) -> list[str]:
    """``serving: a -> b`` for every llm module outside serving that imports serving."""
    out = []
    for a, targets in graph.items():
        if not a.startswith("optiforge.llm") or a.startswith(SERVING) or a in SERVING_ALIASES:
            continue
        out += [f"serving: {a} -> {b}" for b in sorted(targets) if b.startswith(SERVING)]
    return sorted(out)


def test_llm_reads_no_settings_of_its_own():
    # Settings are passed in: no module of llm (client or serving) imports config.
    graph = import_graph(ROOT)
    assert [v for v in layer_violations(graph) if v.startswith("layer: optiforge.llm")] == []


def test_the_client_does_not_import_the_serving_code():
    graph = import_graph(ROOT)
    assert any(m.startswith(SERVING + ".") for m in module_files(ROOT))  # the layout is real
    for alias in SERVING_ALIASES:  # old paths are aliases of serving modules, not copies
        text = module_files(ROOT)[alias].read_text(encoding="utf-8")
        assert "sys.modules[__name__]" in text and len(text.splitlines()) < 15, alias
    assert serving_violations(graph) == []


def test_a_planted_client_to_serving_import_is_caught(tmp_path):
    root = _plant(
        tmp_path,
        {
            "__init__.py": "",
            "llm/__init__.py": "",
            "llm/client.py": "def f():\n    from optiforge.llm.serving.local import x\n",
            "llm/serving/__init__.py": "",
            "llm/serving/local.py": "from optiforge.llm.client import f\n",
        },
    )
    assert serving_violations(import_graph(root)) == [
        "serving: optiforge.llm.client -> optiforge.llm.serving.local"
    ]


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "optiforge"
    for rel, text in files.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text, encoding="utf-8")
    return root


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (  # a lazy import inside a function still counts
            {
                "__init__.py": "",
                "llm/__init__.py": "",
                "llm/client.py": "def f():\n    from optiforge.agents import team\n",
                "agents/__init__.py": "",
                "agents/team.py": "",
            },
            ["layer: optiforge.llm.client -> optiforge.agents.team"],
        ),
        (  # a relative import climbing into another layer
            {
                "__init__.py": "",
                "trace/__init__.py": "",
                "trace/nodes.py": "from ..config import load\n",
                "config.py": "",
            },
            ["layer: optiforge.trace.nodes -> optiforge.config"],
        ),
        (  # evals may import agents only for tuning
            {
                "__init__.py": "",
                "evals/__init__.py": "",
                "evals/runner.py": "import optiforge.agents.team\n",
                "evals/tune.py": "from optiforge.agents import team\n",
                "agents/__init__.py": "",
                "agents/team.py": "",
            },
            ["layer: optiforge.evals.runner -> optiforge.agents.team"],
        ),
    ],
)
def test_a_planted_layer_violation_is_caught(tmp_path, files, expected):
    assert layer_violations(import_graph(_plant(tmp_path, files))) == expected


def test_a_planted_cycle_is_caught(tmp_path):
    root = _plant(
        tmp_path,
        {
            "__init__.py": "",
            "solvers/__init__.py": "",
            "solvers/a.py": "from optiforge.solvers.b import x\n",
            "solvers/b.py": "def f():\n    from . import a\n",
            "solvers/c.py": "from optiforge.solvers import a\n",
        },
    )
    graph = import_graph(root)
    assert import_cycles(graph) == ["cycle: optiforge.solvers.a <> optiforge.solvers.b"]
    assert layer_violations(graph) == []
