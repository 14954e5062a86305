"""The append-only results journal (``results.jsonl``) and ``run.json``.

Crash safety: each record is one ``os.write`` of a complete line on an ``O_APPEND`` file
descriptor, followed by ``fsync``. A kill can at worst leave a torn *last* line; readers
ignore it (with a warning count) and :meth:`Journal.repair` cuts it off before a resumed
run appends. A malformed line anywhere else is real corruption and raises.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from optiforge.evals.records import EvalError, ResultRecord, RunMeta
from optiforge.fileio import write_text_atomic

RESULTS_FILE = "results.jsonl"
RUN_FILE = "run.json"


@dataclass
class JournalContents:
    """What :func:`read_journal` found."""

    records: list[ResultRecord] = field(default_factory=list)
    #: Byte offset just after the last good line (where a resumed run appends).
    good_bytes: int = 0
    #: Bytes after ``good_bytes`` that were ignored (a torn last line), 0 if none.
    torn_bytes: int = 0

    def latest(self) -> dict[str, ResultRecord]:
        """The last record per problem id (a retried problem supersedes its earlier line)."""
        out: dict[str, ResultRecord] = {}
        for rec in self.records:
            out[rec.id] = rec
        return out


def read_journal(path: str | Path) -> JournalContents:
    """Read ``results.jsonl`` tolerantly: a torn last line is ignored, nothing else is.

    Raises :class:`EvalError` naming the line when an earlier line is corrupt.
    """
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.exists():
        return JournalContents()
    data = path.read_bytes()
    out = JournalContents()
    pos = 0
    lineno = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl + 1
        chunk = data[pos:end]
        lineno += 1
        is_last = end >= len(data)
        if not chunk.strip():
            pos = end
            out.good_bytes = pos
            continue
        try:
            rec = ResultRecord.model_validate_json(chunk)
        except (ValidationError, ValueError) as exc:
            if is_last:
                out.torn_bytes = len(data) - pos
                break
            raise EvalError(
                f"{path}, line {lineno}: corrupt journal line ({str(exc).splitlines()[0]}). "
                "Earlier lines are intact; move the file aside or fix that line by hand."
            ) from None
        if nl < 0:
            # A complete JSON object without its newline: the write was cut right before
            # the newline. Keep the record; repair() adds the newline.
            out.records.append(rec)
            out.torn_bytes = 0
            out.good_bytes = len(data)
            pos = end
            break
        out.records.append(rec)
        pos = end
        out.good_bytes = pos
    return out


class Journal:
    """Append-only writer of ``results.jsonl`` with one fsync per record."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / RESULTS_FILE
        self._fd: int | None = None

    def repair(self) -> JournalContents:
        """Read the journal and cut off a torn last line so appends start on a clean line."""
        contents = read_journal(self.path)
        if self.path.exists():
            size = self.path.stat().st_size
            if contents.torn_bytes:
                with self.path.open("r+b") as fh:
                    fh.truncate(contents.good_bytes)
                    fh.flush()
                    os.fsync(fh.fileno())
            elif size and not self.path.read_bytes().endswith(b"\n"):
                with self.path.open("ab") as fh:
                    fh.write(b"\n")
                    fh.flush()
                    os.fsync(fh.fileno())
        return contents

    def open(self) -> None:
        """Open for appending (creating the directory and file if needed)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if created:
            _fsync_dir(self.out_dir)

    def append(self, record: ResultRecord) -> None:
        """Write one record as one line and fsync it before returning."""
        if self._fd is None:
            self.open()
        assert self._fd is not None
        line = record.model_dump_json().encode("utf-8") + b"\n"
        view = memoryview(line)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        os.fsync(self._fd)

    def close(self) -> None:
        """Close the file descriptor (records are already on disk)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Journal:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_meta(out_dir: str | Path) -> RunMeta | None:
    """Read ``run.json`` from an output directory, or None if there is none."""
    path = Path(out_dir) / RUN_FILE
    if not path.exists():
        return None
    try:
        return RunMeta.model_validate_json(path.read_text(encoding="utf-8"))
    except (ValidationError, ValueError, OSError) as exc:
        raise EvalError(f"{path}: unreadable run metadata ({exc}); move it aside") from None


def write_meta(out_dir: str | Path, meta: RunMeta) -> None:
    """Write ``run.json`` atomically (temp file, fsync, rename)."""
    write_text_atomic(Path(out_dir) / RUN_FILE, meta.model_dump_json(indent=2))


def load_json(path: Path) -> dict:
    """Read a JSON file written by this package, with a clear error."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvalError(f"cannot read {path}: {exc}") from None
