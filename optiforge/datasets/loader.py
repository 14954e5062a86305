"""Load the shipped benchmarks and user JSONL/CSV files as :class:`Problem` records.

Every record is validated; a malformed one raises :class:`DatasetError` naming the file,
the line and the field. Nothing is skipped silently: filters that match nothing, unknown
ids and unknown answer fields are errors too.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from optiforge.datasets.problem import AnswerKind, AnswerVariant, DatasetError, Problem

#: Names of the datasets shipped inside the package.
BUILTIN_DATASETS: tuple[str, ...] = ("nl4opt", "optibench")

#: Answer variants of the built-in datasets (see ``optiforge/datasets/data/README.md``).
ANSWER_FIELDS: dict[str, tuple[str, ...]] = {
    "nl4opt": (
        "answer",
        "resocratic_nl4opt_e",
        "orlm_2024",
        "optmath",
        "sirl_2025",
        "llmopt_2025",
        "annotation_lp_highs",
        "annotation_milp_highs",
        "llm4or_clean",
    ),
    "optibench": ("answer", "llmopt", "sirl", "llm4or_clean"),
}

# Original field names accepted as aliases of the variant names above.
_ALIASES = {
    "answer_resocratic": "resocratic_nl4opt_e",
    "resocratic": "resocratic_nl4opt_e",
    "answer_llmopt": "llmopt",
    "answer_sirl": "sirl",
    "answer_llm4or_clean": "llm4or_clean",
}

#: Columns looked up, in order, when a user file has no explicit column mapping.
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "id": ("id", "problem_id", "pid"),
    "text": ("text", "question", "problem", "description", "prompt"),
    "answer": ("answer", "ground_truth", "gt", "objective", "optimal_value"),
    "problem_type": ("problem_type", "type"),
    "has_table": ("has_table",),
    "notes": ("notes",),
    "tags": ("tags", "category"),
    "source": ("source",),
}

# Answer strings that mean "no optimal value exists".
_INFEASIBLE_WORDS = {
    "infeasible",
    "unbounded",
    "infeasible_or_unbounded",
    "infeasible or unbounded",
    "no best solution",
    "no solution",
    "no feasible solution",
}
_MISSING_WORDS = {"", "none", "null", "nan", "n/a", "na", "-"}


def parse_answer(raw: Any) -> tuple[float | None, AnswerKind]:
    """Turn a ground-truth cell (number, numeric string, "infeasible", null) into a value.

    Raises ``ValueError`` for anything else (the caller names file, line and field).
    """
    if raw is None:
        return None, "missing"
    if isinstance(raw, bool):
        raise ValueError(f"expected a number, 'infeasible' or null, got {raw!r}")
    if isinstance(raw, (int, float)):
        value = float(raw)
        if math.isnan(value):
            return None, "missing"
        if math.isinf(value):
            raise ValueError(f"answer must be finite, got {raw!r}")
        return value, "value"
    if isinstance(raw, str):
        s = raw.strip()
        low = s.lower()
        if low in _MISSING_WORDS:
            return None, "missing"
        if low in _INFEASIBLE_WORDS:
            return None, "infeasible"
        try:
            value = float(s.replace(",", "").replace("_", ""))
        except ValueError:
            raise ValueError(f"expected a number, 'infeasible' or empty, got {raw!r}") from None
        if math.isinf(value) or math.isnan(value):
            raise ValueError(f"answer must be finite, got {raw!r}")
        return value, "value"
    raise ValueError(f"expected a number, 'infeasible' or null, got {type(raw).__name__}")


# ---------------------------------------------------------------- raw record readers


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        fh = path.open("r", encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"cannot open: {exc.strerror}", path=str(path)) from None
    with fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(
                    f"invalid JSON ({exc.msg} at column {exc.colno}); each line must be one "
                    "JSON object",
                    path=str(path),
                    line=lineno,
                ) from None
            if not isinstance(record, dict):
                raise DatasetError(
                    f"expected a JSON object, got {type(record).__name__}",
                    path=str(path),
                    line=lineno,
                )
            yield lineno, record


def _read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        fh = path.open("r", encoding="utf-8", newline="")
    except OSError as exc:
        raise DatasetError(f"cannot open: {exc.strerror}", path=str(path)) from None
    with fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise DatasetError("empty CSV file: a header row is required", path=str(path))
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise DatasetError(f"invalid CSV: {exc}", path=str(path), line=start) from None
            if None in row:  # more cells than header columns
                raise DatasetError(
                    f"row has {len(reader.fieldnames) + len(row[None])} cells but the header "
                    f"has {len(reader.fieldnames)}",
                    path=str(path),
                    line=start,
                )
            if any(v is None for v in row.values()):
                missing = [k for k, v in row.items() if v is None]
                raise DatasetError(
                    f"row has fewer cells than the header (missing {missing})",
                    path=str(path),
                    line=start,
                )
            if not any((v or "").strip() for v in row.values()):
                continue
            yield start, row


# ---------------------------------------------------------------- built-in datasets


def _builtin_path(name: str) -> Path:
    return Path(str(resources.files("optiforge.datasets").joinpath("data", f"{name}.jsonl")))


def _source_variant(entry: Mapping[str, Any] | None, text: str | None = None) -> AnswerVariant:
    if not entry:
        return AnswerVariant()
    status = str(entry.get("status") or "").lower()
    value = entry.get("value")
    raw = entry.get("raw", entry.get("status"))
    if value is not None:
        return AnswerVariant(value=float(value), kind="value", raw=raw, text=text)
    if "infeasible" in status or "unbounded" in status:
        return AnswerVariant(kind="infeasible", raw=raw, text=text)
    return AnswerVariant(raw=raw, text=text)


def _nl4opt_problem(rec: dict[str, Any]) -> Problem:
    status = rec.get("answer_status")
    answer = rec.get("answer")
    if answer is not None:
        main = AnswerVariant(value=float(answer), kind="value", raw=rec.get("answer_raw"))
    elif status == "infeasible_or_unbounded":
        main = AnswerVariant(kind="infeasible", raw=rec.get("answer_raw"))
    else:
        main = AnswerVariant(raw=rec.get("answer_raw"))
    sources = rec.get("answer_sources") or {}
    variants: dict[str, AnswerVariant] = {"answer": main}
    reso = sources.get("resocratic_nl4opt_e")
    edited = rec.get("question_resocratic") if reso and reso.get("question_edited") else None
    variants["resocratic_nl4opt_e"] = _source_variant(reso, text=edited)
    for key in ANSWER_FIELDS["nl4opt"]:
        if key not in variants and key != "llm4or_clean":
            variants[key] = _source_variant(sources.get(key))
    clean = rec.get("answer_llm4or_clean")
    variants["llm4or_clean"] = (
        AnswerVariant(value=float(clean), kind="value", raw=clean)
        if rec.get("in_llm4or_clean214") and clean is not None
        else AnswerVariant()
    )
    tags = []
    if rec.get("in_orlm245"):
        tags.append("orlm245")
    if rec.get("in_llmopt230"):
        tags.append("llmopt230")
    if rec.get("in_llm4or_clean214"):
        tags.append("llm4or-clean")
    if edited:
        tags.append("resocratic-edited")
    return _builtin_problem(rec, "nl4opt", variants, tags, status)


def _optibench_problem(rec: dict[str, Any]) -> Problem:
    variants = {
        "answer": AnswerVariant(
            value=float(rec["answer"]), kind="value", raw=rec.get("answer_raw")
        ),
        "llmopt": _plain_variant(rec.get("answer_llmopt")),
        "sirl": _plain_variant(rec.get("answer_sirl")),
        "llm4or_clean": _plain_variant(rec.get("answer_llm4or_clean"))
        if rec.get("in_llm4or_clean403")
        else AnswerVariant(),
    }
    tags = []
    if rec.get("in_llm4or_clean403"):
        tags.append("llm4or-clean")
    if rec.get("same_problem_as_nl4opt"):
        tags.append("nl4opt-overlap")
    return _builtin_problem(rec, "optibench", variants, tags, rec.get("answer_extraction"))


def _plain_variant(raw: Any) -> AnswerVariant:
    value, kind = parse_answer(raw)
    return AnswerVariant(value=value, kind=kind, raw=raw)


_BUILTIN_KEYS = {"id", "question", "answer", "problem_type", "has_table", "notes", "source"}


def _builtin_problem(
    rec: dict[str, Any],
    dataset: str,
    variants: dict[str, AnswerVariant],
    tags: list[str],
    status: str | None,
) -> Problem:
    main = variants["answer"]
    return Problem(
        id=rec["id"],
        text=rec["question"],
        answer=main.value,
        answer_kind=main.kind,
        answer_field="answer",
        answers=variants,
        answer_status=status,
        problem_type=rec.get("problem_type"),
        has_table=rec.get("has_table"),
        tags=tuple(tags),
        notes=rec.get("notes"),
        source=rec.get("source"),
        dataset=dataset,
        extra={k: v for k, v in rec.items() if k not in _BUILTIN_KEYS},
    )


def _load_builtin(name: str) -> list[Problem]:
    path = _builtin_path(name)
    build = _nl4opt_problem if name == "nl4opt" else _optibench_problem
    out = []
    for lineno, rec in _read_jsonl(path):
        try:
            out.append(build(rec))
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(
                f"malformed built-in record ({exc}); reinstall optiforge",
                path=str(path),
                line=lineno,
            ) from None
    return out


# ---------------------------------------------------------------- user files


def _resolve_columns(
    path: Path, header: Sequence[str], columns: Mapping[str, str] | None, line: int
) -> dict[str, tuple[str, bool]]:
    """Map our field -> (column, explicitly_requested)."""
    columns = dict(columns or {})
    unknown = set(columns) - set(DEFAULT_COLUMNS)
    if unknown:
        raise DatasetError(
            f"unknown field(s) {sorted(unknown)} in the column mapping; known fields: "
            f"{sorted(DEFAULT_COLUMNS)}",
            path=str(path),
        )
    out: dict[str, tuple[str, bool]] = {}
    for fieldname, candidates in DEFAULT_COLUMNS.items():
        if fieldname in columns:
            out[fieldname] = (columns[fieldname], True)
            continue
        for cand in candidates:
            if cand in header:
                out[fieldname] = (cand, False)
                break
    if "text" not in out:
        raise DatasetError(
            f"no problem-text column: looked for {list(DEFAULT_COLUMNS['text'])}; "
            "map yours with a column mapping (CLI: --column text=COLUMN)",
            path=str(path),
            line=line,
        )
    return out


def _parse_bool(raw: Any) -> bool | None:
    if raw is None or isinstance(raw, bool):
        return raw
    s = str(raw).strip().lower()
    if s in {"1", "true", "yes", "y", "t"}:
        return True
    if s in {"0", "false", "no", "n", "f"}:
        return False
    if s == "":
        return None
    raise ValueError(f"expected true/false, got {raw!r}")


def _load_user_file(
    path: Path, columns: Mapping[str, str] | None, answer_field: str | None
) -> list[Problem]:
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson"}:
        rows: Iterable[tuple[int, dict[str, Any]]] = _read_jsonl(path)
    elif suffix in {".csv", ".tsv"}:
        rows = _read_csv(path)
    else:
        raise DatasetError("unsupported file type: use .jsonl or .csv", path=str(path))
    dataset = path.stem
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for lineno, rec in rows:
        # Resolved per record: JSONL records need not all carry the same optional keys.
        mapping = _resolve_columns(path, list(rec.keys()), columns, lineno)
        values: dict[str, Any] = {}
        for fieldname, (col, explicit) in mapping.items():
            if col not in rec:
                if explicit or fieldname == "text":
                    raise DatasetError(
                        f"column {col!r} is missing from this record",
                        path=str(path),
                        line=lineno,
                        field=col,
                    )
                continue
            values[fieldname] = rec[col]
        text = values.get("text")
        if not isinstance(text, str) or not text.strip():
            raise DatasetError(
                "problem text must be a non-empty string",
                path=str(path),
                line=lineno,
                field=mapping["text"][0],
            )
        pid = values.get("id")
        if pid is None or (isinstance(pid, str) and not pid.strip()):
            if "id" in mapping and mapping["id"][1]:
                raise DatasetError(
                    "id is empty", path=str(path), line=lineno, field=mapping["id"][0]
                )
            pid = f"{dataset}-{lineno:04d}"
        pid = str(pid).strip()
        if pid in seen:
            raise DatasetError(
                f"duplicate id {pid!r} (first seen on line {seen[pid]}); ids must be unique",
                path=str(path),
                line=lineno,
                field=mapping.get("id", ("id", False))[0],
            )
        seen[pid] = lineno
        variants: dict[str, AnswerVariant] = {}
        answer_cols = {"answer": mapping["answer"][0]} if "answer" in mapping else {}
        if answer_field and answer_field != "answer":
            answer_cols[answer_field] = answer_field
        for variant_name, col in answer_cols.items():
            raw = rec.get(col)
            try:
                value, kind = parse_answer(raw)
            except ValueError as exc:
                raise DatasetError(str(exc), path=str(path), line=lineno, field=col) from None
            variants[variant_name] = AnswerVariant(value=value, kind=kind, raw=raw)
        main = variants.get("answer", AnswerVariant())
        try:
            has_table = _parse_bool(values.get("has_table"))
        except ValueError as exc:
            raise DatasetError(
                str(exc), path=str(path), line=lineno, field=mapping["has_table"][0]
            ) from None
        tags_raw = values.get("tags")
        if tags_raw is None:
            tags: tuple[str, ...] = ()
        elif isinstance(tags_raw, list):
            tags = tuple(str(t).strip() for t in tags_raw if str(t).strip())
        else:
            tags = tuple(t.strip() for t in str(tags_raw).replace(";", ",").split(",") if t.strip())
        ptype = values.get("problem_type")
        notes = values.get("notes")
        used = {col for col, _ in mapping.values()}
        problems.append(
            Problem(
                id=pid,
                text=text,
                answer=main.value,
                answer_kind=main.kind,
                answer_field="answer",
                answers=variants,
                problem_type=str(ptype).strip().lower() if ptype not in (None, "") else None,
                has_table=has_table,
                tags=tags,
                notes=str(notes) if notes not in (None, "") else None,
                source=str(values["source"]) if values.get("source") else f"{path}:{lineno}",
                dataset=dataset,
                extra={k: v for k, v in rec.items() if k not in used},
            )
        )
    if not problems:
        raise DatasetError("the file holds no problems", path=str(path))
    return problems


# ---------------------------------------------------------------- public API


def _parse_columns(columns: Mapping[str, str] | Sequence[str] | None) -> dict[str, str] | None:
    if columns is None:
        return None
    if isinstance(columns, Mapping):
        return dict(columns)
    out = {}
    for item in columns:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise DatasetError(f"column mapping {item!r} must look like FIELD=COLUMN")
        out[key.strip()] = value.strip()
    return out


def load_dataset(
    name_or_path: str | Path,
    *,
    answer_field: str | None = None,
    ids: Iterable[str] | None = None,
    limit: int | None = None,
    category: str | Iterable[str] | None = None,
    columns: Mapping[str, str] | Sequence[str] | None = None,
    require_answer: bool = False,
) -> list[Problem]:
    """Load a built-in benchmark (``nl4opt``, ``optibench``) or a user JSONL/CSV file.

    - ``answer_field``: grade against this answer variant (built-ins: see
      :data:`ANSWER_FIELDS`; user files: a column name). Default ``"answer"``.
    - ``ids``: keep only these ids (unknown ids raise :class:`DatasetError`).
    - ``category``: keep problems whose labels include every comma-separated term, e.g.
      ``"nonlinear"``, ``"linear,table"``, ``"no-table"``, ``"orlm245"``; several values
      (an iterable) are OR-ed.
    - ``limit``: keep the first N problems after the other filters.
    - ``columns``: for user files, ``{"text": "question", "answer": "gt", ...}`` or
      ``["text=question", ...]``; unmapped fields are looked up by their usual names.
    - ``require_answer``: drop problems without a usable ground truth (a value or
      infeasible). Callers should report how many were dropped; :func:`count_unscorable`
      helps.

    Returns the problems in file order. Raises :class:`DatasetError` for a missing or
    malformed file (naming file, line and field), an unknown answer field, unknown ids, or
    filters that match nothing.
    """
    name = str(name_or_path)
    key = name.strip().lower()
    if key in BUILTIN_DATASETS and not Path(name).exists():
        problems = _load_builtin(key)
        if columns:
            raise DatasetError(f"column mappings apply to user files, not to built-in {key!r}")
        valid_fields = set(ANSWER_FIELDS[key])
        field = _ALIASES.get(answer_field, answer_field) if answer_field else None
        if field and field not in valid_fields:
            raise DatasetError(
                f"unknown answer field {answer_field!r} for {key}; choose one of "
                f"{list(ANSWER_FIELDS[key])}",
                field="answer_field",
            )
    else:
        path = Path(name).expanduser()
        if not path.exists():
            raise DatasetError(
                f"no dataset named {name!r}: built-ins are {list(BUILTIN_DATASETS)}; "
                "otherwise pass the path of a .jsonl or .csv file"
            )
        problems = _load_user_file(path, _parse_columns(columns), answer_field)
        field = answer_field
        if field and field != "answer" and field not in problems[0].answers:
            raise DatasetError(f"no answer column {field!r}", path=str(path), field=field)
    if field and field != "answer":
        problems = [p.with_answer_field(field) for p in problems]

    if ids is not None:
        wanted = [i.strip() for i in ids if i and i.strip()]
        index = {p.id for p in problems}
        unknown = [i for i in wanted if i not in index]
        if unknown:
            shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise DatasetError(f"unknown problem id(s): {shown}")
        keep = set(wanted)
        problems = [p for p in problems if p.id in keep]

    if category:
        groups = [category] if isinstance(category, str) else list(category)
        terms_by_group = [
            {t.strip().lower() for t in g.split(",") if t.strip()} for g in groups if g
        ]
        all_labels = set().union(*(p.labels for p in problems)) if problems else set()
        unknown_terms = {t for terms in terms_by_group for t in terms} - all_labels
        if unknown_terms:
            raise DatasetError(
                f"unknown category {sorted(unknown_terms)}; known: {sorted(all_labels)}",
                field="category",
            )
        problems = [p for p in problems if any(terms <= p.labels for terms in terms_by_group)]
        if not problems:
            raise DatasetError(f"no problem matches category {category!r}", field="category")

    if require_answer:
        problems = [p for p in problems if p.scorable]

    if limit is not None:
        if limit < 0:
            raise DatasetError(f"limit must be >= 0, got {limit}", field="limit")
        problems = problems[:limit]
    return problems


def count_unscorable(problems: Iterable[Problem]) -> int:
    """Number of problems without a usable ground truth under their answer field."""
    return sum(1 for p in problems if not p.scorable)


def read_id_list(path: str | Path) -> list[str]:
    """Read ids from a text file: one per line (or comma-separated); ``#`` starts a comment."""
    p = Path(path).expanduser()
    try:
        content = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"cannot read id list: {exc.strerror}", path=str(p)) from None
    out: list[str] = []
    for line in content.splitlines():
        line = line.split("#", 1)[0]
        out.extend(t.strip() for t in line.split(",") if t.strip())
    return out
