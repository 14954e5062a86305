"""Scoring rules on hand-made cases: tolerances, infeasible, missing answers, rounding."""

import pytest

from optiforge.evals.scoring import DEFAULT_RULE, RULES, is_correct, score_all


def test_default_rule_is_the_strict_one():
    assert DEFAULT_RULE == "strict_1e-6"
    assert set(RULES) == {"strict_1e-6", "rel_1e-4", "dp2", "orlm_round_5pct"}


@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        (3000.0, 3000.0, True),
        (3000.002, 3000.0, True),  # 0.002 / 3001 < 1e-6
        (3000.01, 3000.0, False),  # 3.3e-6
        (0.0, 0.0, True),
        (5e-7, 0.0, True),  # |gt| + 1 keeps small answers sane
        (2e-6, 0.0, False),
        (-10.0, 10.0, False),
        (2333.33, 2333.3333333, False),  # a 2-dp answer set fails the strict rule
    ],
)
def test_strict_rule(pred, gt, expected):
    assert is_correct(pred, "value", gt, "value") is expected


def test_relative_1e4_rule():
    assert is_correct(100.009, "value", 100.0, "value", "rel_1e-4")
    assert not is_correct(100.02, "value", 100.0, "value", "rel_1e-4")
    assert is_correct(5e-5, "value", 0.0, "value", "rel_1e-4")
    assert not is_correct(2e-4, "value", 0.0, "value", "rel_1e-4")
    assert is_correct(2333.33, "value", 2333.3333333, "value", "rel_1e-4")


def test_two_decimal_rule_accepts_rounded_answer_sets():
    assert is_correct(2333.3333333, "value", 2333.33, "value", "dp2")
    assert is_correct(21.64, "value", 21.6375, "value", "dp2")
    assert not is_correct(21.66, "value", 21.6375, "value", "dp2")


def test_orlm_rule_rounds_then_allows_five_percent():
    assert is_correct(104.4, "value", 100.0, "value", "orlm_round_5pct")
    assert is_correct(105.4, "value", 100.2, "value", "orlm_round_5pct")  # 105 vs 100
    assert not is_correct(105.6, "value", 100.0, "value", "orlm_round_5pct")  # 106
    assert is_correct(0.4, "value", 0.0, "value", "orlm_round_5pct")  # both round to 0
    assert not is_correct(0.6, "value", 0.0, "value", "orlm_round_5pct")
    assert is_correct(-99.0, "value", -100.0, "value", "orlm_round_5pct")


@pytest.mark.parametrize("rule", sorted(RULES))
def test_infeasible_ground_truth_needs_an_infeasible_prediction(rule):
    assert is_correct(None, "infeasible", None, "infeasible", rule) is True
    assert is_correct(0.0, "value", None, "infeasible", rule) is False
    assert is_correct(None, "none", None, "infeasible", rule) is False


@pytest.mark.parametrize("rule", sorted(RULES))
def test_value_ground_truth_rejects_infeasible_and_empty_predictions(rule):
    assert is_correct(None, "infeasible", 5.0, "value", rule) is False
    assert is_correct(None, "none", 5.0, "value", rule) is False
    assert is_correct(float("nan"), "value", 5.0, "value", rule) is False
    assert is_correct(float("inf"), "value", 5.0, "value", rule) is False


def test_missing_ground_truth_is_not_scored():
    assert score_all(3.0, "value", None, "missing") == {r: None for r in RULES}
    assert is_correct(None, "infeasible", None, "missing") is None


def test_unknown_rule_raises():
    with pytest.raises(KeyError, match="unknown scoring rule"):
        is_correct(1.0, "value", 1.0, "value", "nope")
