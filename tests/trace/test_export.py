"""Exports: JSON graph documents, networkx, DOT, Mermaid, HTML and `optiforge graph`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from optiforge.trace import (
    ExecutionError,
    GraphCycleError,
    Module,
    SerializationError,
    TraceError,
    bundle,
    graph_to_dict,
    load_graph,
    node,
    save_graph,
    to_dot,
    to_html,
    to_mermaid,
    to_networkx,
)


class Agent(Module):
    def __init__(self):
        self.offset = node(1, trainable=True, description="added at the end")

    @bundle(trainable=True)
    def scale(self, x):
        """Multiply x."""
        return x * 2

    def forward(self, x):
        return self.scale(x) + self.offset


@bundle
def crash(x):
    """Always fails."""
    raise ValueError(f"cannot use {x}")


def _graph():
    agent = Agent()
    y = agent(node(3))
    y.backward("The output should be 14.")
    return agent, y


def test_graph_to_dict_describes_every_node():
    _, y = _graph()
    doc = graph_to_dict(y)
    assert doc["format"] == "optiforge.graph/1"
    assert doc["outputs"] == ["add0"]
    by_id = {n["id"]: n for n in doc["nodes"]}
    assert set(by_id) == {"offset", "__code_scale", "int0", "scale0", "add0"}
    assert doc["nodes"][-1]["id"] == "add0"  # parents first
    add = by_id["add0"]
    assert add["kind"] == "message" and add["op"] == "add" and add["data"] == 7
    assert add["parents"] == ["scale0", "offset"] and add["argnames"] == ["x", "y"]
    assert add["feedback"] == "The output should be 14."
    code = by_id["__code_scale"]
    assert code["kind"] == "code" and code["code"].startswith("def scale(self, x):")
    assert by_id["offset"]["description"] == "added at the end"
    assert by_id["offset"]["trainable"] is True
    assert by_id["scale0"]["doc"] == "Multiply x."
    json.dumps(doc)  # JSON-ready


def test_exception_nodes_and_unserializable_values_export():
    with pytest.raises(ExecutionError) as info:
        crash(node(object()))
    doc = graph_to_dict(info.value.exception_node)
    err = doc["nodes"][-1]
    assert err["kind"] == "exception" and "ValueError" in err["traceback"]
    assert "data" not in doc["nodes"][0] and doc["nodes"][0]["value"].startswith("<object")
    json.dumps(doc)


def test_save_and_load_graph_round_trip(tmp_path):
    _, y = _graph()
    path = save_graph(y, tmp_path / "run.json")
    doc = load_graph(path)
    assert doc == json.loads(json.dumps(graph_to_dict(y)))
    assert to_dot(doc) == to_dot(y)
    assert to_mermaid(doc) == to_mermaid(y)


def test_to_networkx_has_attributes_and_edges():
    pytest.importorskip("networkx")  # an optional extra: optiforge[graph]
    _, y = _graph()
    g = to_networkx(y)
    assert set(g.nodes) == {"offset", "__code_scale", "int0", "scale0", "add0"}
    assert g.nodes["add0"]["value"] == "7" and g.nodes["add0"]["kind"] == "message"
    assert g.edges["scale0", "add0"]["argname"] == "x"
    assert g.edges["__code_scale", "scale0"]["argname"] == "__code"
    assert g.graph["outputs"] == ["add0"]
    import networkx as nx

    assert nx.is_directed_acyclic_graph(g)
    assert list(nx.topological_sort(g))[-1] == "add0"


def test_to_networkx_without_networkx_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "networkx", None)  # makes `import networkx` fail
    _, y = _graph()
    with pytest.raises(TraceError, match=r"optiforge\[graph\]"):
        to_networkx(y)
    assert "digraph" in to_dot(y)  # the other exports do not need it


def test_dot_output_is_valid_shape():
    _, y = _graph()
    dot = to_dot(y)
    assert dot.startswith("digraph trace {") and dot.rstrip().endswith("}")
    assert '"scale0" -> "add0" [label="x"];' in dot
    assert "penwidth=3" in dot  # the output is highlighted
    assert dot.count("->") == 4
    weird = node('say "hi"\\ now\nplease', name="q")
    assert '\\"hi\\"' in to_dot(weird + "!")
    if shutil.which("dot"):
        svg = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True)
        assert svg.returncode == 0 and "<svg" in svg.stdout


def test_mermaid_output_escapes_labels():
    _, y = _graph()
    text = to_mermaid(y)
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    assert sum("-->" in line for line in lines) == 4
    assert "-->|__code|" in text
    tricky = node('a "quoted" <tag> | pipe', name="t") + "x"
    out = to_mermaid(tricky)
    node_lines = [ln for ln in out.splitlines() if re.match(r"\s+n\d+\[", ln)]
    for ln in node_lines:
        label = ln[ln.index('["') + 2 : ln.rindex('"]')]
        assert '"' not in label and "<tag>" not in label and "|" not in label


def test_html_is_self_contained_and_embeds_the_graph():
    _, y = _graph()
    page = to_html(y, title="run <1>")
    assert page.startswith("<!DOCTYPE html>")
    assert "run &lt;1&gt;" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page and "<script src" not in page
    data = re.search(r'<script type="application/json" id="graph-data">(.*?)</script>', page, re.S)
    assert json.loads(data.group(1)) == json.loads(json.dumps(graph_to_dict(y)))
    tricky = node("</script><script>alert(1)</script>") + "!"
    assert "</script><script>alert(1)" not in to_html(tricky)


NODE_STUB = r"""
const fs = require("fs");
const html = fs.readFileSync(process.argv[2], "utf8");
const data = html.match(/<script type="application\/json" id="graph-data">([\s\S]*?)<\/script>/)[1];
const code = html.match(/<script>\n([\s\S]*?)<\/script>/)[1];
let created = {svg: 0, g: 0, rows: 0};
function makeEl(tag) {
  const e = {tag, children: [], attrs: {}, style: {}, textContent: "", innerHTML: "",
    classList: {add() {}, remove() {}, toggle() {}},
    setAttribute(k, v) { this.attrs[k] = v; }, appendChild(c) { this.children.push(c); return c; },
    addEventListener(ev, fn) { this["on" + ev] = fn; }};
  if (tag === "g") created.g++; if (tag === "svg") created.svg++; if (tag === "tr") created.rows++;
  return e;
}
const els = {};
global.document = {
  getElementById(id) { if (id === "graph-data") return {textContent: data}; return els[id] || (els[id] = makeEl(id)); },
  createElement: makeEl, createElementNS(ns, tag) { return makeEl(tag); },
};
eval(code);
const right = els["right"];
const texts = [];
(function walk(e) { if (e.textContent) texts.push(e.textContent); (e.children || []).forEach(walk); })(right);
console.log(JSON.stringify({created, detail: texts}));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_html_script_runs_and_shows_the_output_node(tmp_path):
    _, y = _graph()
    page = tmp_path / "g.html"
    page.write_text(to_html(y))
    stub = tmp_path / "run.js"
    stub.write_text(NODE_STUB)
    proc = subprocess.run(
        ["node", str(stub), str(page)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["created"] == {"svg": 1, "g": 5, "rows": 5}
    detail = "\n".join(out["detail"])
    assert "add0" in detail and "The output should be 14." in detail


def test_load_graph_rejects_bad_documents(tmp_path):
    def write(obj):
        p = tmp_path / "g.json"
        p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
        return p

    with pytest.raises(SerializationError, match="no such graph file"):
        load_graph(tmp_path / "missing.json")
    with pytest.raises(SerializationError, match="not valid JSON"):
        load_graph(write("{"))
    with pytest.raises(SerializationError, match="not an optiforge graph"):
        load_graph(write({"nodes": []}))
    base = {"format": "optiforge.graph/1", "outputs": []}
    with pytest.raises(SerializationError, match="unknown parent"):
        load_graph(write({**base, "nodes": [{"id": "a", "parents": ["zz"]}]}))
    with pytest.raises(SerializationError, match="appears twice"):
        load_graph(write({**base, "nodes": [{"id": "a"}, {"id": "a"}]}))
    with pytest.raises(SerializationError, match='one "argnames" entry per parent'):
        load_graph(
            write({**base, "nodes": [{"id": "a"}, {"id": "b", "parents": ["a"], "argnames": []}]})
        )
    with pytest.raises(GraphCycleError, match="cycle"):
        load_graph(
            write({**base, "nodes": [{"id": "a", "parents": ["b"]}, {"id": "b", "parents": ["a"]}]})
        )
    ok = load_graph(write({**base, "nodes": [{"id": "a"}, {"id": "b", "parents": ["a"]}]}))
    assert "flowchart TD" in to_mermaid(ok)


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "optiforge", "graph", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_cli_graph_renders_each_format(tmp_path):
    _, y = _graph()
    path = save_graph(y, tmp_path / "run.json")
    html_run = _cli(str(path))
    assert html_run.returncode == 0, html_run.stderr
    assert (tmp_path / "run.html").read_text().startswith("<!DOCTYPE html>")
    dot_run = _cli(str(path), "--format", "dot")
    assert dot_run.returncode == 0 and dot_run.stdout == to_dot(y)
    mm = _cli(str(path), "-f", "mermaid", "-o", str(tmp_path / "out" / "g.mmd"))
    assert mm.returncode == 0
    assert (tmp_path / "out" / "g.mmd").read_text() == to_mermaid(y)
    to_stdout = _cli(str(path), "-o", "-")
    assert to_stdout.stdout.startswith("<!DOCTYPE html>")


def test_cli_graph_help_and_errors(tmp_path):
    helped = _cli("--help")
    assert helped.returncode == 0
    assert "save_graph" in helped.stdout and "mermaid" in helped.stdout
    missing = _cli(str(tmp_path / "nope.json"))
    assert missing.returncode == 2
    assert "no such graph file" in missing.stderr and "Traceback" not in missing.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "optiforge.graph/1", "nodes": [{"id": "a", "parents": ["a"]}]}')
    cyc = _cli(str(bad))
    assert cyc.returncode == 2 and "cycle" in cyc.stderr
    wrong = _cli(str(bad), "--format", "png")
    assert wrong.returncode != 0 and "png" in wrong.stderr


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_html_for_a_large_graph_falls_back_to_a_table(tmp_path):
    x = node(0)
    for _ in range(1000):
        x = x + 1  # 2001 nodes: each add has a constant input
    page = tmp_path / "big.html"
    page.write_text(to_html(x))
    stub = tmp_path / "run.js"
    stub.write_text(NODE_STUB)
    proc = subprocess.run(
        ["node", str(stub), str(page)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["created"] == {"svg": 0, "g": 0, "rows": 2001}
