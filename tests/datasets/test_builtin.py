"""The shipped NL4Opt and OptiBench datasets: counts, answer variants, categories, filters."""

from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

from optiforge.datasets import ANSWER_FIELDS, DatasetError, Problem, load_dataset


def test_builtins_load_with_documented_counts():
    nl4opt = load_dataset("nl4opt")
    optibench = load_dataset("optibench")
    assert len(nl4opt) == 289 and len(optibench) == 605
    assert nl4opt[0].id == "nl4opt-0001" and optibench[-1].id == "optibench-0605"
    assert all(isinstance(p, Problem) and p.text.strip() for p in nl4opt + optibench)
    # README: 264 numeric answers, 22 infeasible/unbounded, 3 without an answer
    assert Counter(p.answer_kind for p in nl4opt) == {"value": 264, "infeasible": 22, "missing": 3}
    assert Counter(p.category for p in optibench) == {
        "linear/no-table": 342,
        "linear/table": 80,
        "nonlinear/no-table": 133,
        "nonlinear/table": 50,
    }
    p = nl4opt[0]
    assert p.answer == 3000.0 and p.answer_field == "answer" and p.answer_status == "agreed"
    assert "gold_formulation" in p.extra and p.source.startswith("nl4opt/")


def test_package_ships_data_and_attribution():
    data = Path(str(resources.files("optiforge.datasets").joinpath("data")))
    notice = (data / "README.md").read_text(encoding="utf-8")
    for needle in ("MIT License", "Huawei", "Apache-2.0", "ReSocratic", "NL4Opt", "OptiBench"):
        assert needle in notice
    assert (data / "nl4opt.jsonl").stat().st_size > 100_000


def test_answer_variants_nl4opt():
    base = {p.id: p for p in load_dataset("nl4opt")}
    sirl = load_dataset("nl4opt", answer_field="sirl_2025")
    assert all(p.answer_field == "sirl_2025" for p in sirl)
    assert sum(p.scorable for p in sirl) == 245
    assert len(load_dataset("nl4opt", answer_field="sirl_2025", require_answer=True)) == 245
    # LLMOPT's known error on nl4opt-0227 (100 vs the agreed 84)
    llmopt = {p.id: p for p in load_dataset("nl4opt", answer_field="llmopt_2025")}
    assert llmopt["nl4opt-0227"].answer == 100.0 and base["nl4opt-0227"].answer == 84.0
    # the original answer stays available on every variant
    assert llmopt["nl4opt-0227"].answers["answer"].value == 84.0


def test_resocratic_variant_switches_to_the_edited_text():
    base = {p.id: p for p in load_dataset("nl4opt")}
    edited = {p.id: p for p in load_dataset("nl4opt", answer_field="resocratic_nl4opt_e")}
    p0, p1 = base["nl4opt-0014"], edited["nl4opt-0014"]
    assert p0.answer_kind == "infeasible"
    assert p1.answer == 3262500.0 and p1.text != p0.text
    assert p1.original_text == p0.text and "resocratic-edited" in p1.tags
    # unedited problems keep their text; the alias name works too
    alias = {p.id: p for p in load_dataset("nl4opt", answer_field="answer_resocratic")}
    assert alias["nl4opt-0001"].text == base["nl4opt-0001"].text


def test_answer_variants_optibench():
    sirl = {p.id: p for p in load_dataset("optibench", answer_field="sirl")}
    base = {p.id: p for p in load_dataset("optibench")}
    # the fertiliser blend: SIRL takes the last results key (0), the real objective is 21.6375
    assert base["optibench-0034"].answer == 21.6375 and sirl["optibench-0034"].answer == 0.0
    clean = load_dataset("optibench", answer_field="llm4or_clean", require_answer=True)
    assert len(clean) == 403
    assert set(ANSWER_FIELDS["optibench"]) == {"answer", "llmopt", "sirl", "llm4or_clean"}


def test_unknown_answer_field_lists_the_choices():
    with pytest.raises(DatasetError, match="sirl_2025"):
        load_dataset("nl4opt", answer_field="bogus")


def test_category_filters():
    assert len(load_dataset("optibench", category="nonlinear")) == 183
    assert len(load_dataset("optibench", category="nonlinear,table")) == 50
    assert len(load_dataset("optibench", category="linear,no-table")) == 342
    # repeated categories are OR-ed
    assert len(load_dataset("optibench", category=["linear,table", "nonlinear,table"])) == 130
    assert len(load_dataset("nl4opt", category="orlm245")) == 245
    assert len(load_dataset("nl4opt", category="answer-infeasible")) == 22
    with pytest.raises(DatasetError, match="unknown category"):
        load_dataset("optibench", category="quadratic")


def test_ids_and_limit():
    ps = load_dataset("optibench", ids=["optibench-0003", "optibench-0001"])
    assert [p.id for p in ps] == ["optibench-0001", "optibench-0003"]
    assert [p.id for p in load_dataset("nl4opt", limit=3)] == [
        "nl4opt-0001",
        "nl4opt-0002",
        "nl4opt-0003",
    ]
    with pytest.raises(DatasetError, match="unknown problem id"):
        load_dataset("nl4opt", ids=["nl4opt-9999"])
    with pytest.raises(DatasetError, match="limit"):
        load_dataset("nl4opt", limit=-1)


def test_unknown_dataset_name_is_a_clear_error():
    with pytest.raises(DatasetError, match="built-ins are"):
        load_dataset("mamo")
