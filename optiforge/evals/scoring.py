"""Correctness rules for objective values, as used in the literature.

Each rule compares a prediction with a ground truth. A ground truth of kind
``infeasible`` (no optimal value exists) is matched only by an infeasible prediction; a
``missing`` ground truth is not scored (``None``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

PredictionKind = Literal["value", "infeasible", "none"]

#: The rule accuracy is reported under by default (SIRL / OptiMind / OptMATH papers).
DEFAULT_RULE = "strict_1e-6"


def _strict(pred: float, gt: float) -> bool:
    return abs(pred - gt) / (abs(gt) + 1.0) < 1e-6


def _rel_1e4(pred: float, gt: float) -> bool:
    if gt == 0:
        return abs(pred) <= 1e-4
    return abs(pred - gt) / abs(gt) <= 1e-4


def _dp2(pred: float, gt: float) -> bool:
    # Several answer sets round to 2 decimals (LLMOPT): 2333.333... vs 2333.33.
    return _strict(pred, gt) or abs(pred - gt) <= 0.011


def _orlm(pred: float, gt: float) -> bool:
    # ORLM's released eval (and OptMATH's tool): round both to integers, then <= 5 %.
    # Python's round() (ties to even), as in their scripts.
    p, g = round(pred), round(gt)
    if g == 0:
        return abs(p) <= 0.05
    return abs(p - g) / abs(g) <= 0.05


#: rule name -> (comparison of two finite values, description shown in reports)
RULES: dict[str, tuple[Callable[[float, float], bool], str]] = {
    "strict_1e-6": (_strict, "|pred - gt| / (|gt| + 1) < 1e-6 (SIRL, OptiMind)"),
    "rel_1e-4": (_rel_1e4, "|pred - gt| / |gt| <= 1e-4 (|pred| <= 1e-4 when gt = 0)"),
    "dp2": (_dp2, "strict, or |pred - gt| <= 0.011 (answer sets rounded to 2 decimals)"),
    "orlm_round_5pct": (_orlm, "round both to integers, then relative error <= 5% (ORLM)"),
}


def is_correct(
    pred: float | None,
    pred_kind: PredictionKind,
    gt: float | None,
    gt_kind: str,
    rule: str = DEFAULT_RULE,
) -> bool | None:
    """Grade one prediction under ``rule``; ``None`` when the ground truth is missing.

    - ground truth ``infeasible``: correct iff the prediction is infeasible;
    - ground truth ``value``: correct iff the prediction is a finite value that passes the
      rule (an infeasible or empty prediction is wrong).
    """
    if rule not in RULES:
        raise KeyError(f"unknown scoring rule {rule!r}; known: {sorted(RULES)}")
    if gt_kind == "missing":
        return None
    if gt_kind == "infeasible":
        return pred_kind == "infeasible"
    if gt is None:
        return None
    if pred_kind != "value" or pred is None:
        return False
    try:
        p = float(pred)
    except (TypeError, ValueError):
        return False
    if not math.isfinite(p):
        return False
    return RULES[rule][0](p, float(gt))


def score_all(
    pred: float | None, pred_kind: PredictionKind, gt: float | None, gt_kind: str
) -> dict[str, bool | None]:
    """Grade under every rule in :data:`RULES`."""
    return {name: is_correct(pred, pred_kind, gt, gt_kind, name) for name in RULES}
