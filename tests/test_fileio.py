"""write_text_atomic: whole file or the old one, never a half; no temp file left behind."""

from __future__ import annotations

import pytest

from optiforge.fileio import write_text_atomic


def test_writes_creates_parents_and_replaces(tmp_path):
    target = tmp_path / "a" / "b" / "state.json"
    assert write_text_atomic(target, "one") == target
    write_text_atomic(target, "two ✓", fsync=False)
    assert target.read_text(encoding="utf-8") == "two ✓"
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "state.json"
    write_text_atomic(target, "old")
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(target, "bad \ud800 surrogate")
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
