"""Improve a classification instruction with the trainer and OptoPrime.

A support-ticket router asks the model to label each customer message as billing,
technical, account or shipping. The instruction (its system prompt) is a trainable
parameter. ``train`` runs minibatches of the training split in parallel through the async
client, turns wrong labels into feedback, lets OptoPrime rewrite the instruction, scores
the validation split after every step and keeps the best instruction. The held-out test
split is scored before and after.

    python examples/prompt_classification.py                  # default model, 1 epoch
    python examples/prompt_classification.py --epochs 2 --no-cache --log run.json
    python examples/prompt_classification.py --optimizer opro     # or textgrad
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from optiforge.agents.optim import OPRO, OptoPrime, TextGrad
from optiforge.agents.trainer import evaluate, train
from optiforge.llm import LLM
from optiforge.trace import Module, bundle, node

DATA = Path(__file__).parent / "data" / "support_tickets.jsonl"
LABELS = ("billing", "technical", "account", "shipping")


class TicketRouter(Module):
    """Labels a customer message with one word chosen by the model."""

    def __init__(self, llm: LLM, instruction: str) -> None:
        self.llm = llm
        self.instruction = node(
            instruction,
            trainable=True,
            description="the system prompt that tells the model how to label a message",
            constraint="Plain-language instructions written as a system prompt; no code.",
        )

    @bundle
    async def classify(self, instruction, text):
        """Ask the language model to answer `text` following `instruction` (its system
        prompt). Returns the reply lower-cased, without surrounding spaces and dots."""
        messages = [{"role": "system", "content": instruction}, {"role": "user", "content": text}]
        reply = await self.llm.achat(messages, max_tokens=16, tag="router")
        return reply.text.strip().strip(".").lower()

    async def forward(self, text):
        return await self.classify(self.instruction, text)


def judge(output: str, label: str) -> tuple[float, str]:
    """1 for the exact label, else 0 with feedback saying what was expected."""
    if output == label:
        return 1.0, "Correct."
    return 0.0, (
        f"Wrong: the reply was {output!r} but the correct label is {label!r}. The reply must "
        f"be exactly one of: {', '.join(LABELS)}."
    )


def load_splits(seed: int) -> tuple[list, list, list]:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    random.Random(seed).shuffle(rows)
    pairs = [(r["text"], r["label"]) for r in rows]
    return pairs[:10], pairs[10:20], pairs[20:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--optimizer", choices=["optoprime", "opro", "textgrad"], default="optoprime")
    ap.add_argument("--model", default=None)
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--log", default=None, help="write the per-step JSON log here")
    args = ap.parse_args()

    train_set, val_set, test_set = load_splits(args.seed)
    t0 = time.perf_counter()
    with LLM(model=args.model, cache=False if args.no_cache else None) as llm:
        router = TicketRouter(llm, "Read the customer message and say what it is about.")
        before, _ = evaluate(router, test_set, judge)
        print(f"before: test accuracy {before:.2f} with instruction {router.instruction.value!r}")
        if args.optimizer == "opro":
            # OPRO sees instructions with their batch accuracy, plus a few task examples.
            opt = OPRO(
                router.parameters(),
                llm,
                n=2,
                task=(
                    "Write the system prompt for a model that labels customer messages. Its "
                    f"reply must be exactly one of: {', '.join(LABELS)}."
                ),
                examples=train_set[:3],
            )
        elif args.optimizer == "textgrad":
            opt = TextGrad(router.parameters(), llm)
        else:
            opt = OptoPrime(router.parameters(), llm, memory=2)
        result = train(
            router,
            train_set,
            judge,
            opt,
            epochs=args.epochs,
            batch_size=args.batch_size,
            val_set=val_set,
            log_path=args.log,
        )
        after, _ = evaluate(router, test_set, judge)
        usage = llm.usage.snapshot()
    print(
        f"validation accuracy: {result.initial_val_score:.2f} -> {result.best_val_score:.2f} "
        f"in {len(result.steps)} steps"
    )
    print(f"after:  test accuracy {after:.2f} with instruction {router.instruction.value!r}")
    print(
        f"LLM calls: {usage.calls} (optimizer {usage.by_tag.get(opt.tag, usage).calls}, "
        f"cache hits {usage.cache_hits}), tokens: {usage.tokens}, "
        f"wall time: {time.perf_counter() - t0:.1f} s"
    )


if __name__ == "__main__":
    main()
