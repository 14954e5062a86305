"""Optimizers on the real embedded models.

SmolLM2-135M checks plumbing only (its answers are nonsense): structured requests go out,
replies are parsed or rejected with a reason, and values keep their types. The seeded
Qwen2.5-Coder-1.5B test asserts a measurable improvement of the score.
"""

from __future__ import annotations

import random

import pytest

from optiforge.agents.optim import OPRO, OptoPrime, StepReport, TextGrad
from optiforge.agents.trainer import train
from optiforge.trace import Module, bundle, node

pytestmark = pytest.mark.slow


@bundle
def add(x, y):
    """Add x and y."""
    return x + y


def _check_protocol(report: StepReport, param, old):
    assert isinstance(report, StepReport)
    assert report.calls >= 1 and report.attempts >= 1
    if report.ok and report.changes:
        assert type(param.value) is type(old)
    if not report.ok:
        assert report.errors and param.value == old


def test_optoprime_plumbing_on_tiny_model(tiny_llm):
    offset = node(1, name="offset", trainable=True, description="added to x")
    opt = OptoPrime([offset], tiny_llm, max_tokens=160, reasoning_chars=200, max_attempts=1)
    opt.backward(add(node(3, name="x"), offset), "The output should be 10.")
    report = opt.step()
    _check_protocol(report, offset, 1)
    assert opt.log and opt.log[-1]["step"] == 1


def test_textgrad_plumbing_on_tiny_model(tiny_llm):
    factor = node(2.0, name="factor", trainable=True)
    opt = TextGrad([factor], tiny_llm, gradient_tokens=48, max_tokens=120, max_attempts=1)
    opt.backward(add(node(3.0, name="x"), factor), "The output should be 10.")
    gradient = factor.feedback
    assert isinstance(gradient, str) and gradient.strip()
    report = opt.step()
    _check_protocol(report, factor, 2.0)
    assert report.detail["gradients"]["factor"] == gradient


def test_trainer_with_opro_plumbing_on_tiny_model(tiny_llm, tmp_path):
    w = node(0.0, name="w", trainable=True)

    class Line(Module):
        def __init__(self):
            self.w = w

        def forward(self, x):
            return self.w * x

    opt = OPRO([w], tiny_llm, maximize=False, n=2, max_tokens=24, max_attempts=1)
    result = train(
        Line(),
        [(1.0, 2.0), (2.0, 4.0)],
        lambda out, target: (out - target) ** 2,
        opt,
        epochs=2,
        batch_size=2,
        maximize=False,
        progress=False,
        log_path=tmp_path / "log.json",
    )
    assert len(result.steps) == 2 and (tmp_path / "log.json").exists()
    assert isinstance(w.value, float)
    assert result.calls >= 1


def test_opro_improves_a_1d_fit_on_coder_model(coder_llm):
    """From a bad start (w = 0 on y = 7x), two OPRO steps must lower the loss."""
    rng = random.Random(0)
    data = [(x, 7.0 * x + rng.gauss(0, 0.1)) for x in (rng.uniform(-2, 2) for _ in range(20))]

    def loss(v):
        return sum((v["w"] * x - y) ** 2 for x, y in data) / len(data)

    w = node(0.0, name="w", trainable=True, description="slope of the line y = w * x")
    opt = OPRO(
        [w],
        coder_llm,
        objective=loss,
        maximize=False,
        n=3,
        seed=0,
        task="Find the slope w of the line y = w * x that fits a data set. The score is the "
        "mean squared error. w is a real number between -30 and 30.",
        hint="Explore boldly: try values far from the ones above, then refine around the best.",
    )
    opt.observe({"w": -1.0}, loss({"w": -1.0}))
    start = loss({"w": 0.0})
    for _ in range(2):
        report = opt.step()
        assert report.ok, report.errors
    assert opt.best["score"] < 0.5 * start
    assert loss({"w": w.value}) == opt.best["score"]
