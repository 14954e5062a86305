"""Persistent answer cache: SQLite in WAL mode, safe across threads and processes.

One row per sample. The key is a hash of everything that changes the answer (route, model,
messages, sampling settings, response schema, sample index), so a re-run with ``n=5`` reuses
all five samples, and a run with ``n=8`` reuses five and asks only for three more. The
server's URL is not part of the key: the embedded server picks a new port every run.
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
    """

    def __init__(self, directory: Path | str) -> None:
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
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def clear(self) -> None:
        """Delete every cached answer."""
        self._conn().execute("DELETE FROM answers")

    def close(self) -> None:
        """Close every connection opened by this object."""
        with self._lock:
            conns, self._all = self._all, []
            self._closed = True
        for c in conns:
            with contextlib.suppress(sqlite3.Error):
                c.close()
        self._local = threading.local()
