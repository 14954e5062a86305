"""The experience library: worked formulations of solved training problems, retrieved as
few-shot examples for the formulator (issue #12, lever 4; ``TeamConfig.experience``).

- **Building** (``optiforge experience build``): :mod:`optiforge.evals.experience` picks
  the problems of eval runs that were solved and checked correct against their answers,
  and refuses any problem of a held-out sample (only training problems may enter);
  :func:`make_library` turns each into an entry: the problem's id and text, its
  formulation as the formulator writes it (a
  :class:`~optiforge.agents.team.schemas.FormulationDraft`) and a one- or two-sentence
  insight, distilled by a model (the bundled ``distill`` op with the ``experience_insight``
  prompt) or derived from the constraint kinds (:func:`rule_insight`) without one.
- **The file**: JSON lines; the first is a header (format, version, when, from which runs,
  at which commit), each other line one entry. A malformed file fails with an
  :class:`ExperienceError` naming the file and line.
- **Retrieval** (:meth:`ExperienceLibrary.retrieve`): BM25 over the problem texts
  (`bm25s <https://github.com/xhluca/bm25s>`_: maintained, needs only numpy, ~270 kB
  installed), the problem itself (same id or identical text) excluded.
- **Injection** (:func:`fit_examples`): the retrieved entries that fit the local server's
  4096-token context (the formulator's prompt and its reply must fit too) become
  (problem, formulation JSON) pairs for
  :func:`~optiforge.agents.team.roles.formulator_messages`, and their insights a short block.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from optiforge.agents.team.schemas import (
    DraftConstraint,
    DraftObjective,
    DraftVariable,
    FormulationDraft,
)
from optiforge.agents.team.state import TeamError
from optiforge.trace import bundle, no_trace, node

#: The ``format`` of a library file's header line, and the version this code reads.
EXPERIENCE_FORMAT = "optiforge.experience"
EXPERIENCE_VERSION = 1
#: Where the shipped library lives (used when ``TeamConfig.experience_library`` is None).
DEFAULT_LIBRARY = Path(__file__).resolve().parent / "data" / "experience.jsonl"
#: The prompt the ``distill`` op asks the model with (``optiforge/prompts/team/``).
INSIGHT_PROMPT = "team/experience_insight"
#: The local server's context per slot, the formulator's reply allowance, and a
#: conservative characters-per-token rate for prompts of prose and compact JSON
#: (Qwen2.5's tokenizer measured ~3.6 on the formulator's prompt; JSON is denser).
CONTEXT_TOKENS = 4096
REPLY_TOKENS = 900
CHARS_PER_TOKEN = 3.0
#: Tokens kept free for the chat template and rounding.
MARGIN_TOKENS = 150
#: At most this many characters of examples (problem texts plus formulations) per prompt.
MAX_EXAMPLE_CHARS = 3000
#: The longest insight the model may write (a rule insight may be up to twice as long).
MAX_INSIGHT_CHARS = 300

_WS = re.compile(r"\s+")
_CMP = re.compile(r"(<=|>=|==|=<|=>|<|>|=)")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER_TOKEN = re.compile(r"^[0-9_]+$")


class ExperienceError(TeamError):
    """An experience library cannot be made, read or used (malformed file, no library, a
    formulation without a draft form)."""


class LibraryHeader(BaseModel):
    """The first line of a library file: what it is and what it was built from."""

    format: Literal["optiforge.experience"] = EXPERIENCE_FORMAT
    version: int = EXPERIENCE_VERSION
    built_at: str = ""
    #: The optiforge commit the library was built with (and whether the tree was dirty).
    commit: str | None = None
    dirty: bool | None = None
    #: The eval runs it was built from: path, dataset, agent, model, the runs' commit.
    runs: list[dict[str, Any]] = Field(default_factory=list)
    #: The scoring rule an answer had to pass.
    rule: str = ""
    #: How insights were made: ``"llm"`` (with ``model``) or ``"rule"``.
    insights: str = "rule"
    model: str | None = None
    entries: int = 0


class ExperienceEntry(BaseModel):
    """One solved, checked training problem."""

    id: str
    dataset: str = ""
    text: str = Field(min_length=1)
    #: The worked formulation, exactly as the formulator's response_format writes it.
    formulation: FormulationDraft
    insight: str = Field(default="", max_length=2 * MAX_INSIGHT_CHARS)
    #: ``"llm"`` or ``"rule"`` (the deterministic fallback).
    insight_from: Literal["llm", "rule"] = "rule"
    #: The checked answer (the objective that matched the ground truth).
    answer: float | None = None
    #: Index into the header's ``runs`` of the run it came from.
    run: int | None = None

    def formulation_json(self) -> str:
        """The formulation as compact JSON (what the formulator would reply)."""
        return json.dumps(self.formulation.model_dump(), separators=(",", ":"))


class Insight(BaseModel):
    """The ``distill`` op's structured reply."""

    insight: str = Field(max_length=MAX_INSIGHT_CHARS)


@dataclass
class Hit:
    """One retrieved entry and its BM25 score."""

    entry: ExperienceEntry
    score: float


@dataclass(eq=False)
class Recall:
    """What the ``recall`` op retrieved for a problem and what fits the prompt.

    ``examples`` are (problem text, formulation JSON) pairs for the formulator's messages;
    ``insights`` the entries' insights; ``left_out`` the ids retrieved but too long to fit.
    """

    examples: list[tuple[str, str]] = field(default_factory=list)
    insights: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    budget_chars: int = 0

    def __repr__(self) -> str:
        shown = ", ".join(f"{i} ({s:.2f})" for i, s in zip(self.ids, self.scores, strict=True))
        out = f"Recall({len(self.examples)} example(s): {shown or 'none'}"
        if self.insights:
            out += "; insights: " + " | ".join(self.insights)
        return out + ")"


def normalize_text(text: str) -> str:
    """The text as compared for self-exclusion and held-out matching (case and spacing)."""
    return _WS.sub(" ", (text or "").strip().lower())


def _tokens(texts: Sequence[str]) -> list[list[str]]:
    import bm25s

    out = bm25s.tokenize(list(texts), stopwords="en", return_ids=False, show_progress=False)
    return [[t for t in toks if not _NUMBER_TOKEN.match(t)] for toks in out]


class ExperienceLibrary:
    """A loaded library: its header, entries and a BM25 index over their texts."""

    def __init__(
        self,
        entries: Iterable[ExperienceEntry],
        header: LibraryHeader | None = None,
        path: Path | None = None,
    ) -> None:
        self.entries = list(entries)
        self.header = header or LibraryHeader(entries=len(self.entries))
        self.path = path
        self._index: Any = None

    def __len__(self) -> int:
        return len(self.entries)

    # -- file ------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> ExperienceLibrary:
        """Read a library file; :class:`ExperienceError` names the line of anything wrong."""
        p = Path(path)
        if not p.is_file():
            raise ExperienceError(
                f"no experience library at {p}; build one with `optiforge experience build "
                "RUN_DIR --out FILE` from eval runs on training problems"
            )
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ExperienceError(f"{p}: cannot read the experience library ({exc})") from None
        numbered = [(n, ln) for n, ln in enumerate(lines, 1) if ln.strip()]
        if not numbered:
            raise ExperienceError(f"{p}: empty file; an experience library starts with a header")
        n0, first = numbered[0]
        header_raw = _json_line(p, n0, first)
        if not isinstance(header_raw, dict) or header_raw.get("format") != EXPERIENCE_FORMAT:
            raise ExperienceError(
                f"{p}, line {n0}: not an experience library header (expected "
                f'"format": "{EXPERIENCE_FORMAT}")'
            )
        if header_raw.get("version") != EXPERIENCE_VERSION:
            raise ExperienceError(
                f"{p}, line {n0}: experience library version {header_raw.get('version')!r}; "
                f"this optiforge reads version {EXPERIENCE_VERSION}: rebuild it with "
                "`optiforge experience build`"
            )
        try:
            header = LibraryHeader.model_validate(header_raw)
        except ValidationError as exc:
            raise ExperienceError(f"{p}, line {n0}: bad header ({_first_error(exc)})") from None
        entries: list[ExperienceEntry] = []
        seen: dict[str, int] = {}
        for n, ln in numbered[1:]:
            raw = _json_line(p, n, ln)
            try:
                entry = ExperienceEntry.model_validate(raw)
            except ValidationError as exc:
                raise ExperienceError(f"{p}, line {n}: bad entry ({_first_error(exc)})") from None
            if entry.id in seen:
                raise ExperienceError(
                    f"{p}, line {n}: duplicate entry {entry.id!r} (first on line {seen[entry.id]})"
                )
            seen[entry.id] = n
            entries.append(entry)
        if header.entries != len(entries):
            raise ExperienceError(
                f"{p}: the header says {header.entries} entries but the file has "
                f"{len(entries)}; the file was cut or edited by hand: rebuild it"
            )
        return cls(entries, header, p)

    def dumps(self) -> str:
        """The library as file text: the header line, then one line per entry."""
        header = self.header.model_copy(update={"entries": len(self.entries)})
        lines = [json.dumps(header.model_dump(), ensure_ascii=False)]
        lines += [json.dumps(e.model_dump(), ensure_ascii=False) for e in self.entries]
        return "\n".join(lines) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write the library atomically; returns the path."""
        from optiforge.fileio import write_text_atomic

        return write_text_atomic(path, self.dumps())

    # -- retrieval -------------------------------------------------------------------------
    def _bm25(self) -> Any:
        if self._index is None:
            import bm25s

            index = bm25s.BM25()
            # bm25s needs a non-empty vocabulary; a library of texts without words is empty.
            corpus = _tokens([e.text for e in self.entries])
            if any(corpus):
                index.index(corpus, show_progress=False)
                self._index = index
            else:
                self._index = False
        return self._index

    def retrieve(self, problem: str, k: int = 2, *, exclude_id: str | None = None) -> list[Hit]:
        """The ``k`` entries whose texts are most similar to ``problem`` by BM25, best
        first (ties: library order). The problem itself (``exclude_id``, or an entry with
        the same text) and entries sharing no word with it are never returned."""
        if k < 1 or not self.entries:
            return []
        index = self._bm25()
        query = _tokens([problem])[0]
        if index is False or not query:
            return []
        scores = index.get_scores(query)
        own = normalize_text(problem)
        order = sorted(range(len(self.entries)), key=lambda i: (-float(scores[i]), i))
        hits: list[Hit] = []
        for i in order:
            e, s = self.entries[i], float(scores[i])
            if s <= 0:
                break
            if (exclude_id is not None and e.id == exclude_id) or normalize_text(e.text) == own:
                continue
            hits.append(Hit(e, round(s, 4)))
            if len(hits) == k:
                break
        return hits


_LOADED: dict[tuple[str, float], ExperienceLibrary] = {}


def load_library(path: str | Path | None = None) -> ExperienceLibrary:
    """The library at ``path`` (None: the shipped one), loaded once per file version."""
    p = Path(path) if path is not None else DEFAULT_LIBRARY
    if path is None and not p.is_file():
        raise ExperienceError(
            "TeamConfig(experience=True) needs an experience library, and this optiforge "
            f"ships none ({p} is missing): build one with `optiforge experience build "
            "RUN_DIR --out FILE` from eval runs on training problems and pass it with "
            "--experience-library FILE (Python: TeamConfig(experience_library=FILE)), or "
            "leave the lever out (--levers all,-experience)"
        )
    try:
        key = (str(p.resolve()), p.stat().st_mtime)
    except OSError:
        return ExperienceLibrary.load(p)  # raises the clear "no library" error
    lib = _LOADED.get(key)
    if lib is None:
        lib = _LOADED[key] = ExperienceLibrary.load(p)
    return lib


def _json_line(path: Path, lineno: int, line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError as exc:
        raise ExperienceError(f"{path}, line {lineno}: not valid JSON ({exc})") from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(x) for x in err.get("loc", ()))
    return f"{where}: {err.get('msg', '')}" if where else str(err.get("msg", exc))


# -- injection ------------------------------------------------------------------------------
def example_budget(system_chars: int, problem_chars: int) -> int:
    """Characters of examples that fit one formulator prompt: the context less the reply,
    a margin, the system prompt and the problem, at most :data:`MAX_EXAMPLE_CHARS`."""
    room = (CONTEXT_TOKENS - REPLY_TOKENS - MARGIN_TOKENS) * CHARS_PER_TOKEN
    return max(0, min(MAX_EXAMPLE_CHARS, int(room) - system_chars - problem_chars))


def fit_examples(hits: Sequence[Hit], budget_chars: int) -> Recall:
    """The hits that fit ``budget_chars`` (text + formulation + insight each), best first;
    one too long is left out and the next one tried."""
    out = Recall(budget_chars=budget_chars)
    used = 0
    for h in hits:
        shot = h.entry.formulation_json()
        size = len(h.entry.text) + len(shot) + len(h.entry.insight) + 60
        if used + size > budget_chars:
            out.left_out.append(h.entry.id)
            continue
        used += size
        out.examples.append((h.entry.text, shot))
        if h.entry.insight:
            out.insights.append(h.entry.insight)
        out.ids.append(h.entry.id)
        out.scores.append(h.score)
    return out


# -- building -------------------------------------------------------------------------------
def draft_from_ir(ir: dict[str, Any]) -> FormulationDraft:
    """The journal's formulation (a ModelIR dict) as the formulator's draft: variables with
    description, units and domain; the objective; each constraint with its source words.
    A variable bound other than ``lb = 0`` becomes a constraint. Raises
    :class:`ExperienceError` when it does not fit the draft's shape (sets or parameters,
    indexed variables or constraints, free variables, names or expressions too long)."""
    if not isinstance(ir, dict) or not ir.get("variables") or not ir.get("objective"):
        raise ExperienceError("no variables or objective")
    if ir.get("sets") or ir.get("parameters"):
        raise ExperienceError("a model with sets or parameters has no draft form")
    try:
        variables, extra = [], []
        for v in ir["variables"]:
            if v.get("index_sets"):
                raise ExperienceError(f"indexed variable {v.get('name')!r}")
            name = v["name"]
            variables.append(
                DraftVariable(
                    name=name,
                    description=(v.get("description") or "")[:120],
                    units=(v.get("units") or "")[:30],
                    domain=v.get("domain") or "continuous",
                )
            )
            lb, ub = v.get("lb", 0.0), v.get("ub")
            if lb is None:  # a draft's variables are non-negative
                raise ExperienceError(f"free variable {name!r}")
            if lb != 0 and v.get("domain") != "binary":
                extra.append(DraftConstraint(source="", expression=f"{name} >= {lb:g}"))
            if ub is not None and v.get("domain") != "binary":
                extra.append(DraftConstraint(source="", expression=f"{name} <= {ub:g}"))
        obj = ir["objective"]
        constraints = []
        for c in ir.get("constraints") or []:
            if c.get("for_all"):
                raise ExperienceError(f"indexed constraint {c.get('name')!r}")
            constraints.append(
                DraftConstraint(source=(c.get("source") or "")[:200], expression=c["expression"])
            )
        return FormulationDraft(
            variables=variables,
            objective=DraftObjective(sense=obj["sense"], expression=obj["expression"]),
            constraints=constraints + extra,
        )
    except ValidationError as exc:
        raise ExperienceError(f"does not fit the draft schema ({_first_error(exc)})") from None
    except (KeyError, TypeError) as exc:
        raise ExperienceError(f"malformed formulation ({type(exc).__name__}: {exc})") from None


def _split(expr: str) -> tuple[str, str, str] | None:
    parts = _CMP.split(expr, maxsplit=1)
    if len(parts) != 3:
        return None
    return parts[0].strip(), parts[1], parts[2].strip()


def constraint_kinds(draft: FormulationDraft) -> dict[str, int]:
    """Counts of the draft's constraint kinds: ``limit`` (terms <= constant), ``minimum``
    (terms >= constant), ``equality``, ``bound`` (one variable against a constant, the
    non-negativity ones left out), ``ratio`` (variables on both sides: "at least 3 times
    as many", "at most 40 % of all") and ``other``."""
    names = {v.name for v in draft.variables}
    kinds: dict[str, int] = {}
    for c in draft.constraints:
        got = _split(c.expression)
        if got is None:
            kind = "other"
        else:
            lhs, op, rhs = got
            lv = {t for t in _IDENT.findall(lhs) if t in names}
            rv = {t for t in _IDENT.findall(rhs) if t in names}
            if lv and rv:
                kind = "ratio"
            elif not (lv or rv):
                kind = "other"
            else:
                side, const = (lhs, rhs) if lv else (rhs, lhs)
                flipped = not lv
                up = op in ("<=", "=<", "<")
                down = op in (">=", "=>", ">")
                if flipped:
                    up, down = down, up
                terms = len(re.findall(r"[A-Za-z_]\w*", side))
                try:
                    zero = float(const) == 0
                except ValueError:
                    zero = False
                if op in ("=", "=="):
                    kind = "equality"
                elif terms == 1:
                    if down and zero:
                        continue  # non-negativity says nothing about the problem
                    kind = "bound"
                else:
                    kind = "limit" if up else "minimum" if down else "other"
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


_KIND_WORDS = {
    "limit": (
        "resource limit",
        "resource limits",
        "(<=, one per resource: the sum of each product's use times its variable)",
    ),
    "minimum": ("minimum requirement", "minimum requirements", "(>=)"),
    "ratio": ("ratio between decisions", "ratios between decisions", ""),
    "equality": ("equality", "equalities", ""),
    "bound": ("bound on one variable", "bounds on single variables", ""),
    "other": ("other constraint", "other constraints", ""),
}


def rule_insight(draft: FormulationDraft) -> str:
    """A deterministic insight from the draft's shape: sense, domains and constraint
    kinds, with the advice that belongs to the kinds present (one or two sentences)."""
    domains = sorted({v.domain for v in draft.variables})
    n = len(draft.variables)
    kinds = constraint_kinds(draft)
    parts = []
    for k in ("limit", "minimum", "ratio", "equality", "bound", "other"):
        c = kinds.get(k, 0)
        if c:
            one, many, _ = _KIND_WORDS[k]
            parts.append(f"{c} {one if c == 1 else many}")
    first = (
        f"{draft.objective.sense.capitalize()} over {n} {'/'.join(domains)} "
        f"variable{'s' if n != 1 else ''}"
        + (f" with {', '.join(parts)}." if parts else " with no constraints beyond signs.")
    )
    if kinds.get("ratio"):
        advice = (
            "Write 'A at least k times B' as A >= k*B and 'A at most p% of the total' as "
            "A <= p/100*(sum of all), with the subject of the sentence on the left."
        )
    elif kinds.get("limit"):
        advice = (
            "Give each resource its own constraint: the sum over products of the amount each "
            "uses times its variable, at most the amount available."
        )
    elif kinds.get("minimum"):
        advice = "Each stated requirement becomes one >= constraint on the total it names."
    else:
        advice = "Take every number from the text and attach it to the variable it describes."
    return f"{first} {advice}"


@dataclass
class BuildReport:
    """What :func:`make_library` made: the library, and what was read and left out."""

    library: ExperienceLibrary
    read: int = 0
    kept: int = 0
    #: Why -> ids of the problems left out (the selection's reasons first).
    skipped: dict[str, list[str]] = field(default_factory=dict)
    llm_failures: int = 0

    def skip(self, why: str, pid: str) -> None:
        self.skipped.setdefault(why, []).append(pid)


class _Distiller:
    """The ``distill`` op: one model call per entry, with the experience_insight prompt."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm

    @bundle(
        name="distill",
        doc="The model reads a solved training problem and its checked formulation with the "
        "experience_insight prompt and states, in one or two sentences, the modelling lesson "
        "that carries over to similar problems.",
    )
    async def distill(self, problem: str, formulation: str, experience_insight: str) -> str:
        """Ask for the insight; the text, whitespace collapsed."""
        msgs = [
            {"role": "system", "content": experience_insight},
            {
                "role": "user",
                "content": f"Problem:\n{problem}\n\nChecked formulation (JSON):\n"
                f"{formulation}\n\nState the insight.",
            },
        ]
        res = await self.llm.achat(
            msgs, temperature=0.0, max_tokens=160, response_format=Insight, tag="experience"
        )
        return _WS.sub(" ", res.parsed[0].insight).strip()


def make_library(
    selection: Any,
    *,
    llm: Any = None,
    provenance: dict[str, Any] | None = None,
    note: Callable[[str], None] = lambda _msg: None,
) -> BuildReport:
    """A library from the solved, checked training problems ``selection`` holds (an
    :class:`optiforge.evals.experience.ExperienceSelection`: ``candidates`` with id,
    dataset, text, formulation as a ModelIR dict, answer and run; ``runs``; ``rule``;
    ``read``; ``skipped``). Each formulation becomes the formulator's draft
    (:func:`draft_from_ir`; one that has no draft form is left out) and gets an insight:
    from ``llm`` through the bundled ``distill`` op, or :func:`rule_insight` without one or
    when its call fails. ``provenance`` (``git_commit``, ``git_dirty``) goes to the header;
    ``note`` receives one progress line per entry.
    """
    from optiforge.llm import run_sync
    from optiforge.prompts import load_prompt

    report = BuildReport(
        library=ExperienceLibrary([]),
        read=selection.read,
        skipped={k: list(v) for k, v in selection.skipped.items()},
    )
    drafts: list[tuple[Any, FormulationDraft]] = []
    for cand in selection.candidates:
        try:
            drafts.append((cand, draft_from_ir(cand.formulation)))
        except ExperienceError as exc:
            report.skip(f"formulation has no draft form: {exc}", cand.id)
    prompt = node(load_prompt(INSIGHT_PROMPT), name="experience_insight")
    distiller = _Distiller(llm) if llm is not None else None
    entries: list[ExperienceEntry] = []
    total = len(drafts)
    note(f"{total} solved and checked problem(s) of {selection.read} read")
    for i, (cand, draft) in enumerate(drafts, 1):
        t0 = time.perf_counter()
        insight, source = "", "rule"
        if distiller is not None:
            try:
                with no_trace():
                    out = run_sync(
                        distiller.distill(
                            cand.text, json.dumps(draft.model_dump(), separators=(",", ":")), prompt
                        )
                    )
                insight, source = _one_or_two_sentences(out.value), "llm"
            except Exception as exc:  # a failed call (or reply) falls back to the rule
                report.llm_failures += 1
                note(
                    f"[{i}/{total}] {cand.id}: model call failed ({type(exc).__name__}: "
                    f"{str(exc)[:120]}); the rule's insight is used"
                )
        if not insight:
            insight, source = rule_insight(draft), "rule"
        entries.append(
            ExperienceEntry(
                id=cand.id,
                dataset=cand.dataset,
                text=cand.text,
                formulation=draft,
                insight=insight,
                insight_from=source,  # type: ignore[arg-type]
                answer=cand.answer,
                run=cand.run,
            )
        )
        note(
            f"[{i}/{total}] {cand.id} ({source}, {time.perf_counter() - t0:.1f} s): {insight[:100]}"
        )
    prov = provenance or {}
    header = LibraryHeader(
        built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        commit=prov.get("git_commit"),
        dirty=prov.get("git_dirty"),
        runs=list(selection.runs),
        rule=selection.rule,
        insights="llm" if llm is not None else "rule",
        model=getattr(llm, "model", None) if llm is not None else None,
        entries=len(entries),
    )
    report.library = ExperienceLibrary(entries, header)
    report.kept = len(entries)
    return report


def _one_or_two_sentences(text: str) -> str:
    """At most two sentences and :data:`MAX_INSIGHT_CHARS` characters of ``text``."""
    text = _WS.sub(" ", text or "").strip()
    sentences = re.split(r"(?<=[.!?])\s+", text)
    return " ".join(sentences[:2])[:MAX_INSIGHT_CHARS].strip()
