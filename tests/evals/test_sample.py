"""The fixed README samples are exactly what the documented rule generates."""

import pytest

from optiforge.datasets import DatasetError, load_dataset
from optiforge.evals.sample import (
    DERIVED_RULES,
    builtin_samples,
    fresh_excluded,
    fresh_sample,
    load_sample,
    readme_sample,
    render_derived_file,
    render_fresh_file,
    render_sample_file,
    samples_dir,
)


@pytest.mark.parametrize("dataset", ["nl4opt", "optibench"])
def test_shipped_sample_matches_the_rule(dataset):
    shipped = (samples_dir() / f"{dataset}-readme40.txt").read_text(encoding="utf-8")
    assert shipped == render_sample_file(dataset)
    ids = load_sample(f"{dataset}-readme40")
    assert ids == readme_sample(dataset) and len(ids) == len(set(ids)) == 40
    problems = load_dataset(dataset, ids=ids)
    assert all(p.answer_kind == "value" for p in problems)


def test_sample_properties():
    nl = load_dataset("nl4opt", ids=load_sample("nl4opt-readme40"))
    assert all(p.answer_status == "agreed" for p in nl)
    ob = load_dataset("optibench", ids=load_sample("optibench-readme40"))
    assert all(p.notes is None and "nl4opt-overlap" not in p.tags for p in ob)
    cats = {c: sum(p.category == c for p in ob) for c in {p.category for p in ob}}
    assert cats == {
        "linear/no-table": 23,
        "linear/table": 5,
        "nonlinear/no-table": 9,
        "nonlinear/table": 3,
    }
    assert set(builtin_samples()) == {
        "nl4opt-fresh60",
        "nl4opt-readme40",
        "optibench-fresh60",
        "optibench-readme40",
        *DERIVED_RULES,
    }


@pytest.mark.parametrize("dataset", ["nl4opt", "optibench"])
def test_fresh_sample_matches_the_rule_and_is_held_out(dataset):
    shipped = (samples_dir() / f"{dataset}-fresh60.txt").read_text(encoding="utf-8")
    assert shipped == render_fresh_file(dataset)
    ids = load_sample(f"{dataset}-fresh60")
    assert ids == fresh_sample(dataset) and len(ids) == len(set(ids)) == 60
    excluded = fresh_excluded()
    assert set(load_sample(f"{dataset}-readme40")) <= excluded
    assert not set(ids) & excluded
    assert all(p.answer_kind == "value" for p in load_dataset(dataset, ids=ids))


def test_sample_from_file_and_unknown(tmp_path):
    f = tmp_path / "ids.txt"
    f.write_text("nl4opt-0001\nnl4opt-0002\n")
    assert load_sample(str(f)) == ["nl4opt-0001", "nl4opt-0002"]
    with pytest.raises(DatasetError, match="nl4opt-readme40"):
        load_sample("nope")


@pytest.mark.parametrize("dataset", ["nl4opt", "optibench"])
def test_readme_lists_the_sample_ids(dataset):
    """README names the ids of each fixed sample; they must be the shipped ones."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    line = next(x for x in readme.splitlines() if x.startswith(f"- `{dataset}-readme40` ("))
    listed = [f"{dataset}-{n.strip()}" for n in line.split(": ", 1)[1].split(",")]
    assert listed == load_sample(f"{dataset}-readme40")


@pytest.mark.parametrize("name", sorted(DERIVED_RULES))
def test_derived_samples_match_their_rule(name):
    shipped = (samples_dir() / f"{name}.txt").read_text(encoding="utf-8")
    assert shipped == render_derived_file(name)


def test_derived_samples_keep_test_and_training_apart():
    excluded = fresh_excluded()
    for d in ("nl4opt", "optibench"):
        fresh = set(load_sample(f"{d}-fresh60"))
        readme = set(load_sample(f"{d}-readme40"))
        test = set(load_sample(f"{d}-complex-test"))
        train = set(load_sample(f"{d}-complex-train"))
        tune = set(load_sample(f"{d}-tune-train")) | set(load_sample(f"{d}-tune-val"))
        assert len(test) == len(train) or len(test) + 1 == len(train)
        assert not test & excluded, "the complex test half holds only never-named ids"
        assert not (test | train) & fresh and not test & train
        assert not tune & (fresh | readme | test | train)
        assert all(p.answer_kind == "value" for p in load_dataset(d, ids=sorted(tune | test)))
    tables = load_dataset("optibench", ids=load_sample("optibench-complex-test"))
    assert all(p.category.endswith("/table") for p in tables)
    long20 = load_dataset("optibench", ids=load_sample("optibench-long20"))
    assert len(long20) == 20 and min(len(p.text) for p in long20) > 1300
    assert {p.id for p in long20} <= set(load_sample("optibench-complex-train"))
