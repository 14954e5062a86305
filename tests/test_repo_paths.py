"""The repository stands alone: no tracked file refers to a path outside it.

Rule, checked on every file ``git ls-files`` lists (text files; binary files are skipped):

1. No absolute path into a developer machine's home or work tree: a path that *starts*
   with the work tree, the root user's home, ``/home/NAME/``, ``/Users/NAME/`` or
   ``C:\\Users\\NAME``. "Starts" means the slash is not preceded by a path character, so
   ``/tmp/x/work/program.py`` (a folder named work inside another path) is not a hit.
   User paths written with a tilde (the model cache under the user's home) are portable and
   allowed; so are system paths such as ``/tmp`` and ``/usr/bin/env``.
2. No relative path that climbs out of the repository: every ``../`` path is resolved
   against the directory of the file that holds it and must stay inside the checkout (a
   docs link to ``../README.md`` is fine). Paths that name the sibling shared tree are
   always hits, wherever they resolve.

Every hit is reported as ``file:line: text``. The few intentional exceptions are listed in
``ALLOWED`` with the reason.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_LEAD = r"(?<![\w.~/\\-])"
ABSOLUTE = re.compile(
    _LEAD + r"(?:/(?:work|root|home/[^/\s\"'<>`]+|Users/[^/\s\"'<>`]+)/|[A-Za-z]:\\\\?Users\\)"
)
CLIMB = re.compile(r"(?<![\w.])((?:\.\./)+)([^\s\"'<>`()\[\],;:]*)")
SHARED = re.compile(r"\.\./+shared\b")

#: (file, substring of the line) -> why the hit is intended.
ALLOWED: dict[tuple[str, str], str] = {
    (
        "tests/test_cli_basics.py",
        "../../etc/passwd",
    ): "the test checks that a prompt path climbing out of the prompts folder is refused",
    (
        "optiforge/solvers/isolation.py",
        "(e.g. ``/root/.pyenv`` for ``/root``)",
    ): "docstring example of a blocked home folder the sandbox re-exposes for Python",
    (
        "tests/solvers/test_sandbox_hostile.py",
        'os.makedirs(f"{d}/home/.cache/optiforge")',
    ): "a folder made inside a temporary directory (the f-string puts it under {d})",
    (
        "tests/llm/test_vllm_launcher.py",
        "/home/x/vllm-models/smol",
    ): "a made-up model folder in a unit test of the vLLM command line; never opened",
}


def _tracked_files() -> list[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (an sdist or an export): nothing tracked to scan")
    return [p for p in out.decode("utf-8", "replace").split("\0") if p]


def find_outside_paths(rel: str, text: str) -> list[str]:
    """The hits of the rule in one file's text, as ``file:line: excerpt`` strings."""
    hits = []
    base = (ROOT / rel).parent
    for lineno, line in enumerate(text.splitlines(), 1):
        reasons = []
        for m in ABSOLUTE.finditer(line):
            reasons.append(("absolute dev-machine path", m.start(), m.group(0)))
        for m in SHARED.finditer(line):
            reasons.append(("path to the shared tree next to the repository", m.start(), ""))
        for m in CLIMB.finditer(line):
            target = (base / (m.group(1) + m.group(2))).resolve()
            if not target.is_relative_to(ROOT):
                reasons.append(("relative path that climbs out of the repository", m.start(), ""))
        for why, pos, _ in reasons:
            if any(f == rel and sub in line for (f, sub) in ALLOWED):
                continue
            excerpt = line[max(0, pos - 40) : pos + 80].strip()
            hits.append(f"{rel}:{lineno}: {why}: {excerpt}")
    return hits


def test_no_tracked_file_refers_outside_the_repository() -> None:
    hits: list[str] = []
    this = Path(__file__).resolve().relative_to(ROOT).as_posix()
    for rel in _tracked_files():
        if rel == this:
            continue  # the rule's own examples below
        path = ROOT / rel
        if not path.is_file():
            continue  # deleted in the work tree but still in the index
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        hits += find_outside_paths(rel, data.decode("utf-8", "replace"))
    assert not hits, f"{len(hits)} reference(s) outside the repository:\n" + "\n".join(hits[:50])


def test_allowed_exceptions_still_exist() -> None:
    """An exception whose line is gone must be removed, so the list cannot grow stale."""
    for (rel, sub), _why in ALLOWED.items():
        path = ROOT / rel
        assert path.exists() and sub in path.read_text(encoding="utf-8"), (rel, sub)


@pytest.mark.parametrize(
    "line",
    [
        'GOLD = Path("/work/shared/datasets/x.jsonl")',
        "see /root/.pyenv/versions/3.11/lib",
        "cd /home/alice/src && run",
        'p = "/Users/bob/data"',
        r"C:\Users\carol\data",
        'open("../shared/datasets/x")',
        "load('../../../../../../etc/passwd')",
    ],
)
def test_rule_catches(line: str) -> None:
    assert find_outside_paths("tests/solvers/example.py", line)


@pytest.mark.parametrize(
    "line",
    [
        "models live in ~/.cache/optiforge/models",
        'File "/tmp/optiforge-sbx-1/work/program.py", line 3',
        "#!/usr/bin/env bash",
        "[datasets](../optiforge/datasets/data/README.md)",
        "from ..records import X",
        "https://example.org/work/items",
        "optiforge/work/x.py",
    ],
)
def test_rule_allows(line: str) -> None:
    assert not find_outside_paths("docs/example.md", line)
