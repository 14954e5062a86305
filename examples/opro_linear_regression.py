"""OPRO finds the slope and intercept of a line from data (as in the OPRO paper, sec. 3).

The LLM never sees the data: it sees (w, b) pairs tried so far with their loss, best last,
and proposes new pairs. Run with the embedded default model (Qwen2.5-Coder-1.5B on CPU):

    python examples/opro_linear_regression.py            # 8 steps, 4 candidates each
    python examples/opro_linear_regression.py --steps 10 --no-cache
"""

from __future__ import annotations

import argparse
import random
import time

from optiforge.agents.optim import OPRO
from optiforge.config import load_settings
from optiforge.llm.serving import connect
from optiforge.trace import node

W_TRUE, B_TRUE = 15.0, 14.0


def make_data(n: int = 50, seed: int = 0) -> list[tuple[float, float]]:
    """Points on y = 15 x + 14 with unit Gaussian noise, x in [-1, 1]."""
    rng = random.Random(seed)
    xs = [rng.uniform(-1, 1) for _ in range(n)]
    return [(x, W_TRUE * x + B_TRUE + rng.gauss(0, 1)) for x in xs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0, help="sampling seed")
    ap.add_argument("--model", default=None, help="default: the configured model")
    ap.add_argument("--no-cache", action="store_true", help="always ask the model")
    args = ap.parse_args()

    data = make_data()

    def loss(values: dict) -> float:
        """Mean squared error of the line (w, b) on the data."""
        return sum((values["w"] * x + values["b"] - y) ** 2 for x, y in data) / len(data)

    w = node(0.0, name="w", trainable=True, description="slope of the line")
    b = node(0.0, name="b", trainable=True, description="intercept of the line")
    start = {"w": w.value, "b": b.value}  # a bad start: the flat line y = 0
    t0 = time.perf_counter()
    with connect(load_settings(model=args.model), cache=False if args.no_cache else None) as llm:
        opt = OPRO(
            [w, b],
            llm,
            objective=loss,
            maximize=False,
            n=args.candidates,
            task=(
                "Find the slope w and intercept b of a straight line y = w*x + b that fits a "
                "data set. The score is the mean squared error of the line on the data. "
                "w and b are real numbers between -30 and 30."
            ),
            hint="Explore boldly: try values far from the ones above, then refine around the best.",
            seed=args.seed,
        )
        for _ in range(args.steps):
            report = opt.step()
            best = opt.best
            print(
                f"step {report.step}: {len(report.detail.get('candidates', []))} new candidates, "
                f"best loss {best['score']:.3f} at w={best['values']['w']:.3f}, "
                f"b={best['values']['b']:.3f}"
                + (f" ({len(report.errors)} unusable)" if report.errors else "")
            )
        usage = llm.usage.snapshot()
    elapsed = time.perf_counter() - t0
    print()
    print(f"before: loss {loss(start):.3f} at w={start['w']}, b={start['b']}")
    print(
        f"after:  loss {loss({'w': w.value, 'b': b.value}):.3f} at w={w.value:.3f}, b={b.value:.3f}"
    )
    print(f"true line: w={W_TRUE}, b={B_TRUE} (loss {loss({'w': W_TRUE, 'b': B_TRUE}):.3f})")
    print(
        f"LLM calls: {usage.calls} (cache hits {usage.cache_hits}), tokens: {usage.tokens}, "
        f"wall time: {elapsed:.1f} s"
    )


if __name__ == "__main__":
    main()
