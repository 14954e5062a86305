"""Persistent answer cache: SQLite in WAL mode, safe across threads and processes.

One row per sample. The key is a hash of everything that changes the answer (route, model,
messages, sampling settings, response schema, sample index), so a re-run with ``n=5`` reuses
all five samples, and a run with ``n=8`` reuses five and asks only for three more. The
server's URL is not part of the key: the embedded server picks a new port every run.

The cache is capped (``cache_max_mb`` in the settings): when a write takes the rows past
the cap, the oldest rows are deleted until it is 10% under, at most ``_PRUNE_BATCH`` rows
per write so no single write pays for a large backlog. ``optiforge cache stats|prune|clear``
inspects and shrinks it by hand (:meth:`ResponseCache.stats`, :meth:`ResponseCache.prune`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from optiforge.llm.errors import LLMError

_SCHEMA_VERSION = 1
#: Rows deleted at most per write when over the cap (bounds the cost of one write).
_PRUNE_BATCH = 500
#: A cap prune goes this far under the cap, so it does not run again on the next write.
_PRUNE_TO = 0.9


def cache_key(payload: dict[str, Any]) -> str:
    """Stable sha256 of a JSON-serialisable request description."""
    blob = json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """A key -> JSON value store in ``<directory>/llm_cache.sqlite3``.

    Each thread gets its own connection; WAL mode lets readers run beside one writer and a
    busy timeout makes concurrent writers from other processes wait instead of failing.
    ``max_mb`` caps the bytes the rows use (None or 0: no cap); see the module docstring.
    """

    def __init__(self, directory: Path | str, max_mb: float | None = None) -> None:
        if max_mb is not None and max_mb < 0:
            raise LLMError(f"cache_max_mb must be >= 0 (0 = no cap), got {max_mb}")
        self.max_bytes = int(max_mb * 1024 * 1024) if max_mb else None
        self.directory = Path(directory).expanduser()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LLMError(
                f"cannot create the LLM cache directory {self.directory}: {exc}. "
                "Set cache_dir (OPTIFORGE_CACHE_DIR) to a writable folder or disable the cache."
            ) from None
        self.path = self.directory / "llm_cache.sqlite3"
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._conn()  # create the table now so errors surface at construction

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise LLMError("the LLM cache was closed; create a new client")
        try:
            conn = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                "created REAL NOT NULL)"
            )
            # Pruning deletes oldest first; the index keeps that from scanning the table.
            conn.execute("CREATE INDEX IF NOT EXISTS answers_created ON answers (created)")
        except sqlite3.Error as exc:
            raise LLMError(
                f"cannot open the LLM cache {self.path}: {exc}. Delete the file or point "
                "cache_dir elsewhere."
            ) from None
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
        return conn

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Values for the keys that are present."""
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        rows = (
            self._conn()
            .execute(f"SELECT key, value FROM answers WHERE key IN ({marks})", keys)
            .fetchall()
        )
        out = {}
        for k, v in rows:
            try:
                out[k] = json.loads(v)
            except json.JSONDecodeError:  # a damaged row is a miss, and gets overwritten
                continue
        return out

    def put_many(self, items: dict[str, dict[str, Any]]) -> None:
        """Store values (last writer wins; identical requests give equivalent values)."""
        if not items:
            return
        now = time.time()
        rows = [(k, json.dumps(v, ensure_ascii=False), now) for k, v in items.items()]
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?, ?)", rows)
            if self.max_bytes is not None:
                self._enforce_cap(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _used_bytes(self, conn: sqlite3.Connection) -> int:
        """Bytes of the database pages in use (O(1) pragmas, no table scan)."""
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * page_size

    def _enforce_cap(self, conn: sqlite3.Connection) -> int:
        """Inside the write transaction: delete the oldest rows (at most _PRUNE_BATCH) when
        the pages in use exceed the cap, until 10% under it. Returns the rows deleted."""
        assert self.max_bytes is not None
        excess = self._used_bytes(conn) - self.max_bytes
        if excess <= 0:
            return 0
        excess += int(self.max_bytes * (1 - _PRUNE_TO))
        oldest = conn.execute(
            "SELECT key, length(CAST(key AS BLOB)) + length(CAST(value AS BLOB)) FROM answers "
            "ORDER BY created LIMIT ?",
            (_PRUNE_BATCH,),
        ).fetchall()
        doomed: list[tuple[str]] = []
        for key, size in oldest:
            doomed.append((key,))
            excess -= size
            if excess <= 0:
                break
        conn.executemany("DELETE FROM answers WHERE key = ?", doomed)
        return len(doomed)

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def stats(self) -> dict[str, Any]:
        """Rows, bytes (of the rows, of the pages in use, of the files on disk), the oldest
        and newest row's time (Unix seconds, None when empty), the cap and the path."""
        conn = self._conn()
        rows, data, oldest, newest = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(length(CAST(key AS BLOB)) + "
            "length(CAST(value AS BLOB))), 0), MIN(created), MAX(created) FROM answers"
        ).fetchone()
        on_disk = sum(
            p.stat().st_size
            for p in (self.path, self.path.with_name(self.path.name + "-wal"))
            if p.exists()
        )
        return {
            "path": str(self.path),
            "rows": rows,
            "data_bytes": data,
            "used_bytes": self._used_bytes(conn),
            "file_bytes": on_disk,
            "max_bytes": self.max_bytes,
            "oldest": oldest,
            "newest": newest,
        }

    def prune(self, older_than_s: float, *, now: float | None = None) -> int:
        """Delete rows written more than ``older_than_s`` seconds ago; return how many."""
        if older_than_s < 0:
            raise LLMError(f"prune age must be >= 0 seconds, got {older_than_s}")
        cutoff = (time.time() if now is None else now) - older_than_s
        cur = self._conn().execute("DELETE FROM answers WHERE created < ?", (cutoff,))
        return cur.rowcount

    def clear(self) -> None:
        """Delete every cached answer."""
        self._conn().execute("DELETE FROM answers")

    def vacuum(self, wait_s: float = 30.0) -> bool:
        """Give the space of deleted rows back to the file system (rewrites the file).
        False when another process still holds the database after ``wait_s`` seconds (its
        freed pages are then reused by later writes instead)."""
        conn = self._conn()
        conn.execute(f"PRAGMA busy_timeout={int(wait_s * 1000)}")
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("VACUUM")
        except sqlite3.OperationalError:
            return False
        finally:
            conn.execute("PRAGMA busy_timeout=30000")
        return True

    def close(self) -> None:
        """Close every connection opened by this object."""
        with self._lock:
            conns, self._all = self._all, []
            self._closed = True
        for c in conns:
            with contextlib.suppress(sqlite3.Error):
                c.close()
        self._local = threading.local()
