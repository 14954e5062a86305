"""Tables in a problem's text, parsed deterministically before any model sees them.

Word problems with larger data bring it as a Markdown pipe table, an ASCII box table, a
block of aligned columns, a list of ``label: value`` lines, or an inline list of numbers
("... are 100, 150, 120 and 130", "2, 4, 6, ..., 20", "week 1 needs 10, week 2 needs 12,
and so on until week 6"). :func:`parse_tables` finds them all and returns
:class:`ParsedTable` records (row labels, column labels, cells); the extraction step
(:mod:`optiforge.agents.team.extraction`) shows them to the model, which then only maps a
table to set and parameter names, and fills the values from the cells itself.
"""

from __future__ import annotations

import itertools
import re
from typing import Literal

from pydantic import BaseModel

__all__ = ["ParsedTable", "attribute_label", "cell_number", "parse_tables"]

_NUM = r"[-+]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?%?|[-+]?\$?\.\d+%?"
_NUM_RE = re.compile(rf"^\s*(?:{_NUM})\s*$")
_SEP_ROW = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_BOX_BORDER = re.compile(r"^\s*\+[-=+]+\+\s*$")
_ALIGNED_SPLIT = re.compile(r"\t+|\s{2,}")
_LIST_LINE = re.compile(
    r"^\s*(?:[-*\u2022]|\d+[.)])?\s*(?P<label>[A-Za-z][^:=]{0,60}?)\s*[:=]\s*(?P<rest>.*\d.*)$"
)


#: Words that make a table label an attribute of things rather than a thing.
_ATTRIBUTE_WORDS = frozenset(
    re.findall(
        r"\w+",
        """
        cost costs price prices profit profits revenue revenues income fee fees margin return
        returns yield time times hour hours minute minutes weight weights value values amount
        amounts quantity quantities number rate rates risk score size volume area capacity
        capacities demand demands supply supplies requirement requirements required available
        availability minimum maximum min max total limit budget per percentage percent share
        usage needed production storage holding selling purchase labor labour material materials
        energy
        """,
    )
)


def attribute_label(label: str) -> bool:
    """``label`` names an attribute ("Cost per Unit", "Profit ($)", "Demand", "Weight
    (kg)"), not a thing ("Plant A", "Center II (Savannah)", "Job 3")."""
    if "$" in label or "%" in label:
        return True
    words = re.findall(r"[a-z]+", label.lower())
    return any(w in _ATTRIBUTE_WORDS for w in words)


def cell_number(text: str) -> float | None:
    """The number in a cell: ``$1,200`` -> 1200, ``12%`` -> 12, ``3.5 kg`` -> 3.5; None for
    text or an empty cell (``-``)."""
    t = text.strip().replace("\u2212", "-")
    m = re.match(rf"^\s*({_NUM})(?:\s*[A-Za-z/%.]+)*\s*$", t)
    if not m:
        return None
    raw = m.group(1).replace("$", "").replace(",", "").replace("%", "")
    try:
        return float(raw)
    except ValueError:
        return None


class ParsedTable(BaseModel):
    """One table found in the text: ``header`` labels the columns (``header[0]`` is the
    corner above the row labels), each row starts with its label."""

    kind: Literal["markdown", "aligned", "list", "sequence"]
    header: list[str]
    rows: list[list[str]]
    #: The 1-based line of the text where the table starts.
    line: int
    #: The text just before the table (its title or the sentence that introduces a list).
    caption: str = ""

    @property
    def row_labels(self) -> list[str]:
        """The label of each row (its first cell)."""
        return [r[0] for r in self.rows]

    @property
    def column_labels(self) -> list[str]:
        """The label of each value column."""
        return self.header[1:]

    def is_matrix(self) -> bool:
        """It lists things across both axes (plants down, markets across), not things
        against their attributes ("Cost per Unit", "Profit"): at least two rows and two
        columns whose labels are not attributes (:func:`attribute_label`)."""
        if self.kind == "sequence":
            return False
        things = [lab for lab in self.column_labels if lab.strip() and not attribute_label(lab)]
        rows = [lab for lab in self.row_labels if lab.strip() and not attribute_label(lab)]
        return len(things) >= 2 and len(rows) >= 2

    def numbers(self) -> list[float]:
        """Every number in the table's cells (labels excluded)."""
        out = []
        for r in self.rows:
            for c in r[1:]:
                v = cell_number(c)
                if v is not None:
                    out.append(v)
        return out

    def render(self, index: int) -> str:
        """The table as compact text for a prompt: ``Table <index>`` then one line per row."""
        cols = ", ".join(self.column_labels)
        head = f"Table {index} ({self.kind}"
        head += f", after: {self.caption[:80]!r})" if self.caption else ")"
        lines = [f"{head}; columns: {cols}"]
        for r in self.rows:
            lines.append(f"  {r[0] or '(row)'}: " + ", ".join(r[1:]))
        return "\n".join(lines)


def _cells(line: str) -> list[str]:
    s = line.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|"):
        s = s[:-1]
    return [c.strip() for c in s.split("|")]


def _square(header: list[str], rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    width = max([len(header), *(len(r) for r in rows)])
    if len(header) == width - 1:  # no corner label above the row labels
        header = ["", *header]
    header = header + [""] * (width - len(header))
    rows = [r + [""] * (width - len(r)) for r in rows]
    return header, rows


def _caption(lines: list[str], start: int) -> str:
    """The nearest text line above a table (within two lines), if it is not table rows."""
    for k in range(start - 1, max(-1, start - 3), -1):
        s = lines[k].strip()
        if s:
            tabular = "|" in s or _BOX_BORDER.match(s) or len(_ALIGNED_SPLIT.split(s)) > 2
            return "" if tabular else s
    return ""


def _pipe_tables(lines: list[str], used: set[int]) -> list[ParsedTable]:
    out = []
    k = 0
    while k < len(lines):
        if "|" not in lines[k] and not _BOX_BORDER.match(lines[k]):
            k += 1
            continue
        start = k
        block = []
        while k < len(lines) and ("|" in lines[k] or _BOX_BORDER.match(lines[k])):
            block.append((k, lines[k]))
            k += 1
        body = [(i, ln) for i, ln in block if not _BOX_BORDER.match(ln) and not _SEP_ROW.match(ln)]
        if len(body) < 2:
            continue
        header = _cells(body[0][1])
        rows = [_cells(ln) for _, ln in body[1:]]
        if not any(cell_number(c) is not None for r in rows for c in r[1:]):
            continue
        header, rows = _square(header, rows)
        kind = "markdown"
        out.append(
            ParsedTable(
                kind=kind, header=header, rows=rows, line=start + 1, caption=_caption(lines, start)
            )
        )
        used.update(i for i, _ in block)
    return out


def _aligned_tables(lines: list[str], used: set[int]) -> list[ParsedTable]:
    out = []
    k = 0
    while k < len(lines):
        if k in used or len(_ALIGNED_SPLIT.split(lines[k].strip())) < 2:
            k += 1
            continue
        start = k
        block = []
        while (
            k < len(lines)
            and k not in used
            and lines[k].strip()
            and len(_ALIGNED_SPLIT.split(lines[k].strip())) >= 2
        ):
            block.append(_ALIGNED_SPLIT.split(lines[k].strip()))
            k += 1
        if len(block) < 2:
            continue
        # Prose with double spaces is not a table: cells are short and the rows line up.
        widths = {len(r) for r in block[1:]}
        if len(widths) != 1 or any(len(c) > 40 for r in block for c in r):
            continue
        numeric = [r for r in block if sum(cell_number(c) is not None for c in r[1:]) >= 1]
        if len(numeric) < 1 or (block[0] in numeric and len(numeric) == len(block)):
            # every row numeric: no header row; label the columns by position
            if len(numeric) == len(block) and len(block) >= 2:
                header = ["", *(f"col{j}" for j in range(1, max(map(len, block))))]
                header, rows = _square(header, block)
            else:
                continue
        else:
            header, rows = _square(block[0], block[1:])
        out.append(
            ParsedTable(
                kind="aligned",
                header=header,
                rows=rows,
                line=start + 1,
                caption=_caption(lines, start),
            )
        )
        used.update(range(start, k))
    return out


def _list_tables(lines: list[str], used: set[int]) -> list[ParsedTable]:
    out = []
    k = 0
    while k < len(lines):
        m = _LIST_LINE.match(lines[k]) if k not in used else None
        if not m:
            k += 1
            continue
        start = k
        items = []
        while k < len(lines) and k not in used and (m := _LIST_LINE.match(lines[k])):
            nums = re.findall(_NUM, m.group("rest"))
            items.append([m.group("label").strip(), *nums])
            k += 1
        if len(items) < 2:
            continue
        width = max(map(len, items))
        header = ["", *(f"value{j}" if width > 2 else "value" for j in range(1, width))]
        header, rows = _square(header, items)
        out.append(
            ParsedTable(
                kind="list",
                header=header,
                rows=rows,
                line=start + 1,
                caption=_caption(lines, start),
            )
        )
        used.update(range(start, k))
    return out


_SEQ = re.compile(
    rf"(?P<nums>(?:{_NUM})(?:\s*,\s*(?:{_NUM}))+(?:\s*,?\s*(?:and|or)\s+(?:{_NUM}))?)"
)
_ELLIPSIS = re.compile(
    rf"(?P<nums>(?:{_NUM})(?:\s*,\s*(?:{_NUM})){{1,}})\s*,?\s*(?:\.\.\.|\u2026|and so on)\s*,?\s*"
    rf"(?:(?:up )?to\s+|until\s+|through\s+)?(?P<end>{_NUM})\b"
)
_INDEXED_SO_ON = re.compile(
    r"(?P<body>(?:\b[A-Za-z]+\s+\d+\b[^,;.\d]*?\d[\d.]*[^,;.\d]*,\s*){2,})\s*(?:and so on|\.\.\.|\u2026)"
    r"[^.;]*?\b(?:until|through|to|up to)\s+(?P<word>[A-Za-z]+)\s+(?P<last>\d+)"
)


def _ap(values: list[float], count: int) -> list[float] | None:
    if len(values) < 2:
        return None
    step = values[1] - values[0]
    if any(abs((b - a) - step) > 1e-9 for a, b in itertools.pairwise(values)):
        return None
    return [values[0] + step * k for k in range(count)]


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


def _sequences(text: str) -> list[ParsedTable]:
    """Inline lists of numbers, with "..." / "and so on" runs expanded when they step evenly."""
    found: list[tuple[int, ParsedTable]] = []
    taken: list[tuple[int, int]] = []

    def add(start: int, end: int, values: list[str], caption: str | None = None) -> None:
        line = text.count("\n", 0, start) + 1
        if caption is None:
            sentence_start = max(text.rfind(".", 0, start), text.rfind("\n", 0, start)) + 1
            caption = text[sentence_start:start].strip()[-80:]
        header = ["", *(str(j) for j in range(1, len(values) + 1))]
        table = ParsedTable(
            kind="sequence", header=header, rows=[["", *values]], line=line, caption=caption
        )
        found.append((start, table))
        taken.append((start, end))

    for m in _INDEXED_SO_ON.finditer(text):
        pairs = re.findall(rf"\b([A-Za-z]+)\s+(\d+)\b[^,;.\d]*?({_NUM})[^,;.\d]*,", m.group("body"))
        pairs = [
            (w, int(k), cell_number(v)) for w, k, v in pairs if w.lower() == m.group("word").lower()
        ]
        if len(pairs) >= 2 and all(v is not None for _, _, v in pairs):
            first = pairs[0][1]
            ks = [k for _, k, _ in pairs]
            if ks == list(range(first, first + len(ks))):
                count = int(m.group("last")) - first + 1
                vals = _ap([v for _, _, v in pairs], count)  # type: ignore[misc]
                if vals:
                    add(
                        m.start(),
                        m.end(),
                        [_fmt(v) for v in vals],
                        " ".join(m.group(0).split())[:80],
                    )
    for m in _ELLIPSIS.finditer(text):
        if any(a <= m.start() < b for a, b in taken):
            continue
        given = [cell_number(x) for x in re.findall(_NUM, m.group("nums"))]
        end = cell_number(m.group("end"))
        if None in given or end is None or len(given) < 2:
            taken.append((m.start(), m.end()))
            continue
        step = given[1] - given[0]  # type: ignore[operator]
        if step == 0:
            taken.append((m.start(), m.end()))
            continue
        count = round((end - given[0]) / step) + 1  # type: ignore[operator]
        vals = _ap(given, count) if 0 < count <= 1000 else None  # type: ignore[arg-type]
        if vals and abs(vals[-1] - end) < 1e-9:
            add(m.start(), m.end(), [_fmt(v) for v in vals])
        else:  # an uneven run is not guessed, nor shown cut short
            taken.append((m.start(), m.end()))
    for m in _SEQ.finditer(text):
        if any(a <= m.start() < b for a, b in taken):
            continue
        nums = re.findall(_NUM, m.group("nums"))
        if len(nums) >= 3 or re.search(r"\b(?:and|or)\b", m.group("nums")):
            add(m.start(), m.end(), [_fmt(cell_number(x)) for x in nums])  # type: ignore[arg-type]
    found.sort(key=lambda st: st[0])
    return [t for _, t in found]


def parse_tables(text: str) -> list[ParsedTable]:
    """Every table and number list in ``text``, in order: Markdown and ASCII box tables,
    aligned columns, ``label: value`` lists, then inline number lists in the prose."""
    lines = text.splitlines()
    used: set[int] = set()
    found = _pipe_tables(lines, used)
    found += _list_tables(lines, used)
    found += _aligned_tables(lines, used)
    prose = "\n".join("" if k in used else ln for k, ln in enumerate(lines))
    found += _sequences(prose)
    found.sort(key=lambda t: t.line)
    return found
