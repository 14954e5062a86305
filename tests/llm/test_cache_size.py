"""The LLM cache shrinks: a size cap (oldest first, bounded work per write), prune by age,
stats, and `optiforge cache stats|prune|clear`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import optiforge.llm.cache as cache_mod
from optiforge.llm.cache import ResponseCache
from optiforge.llm.errors import LLMError

_VALUE = {"text": "x" * 1000}  # about 1 KB a row


class _Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def time(self) -> float:
        self.t += 1.0
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = _Clock()
    monkeypatch.setattr(cache_mod.time, "time", c.time)
    return c


def test_cap_deletes_the_oldest_answers_first(tmp_path, clock):
    cap_mb = 0.1  # 104,857 bytes
    cache = ResponseCache(tmp_path, max_mb=cap_mb)
    for i in range(400):  # ~400 KB written into a 100 KB cap
        cache.put_many({f"k{i:03d}": _VALUE})
        assert cache.stats()["used_bytes"] <= cache.max_bytes + 8 * 4096, i
    left = cache.get_many([f"k{i:03d}" for i in range(400)])
    assert 40 <= len(left) < 100
    kept = sorted(int(k[1:]) for k in left)
    assert kept == list(range(400 - len(kept), 400))  # a contiguous run of the newest
    cache.close()


def test_one_write_deletes_a_bounded_number_of_rows(tmp_path, clock, monkeypatch):
    big = ResponseCache(tmp_path)  # no cap while filling
    big.put_many({f"k{i:03d}": _VALUE for i in range(300)})
    big.close()
    monkeypatch.setattr(cache_mod, "_PRUNE_BATCH", 7)
    capped = ResponseCache(tmp_path, max_mb=0.05)
    capped.put_many({"new": _VALUE})
    assert len(capped) == 300 + 1 - 7  # far over the cap, but one write paid for 7 rows
    capped.put_many({"newer": _VALUE})
    assert len(capped) == 300 + 2 - 14
    assert capped.get_many(["k000", "k013", "k014"]).keys() == {"k014"}
    capped.close()


def test_no_cap_keeps_everything(tmp_path, clock):
    for cap in (None, 0):
        cache = ResponseCache(tmp_path / str(cap), max_mb=cap)
        cache.put_many({f"k{i}": _VALUE for i in range(200)})
        assert len(cache) == 200 and cache.max_bytes is None
        cache.close()
    with pytest.raises(LLMError, match="cache_max_mb must be >= 0"):
        ResponseCache(tmp_path, max_mb=-1)


def test_prune_by_age_and_stats(tmp_path, clock):
    cache = ResponseCache(tmp_path)
    assert cache.stats()["rows"] == 0 and cache.stats()["oldest"] is None
    for i in range(10):
        cache.put_many({f"k{i}": _VALUE})  # created at t+1 ... t+10
    s = cache.stats()
    assert s["rows"] == 10 and s["newest"] - s["oldest"] == 9
    assert 10_000 < s["data_bytes"] < 11_000 and s["file_bytes"] > 0
    assert cache.prune(5.5, now=s["newest"]) == 4  # rows older than newest - 5.5 s
    assert sorted(cache.get_many([f"k{i}" for i in range(10)])) == [f"k{i}" for i in range(4, 10)]
    with pytest.raises(LLMError, match="must be >= 0"):
        cache.prune(-1)
    cache.clear()
    cache.vacuum()
    assert len(cache) == 0
    cache.close()


def _cli(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "optiforge", "cache", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_cache_cli_stats_prune_clear(tmp_path):
    d = tmp_path / "c"
    out = _cli("stats", "--cache-dir", str(d))
    assert out.returncode == 0 and "no cache yet" in out.stdout
    cache = ResponseCache(d)
    cache.put_many({"old": _VALUE})
    with cache._conn() as conn:  # make one answer 40 days old
        conn.execute("UPDATE answers SET created = created - 40 * 86400 WHERE key = 'old'")
    cache.put_many({"new": _VALUE})
    cache.close()

    out = _cli("stats", "--cache-dir", str(d), "--json", env_extra={"OPTIFORGE_CACHE_MAX_MB": "5"})
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["rows"] == 2 and info["max_bytes"] == 5 * 2**20
    assert "answers:  2" in _cli("stats", "--cache-dir", str(d)).stdout

    out = _cli("prune", "--older-than", "30d", "--cache-dir", str(d))
    assert out.returncode == 0, out.stderr
    assert "deleted 1 answers older than 30d; 1 left" in out.stdout

    out = _cli("prune", "--older-than", "30 parsecs", "--cache-dir", str(d))
    assert out.returncode == 2 and "--older-than must be" in out.stderr
    assert "Traceback" not in out.stderr

    out = _cli("clear", "--cache-dir", str(d))  # no --yes and no terminal: refuses
    assert out.returncode != 0
    out = _cli("clear", "--yes", "--cache-dir", str(d))
    assert out.returncode == 0 and "deleted 1 answers" in out.stdout
    check = ResponseCache(d)
    assert len(check) == 0
    check.close()


def test_parse_age_units():
    from optiforge.cli.cache import parse_age
    from optiforge.errors import ConfigError

    assert parse_age("30d") == 30 * 86400
    assert parse_age("12h") == 43200 and parse_age("1.5m") == 90 and parse_age("2w") == 1209600
    for bad in ("", "30", "d", "-1d", "30 days"):
        with pytest.raises(ConfigError):
            parse_age(bad)


def test_vacuum_while_another_process_writes_is_not_an_error(tmp_path):
    import sqlite3

    cache = ResponseCache(tmp_path)
    cache.put_many({"a": _VALUE})
    other = sqlite3.connect(tmp_path / "llm_cache.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process mid-write
    try:
        assert cache.vacuum(wait_s=0.2) is False
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert cache.vacuum() is True and len(cache) == 1
    cache.close()
