"""The journal: fsynced appends, tolerant reading of a torn last line, repair before resume."""

import pytest

from optiforge.evals.journal import Journal, read_journal
from optiforge.evals.records import EvalError, ResultRecord


def _rec(i: int) -> ResultRecord:
    return ResultRecord(id=f"p{i}", gt=float(i), gt_kind="value", prediction=float(i))


def test_append_and_read(tmp_path):
    with Journal(tmp_path) as j:
        for i in range(3):
            j.append(_rec(i))
    contents = read_journal(tmp_path)
    assert [r.id for r in contents.records] == ["p0", "p1", "p2"]
    assert contents.torn_bytes == 0
    assert (tmp_path / "results.jsonl").read_bytes().count(b"\n") == 3


def test_torn_last_line_is_ignored_then_repaired(tmp_path):
    with Journal(tmp_path) as j:
        j.append(_rec(0))
        j.append(_rec(1))
    path = tmp_path / "results.jsonl"
    good = path.read_bytes()
    with path.open("ab") as fh:
        fh.write(_rec(2).model_dump_json().encode()[:25])  # a write cut by kill -9
    contents = read_journal(path)
    assert [r.id for r in contents.records] == ["p0", "p1"]
    assert contents.torn_bytes == 25 and contents.good_bytes == len(good)
    j = Journal(tmp_path)
    j.repair()
    assert path.read_bytes() == good
    with j:
        j.append(_rec(3))
    assert [r.id for r in read_journal(path).records] == ["p0", "p1", "p3"]


def test_complete_last_record_without_newline_is_kept(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(
        _rec(0).model_dump_json().encode() + b"\n" + _rec(1).model_dump_json().encode()
    )
    assert [r.id for r in read_journal(path).records] == ["p0", "p1"]
    j = Journal(tmp_path)
    j.repair()
    with j:
        j.append(_rec(2))
    assert [r.id for r in read_journal(path).records] == ["p0", "p1", "p2"]


def test_corrupt_middle_line_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(_rec(0).model_dump_json() + "\n{garbage\n" + _rec(1).model_dump_json() + "\n")
    with pytest.raises(EvalError, match="line 2"):
        read_journal(path)


def test_latest_record_per_id_wins(tmp_path):
    with Journal(tmp_path) as j:
        j.append(_rec(0))
        j.append(_rec(0).model_copy(update={"prediction": 99.0}))
    assert read_journal(tmp_path).latest()["p0"].prediction == 99.0
