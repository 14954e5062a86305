"""OptoPrime repairs a buggy function until its unit tests pass.

``clamp_mean`` is a trainable bundle: its source code is a parameter. Each round runs the
unit tests through the traced function; every failing test (a wrong result or an
exception) sends its message back through the graph as feedback, and OptoPrime proposes
new source code, which must compile and keep the signature before it is used.

    python examples/code_repair.py                 # up to 5 rounds on the default model
    python examples/code_repair.py --rounds 8 --no-cache
"""

from __future__ import annotations

import argparse
import time

from optiforge.agents.optim import OptoPrime
from optiforge.config import load_settings
from optiforge.llm.serving import connect
from optiforge.trace import ExecutionError, bundle, node


@bundle(trainable=True)
def clamp_mean(xs, lo, hi):
    """Return the mean of the numbers in xs after clamping each into [lo, hi].
    An empty list has mean 0.0."""
    total = 0
    for x in xs:
        total += min(x, lo)
    return total / len(xs)


#: (xs, lo, hi) -> expected result
TESTS = [
    (([1, 2, 3], 0, 10), 2.0),
    (([-5, 5], 0, 10), 2.5),
    (([20, 30], 0, 10), 10.0),
    (([4], 0, 10), 4.0),
    (([], 0, 1), 0.0),
]


def run_tests(verbose: bool = False) -> tuple[int, list[tuple[object, str]]]:
    """Run every test through the traced function.

    Returns the number passed and, for each failure, the node to send feedback from (the
    output, or the exception node of a crash) with the feedback text.
    """
    passed = 0
    failures: list[tuple[object, str]] = []
    for (xs, lo, hi), expected in TESTS:
        call = f"clamp_mean({xs}, {lo}, {hi})"
        try:
            out = clamp_mean(node(xs, name="xs"), node(lo, name="lo"), node(hi, name="hi"))
        except ExecutionError as err:
            exc = err.exception_node.value
            msg = f"{call} raised {type(exc).__name__}: {exc}; expected {expected}."
            failures.append((err.exception_node, msg))
            if verbose:
                print("  FAIL", msg)
            continue
        if isinstance(out.value, int | float) and abs(out.value - expected) < 1e-9:
            passed += 1
        else:
            msg = f"{call} returned {out.value!r}; expected {expected}."
            failures.append((out, msg))
            if verbose:
                print("  FAIL", msg)
    return passed, failures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--model", default=None)
    ap.add_argument("--no-cache", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    before, _ = run_tests(verbose=True)
    print(f"before: {before}/{len(TESTS)} tests pass")
    with connect(load_settings(model=args.model), cache=False if args.no_cache else None) as llm:
        opt = OptoPrime(
            [clamp_mean.code],
            llm,
            memory=2,
            # A short reasoning and a reply budget that fits the function keep a small
            # model from rambling until the token limit.
            reasoning_chars=300,
            max_tokens=600,
            instruction=(
                "The function in #Variables is buggy. Rewrite it so that every call in #Code "
                "returns what #Feedback expects. Keep the def line unchanged."
            ),
        )
        passed = before
        for _ in range(args.rounds):
            passed, failures = run_tests()
            if not failures:
                break
            opt.zero_feedback()
            for out, msg in failures:
                opt.backward(out, msg)
            report = opt.step()
            status = "new code" if report.changes else "no change"
            print(
                f"round {report.step}: {status}"
                + (f"; rejected: {report.errors}" if report.errors else "")
            )
        passed, _ = run_tests(verbose=True)
        usage = llm.usage.snapshot()
    print(f"after:  {passed}/{len(TESTS)} tests pass")
    print("final code:\n" + clamp_mean.code.value)
    print(
        f"LLM calls: {usage.calls} (cache hits {usage.cache_hits}), tokens: {usage.tokens}, "
        f"wall time: {time.perf_counter() - t0:.1f} s"
    )


if __name__ == "__main__":
    main()
