"""User JSONL/CSV datasets: column mappings, answers, and malformed input errors."""

import json

import pytest

from optiforge.datasets import DatasetError, load_dataset, parse_answer, read_id_list


def _jsonl(tmp_path, rows, name="mine.jsonl"):
    path = tmp_path / name
    path.write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n",
        encoding="utf-8",
    )
    return path


def test_jsonl_with_default_columns(tmp_path):
    path = _jsonl(
        tmp_path,
        [
            {"id": "a", "question": "max x, x <= 3", "answer": 3, "type": "linear"},
            {"id": "b", "question": "infeasible one", "answer": "No Best Solution"},
            {"id": "c", "question": "unknown", "answer": None, "tags": "hard, mine"},
        ],
    )
    ps = load_dataset(path)
    assert [p.id for p in ps] == ["a", "b", "c"]
    assert ps[0].answer == 3.0 and ps[0].answer_kind == "value" and ps[0].problem_type == "linear"
    assert ps[1].answer_kind == "infeasible" and ps[2].answer_kind == "missing"
    assert ps[2].tags == ("hard", "mine") and ps[0].dataset == "mine"
    assert len(load_dataset(path, require_answer=True)) == 2
    assert [p.id for p in load_dataset(path, category="hard")] == ["c"]


def test_column_mapping_and_alternative_answer_column(tmp_path):
    path = _jsonl(
        tmp_path,
        [
            {"pid": 7, "body": "min y", "gt": "1,250.5", "other": 3},
            {"pid": 8, "body": "min z", "gt": "", "other": "infeasible"},
        ],
    )
    ps = load_dataset(path, columns=["id=pid", "text=body", "answer=gt"])
    assert [p.id for p in ps] == ["7", "8"]
    assert ps[0].answer == 1250.5 and ps[1].answer_kind == "missing"
    alt = load_dataset(path, columns={"text": "body", "answer": "gt"}, answer_field="other")
    assert alt[0].answer == 3.0 and alt[1].answer_kind == "infeasible"
    assert alt[0].answer_field == "other" and alt[0].answers["answer"].value == 1250.5


def test_missing_ids_get_line_based_ids(tmp_path):
    path = _jsonl(tmp_path, [{"text": "p1"}, {"text": "p2"}], name="noid.jsonl")
    assert [p.id for p in load_dataset(path)] == ["noid-0001", "noid-0002"]


def test_invalid_json_names_file_and_line(tmp_path):
    path = _jsonl(tmp_path, [{"id": "a", "text": "ok"}, '{"id": "b", "text": '])
    with pytest.raises(DatasetError) as err:
        load_dataset(path)
    msg = str(err.value)
    assert str(path) in msg and "line 2" in msg and "invalid JSON" in msg
    assert err.value.line == 2


def test_non_object_line(tmp_path):
    path = _jsonl(tmp_path, [{"id": "a", "text": "ok"}, "[1, 2]"])
    with pytest.raises(DatasetError, match=r"line 2.*JSON object"):
        load_dataset(path)


def test_bad_answer_names_line_and_field(tmp_path):
    path = _jsonl(
        tmp_path,
        [{"id": "a", "text": "ok", "answer": 1}, {"id": "b", "text": "x", "answer": "about 5"}],
    )
    with pytest.raises(DatasetError) as err:
        load_dataset(path)
    assert "line 2" in str(err.value) and "'answer'" in str(err.value)
    assert err.value.field == "answer"


def test_empty_text_and_missing_mapped_column(tmp_path):
    path = _jsonl(tmp_path, [{"id": "a", "text": "  "}])
    with pytest.raises(DatasetError, match=r"line 1, field 'text'.*non-empty"):
        load_dataset(path)
    path = _jsonl(tmp_path, [{"q": "x", "gt": 1}, {"q": "y"}], name="m.jsonl")
    with pytest.raises(DatasetError, match=r"line 2, field 'gt'.*missing"):
        load_dataset(path, columns={"text": "q", "answer": "gt"})


def test_no_text_column_says_how_to_map(tmp_path):
    path = _jsonl(tmp_path, [{"id": "a", "body": "x"}])
    with pytest.raises(DatasetError, match="--column text=COLUMN"):
        load_dataset(path)


def test_duplicate_ids_are_rejected(tmp_path):
    path = _jsonl(tmp_path, [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}])
    with pytest.raises(DatasetError, match=r"line 2.*duplicate id 'a'.*line 1"):
        load_dataset(path)


def test_bad_mapping_and_files(tmp_path):
    path = _jsonl(tmp_path, [{"id": "a", "text": "x"}])
    with pytest.raises(DatasetError, match="unknown field"):
        load_dataset(path, columns={"txt": "text"})
    with pytest.raises(DatasetError, match="FIELD=COLUMN"):
        load_dataset(path, columns=["text"])
    (tmp_path / "x.xlsx").write_text("nope")
    with pytest.raises(DatasetError, match="unsupported file type"):
        load_dataset(tmp_path / "x.xlsx")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DatasetError, match="no problems"):
        load_dataset(tmp_path / "empty.jsonl")
    with pytest.raises(DatasetError, match="built-ins are"):
        load_dataset(tmp_path / "missing.jsonl")


def test_csv_with_multiline_cells(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(
        'id,question,answer,has_table\n1,"line one\nline two",42,true\n2,plain,infeasible,no\n',
        encoding="utf-8",
    )
    ps = load_dataset(path)
    assert ps[0].text == "line one\nline two" and ps[0].answer == 42.0 and ps[0].has_table
    assert ps[1].answer_kind == "infeasible" and ps[1].has_table is False


def test_csv_malformed_rows_name_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("id,text,answer\n1,a,3\n2,b,4,extra\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"line 3.*4 cells but the header has 3"):
        load_dataset(path)
    path.write_text("id,text,answer\n1,a,3\n2,b\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"line 3.*fewer cells"):
        load_dataset(path)
    path.write_text("id,text,answer,has_table\n1,a,3,maybe\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="line 2, field 'has_table'"):
        load_dataset(path)


def test_parse_answer():
    assert parse_answer(" 12.5 ") == (12.5, "value")
    assert parse_answer("Infeasible") == (None, "infeasible")
    assert parse_answer("") == (None, "missing")
    assert parse_answer(float("nan")) == (None, "missing")
    for bad in (True, "12 apples", float("inf"), [1]):
        with pytest.raises(ValueError):
            parse_answer(bad)


def test_read_id_list(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("# comment\na, b\n\nc  # trailing\n")
    assert read_id_list(path) == ["a", "b", "c"]
    with pytest.raises(DatasetError, match="cannot read"):
        read_id_list(tmp_path / "nope.txt")
