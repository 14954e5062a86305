"""Count failed parses of broken model replies, before and after the json-repair change.

    python benchmarks/json_repair_corpus.py

"Before" is the hand-written lenient parser that optiforge used until json-repair replaced
it (copied below verbatim from ``agents/optim/parsing.py`` and ``llm/structured.py``);
"after" is today's ``optiforge.agents.optim.parsing.extract_json_object`` (optimizer
replies) and ``optiforge.llm.structured.extract_json`` (structured output: the team).

Three inputs, all inside the repository:

1. ``tests/llm/broken_replies.json``: the broken-reply corpus of the tests. A parse fails
   when its result differs from the case's expected object; for the cases that must stay
   unparsed (a repair would change a value), accepting anything counts as a failure.
2. Replies derived from the committed runs: the committed journals
   (``benchmarks/results/2026-11-23/*/results.jsonl``) hold no raw reply text, only what
   was parsed from it (the team's formulations), the generated code and step summaries. So
   each recorded formulation is written back as JSON and broken in the ways 1.5B models
   break JSON (fence and prose, trailing commas, Python repr, unquoted keys, missing
   commas, cut after a complete constraint); the parse must give back the formulation (for
   the cut one: the formulation with the constraints written before the cut).
3. The structured-output failures the journals record (steps whose summary names a
   StructuredOutputError), counted as they are: their reply text was not recorded, so they
   cannot be re-parsed.

Prints one JSON document.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from optiforge.agents.optim.parsing import extract_json_object  # noqa: E402
from optiforge.llm.structured import extract_json  # noqa: E402

# --- the parser before json-repair (verbatim copies, for the "before" column) -------------

_OLD_FENCE = re.compile(r"```[a-zA-Z0-9_+-]*\s*\n?(.*?)```", re.DOTALL)
_OLD_STRUCT_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_OLD_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def _old_balanced_objects(text: str) -> list[str]:
    spans: list[str] = []
    depth = 0
    start = -1
    in_str: str | None = None
    escape = False
    for i, ch in enumerate(text):
        if in_str:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == in_str:
                in_str = None
            continue
        if ch == '"' and depth > 0:
            in_str = ch
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                spans.append(text[start : i + 1])
    return spans


def _old_loads_lenient(candidate: str) -> Any:
    candidate = candidate.strip()
    for attempt in (candidate, _OLD_TRAILING_COMMA.sub(r"\1", candidate)):
        try:
            return json.loads(attempt, strict=False)
        except json.JSONDecodeError:
            pass
    try:
        return ast.literal_eval(candidate)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    raise ValueError("not JSON")


def old_extract_json_object(text: str) -> dict[str, Any] | None:
    if not text:
        return None
    candidates = [text, *_OLD_FENCE.findall(text), *_old_balanced_objects(text)]
    opened = text.count("{") - text.count("}")
    if 0 < opened <= 3 and "{" in text:
        candidates.append(text[text.index("{") :] + "}" * opened)
    for cand in candidates:
        try:
            value = _old_loads_lenient(cand)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def old_extract_json(text: str) -> str | None:
    stripped = text.strip()
    candidates = [stripped]
    candidates += [m.group(1).strip() for m in _OLD_STRUCT_FENCE.finditer(text)]
    for cand in candidates:
        try:
            json.loads(cand)
            return cand
        except (json.JSONDecodeError, ValueError):
            pass
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                _, end = decoder.raw_decode(text, i)
            except json.JSONDecodeError:
                continue
            return text[i:end]
    return None


# --- counting ------------------------------------------------------------------------------


def _structured(extract, text: str) -> Any:
    raw = extract(text)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


PARSERS = {
    "optimizer_before": old_extract_json_object,
    "optimizer_after": extract_json_object,
    "structured_before": lambda t: _structured(old_extract_json, t),
    "structured_after": lambda t: _structured(extract_json, t),
}


def _count(cases: list[tuple[str, str, Any]]) -> dict[str, Any]:
    """cases: (kind, reply, expected). Failed = result != expected."""
    out: dict[str, Any] = {"cases": len(cases)}
    for name, parse in PARSERS.items():
        failed = [kind for kind, reply, expected in cases if parse(reply) != expected]
        out[f"failed_{name}"] = len(failed)
        out[f"failed_kinds_{name}"] = sorted(set(failed))
    return out


def corpus_cases() -> list[tuple[str, str, Any]]:
    path = ROOT / "tests" / "llm" / "broken_replies.json"
    return [(c["kind"], c["reply"], c["expected"]) for c in json.loads(path.read_text())]


def _mangles(f: dict[str, Any]) -> list[tuple[str, str, Any]]:
    pretty = json.dumps(f, indent=2)  # strings never hold a raw newline, so lines are syntax
    out = [
        ("fence and prose", "Here is the model:\n```json\n" + pretty + "\n```\nHope it helps.", f),
        ("trailing commas", re.sub(r"([^\s,\[{])(\n\s*[}\]])", r"\1,\2", pretty), f),
        ("python repr", repr(f), f),
        ("unquoted keys", re.sub(r'"(\w+)":', r"\1:", pretty), f),
        ("missing commas", re.sub(r",\n", "\n", pretty), f),
    ]
    cons = f.get("constraints") or []
    if list(f)[-1] == "constraints" and len(cons) >= 2:
        # Cut at max_tokens right after the second-to-last constraint's closing brace.
        head = json.dumps({**f, "constraints": cons[:-1]})
        cut = head[: head.rindex("]")] + ", "
        out.append(("cut after a constraint", cut, {**f, "constraints": cons[:-1]}))
    return out


def journal_cases() -> tuple[list[tuple[str, str, Any]], dict[str, Any]]:
    cases: list[tuple[str, str, Any]] = []
    recorded = {"records": 0, "raw_reply_texts": 0, "structured_output_failures": 0}
    for path in sorted((ROOT / "benchmarks" / "results").glob("*/*/results.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            recorded["records"] += 1
            recorded["raw_reply_texts"] += sum(k in rec for k in ("reply", "raw", "replies"))
            recorded["structured_output_failures"] += sum(
                "StructuredOutputError" in (s.get("summary") or "") for s in rec.get("steps") or []
            )
            if isinstance(rec.get("formulation"), dict):
                cases += _mangles(rec["formulation"])
    return cases, recorded


def main() -> None:
    corpus = corpus_cases()
    derived, recorded = journal_cases()
    by_kind = {}
    for kind in sorted({k for k, _, _ in derived}):
        sub = [c for c in derived if c[0] == kind]
        by_kind[kind] = {k: v for k, v in _count(sub).items() if not k.startswith("failed_kinds")}
    doc = {
        "command": "python benchmarks/json_repair_corpus.py",
        "test_corpus": {
            **_count(corpus),
            "must_stay_unparsed": sum(e is None for _, _, e in corpus),
        },
        "journal_derived": {
            "formulations": sum(k == "python repr" for k, _, _ in derived),
            **{k: v for k, v in _count(derived).items() if not k.startswith("failed_kinds")},
            "by_kind": by_kind,
        },
        "journal_recorded": recorded,
    }
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
