"""Improve a classification instruction with the trainer and OptoPrime.

A support-ticket router asks the model to label each customer message as billing,
technical, account or shipping. The instruction (its system prompt) is a trainable
parameter and starts deliberately weak: "Classify this support ticket." names no label
set, so the model answers with free text and scores about 0. ``train`` runs minibatches
of the training split in parallel through the async client; the judge's feedback says
which label was expected, what the model answered and which labels are allowed; OptoPrime rewrites the instruction
(the improvement it should find: list the four labels, define each briefly, ask for the
label word only), the validation split is scored after every step and the best
instruction is kept. The held-out test split is scored before and after.

Prediction rule: the reply's first line is lower-cased and stripped of surrounding
whitespace and punctuation; it counts as a label only if what is left is exactly one of
the four label words (so "Billing." counts, "billing issue" does not).

Guard against copying: the instruction may name and define the labels but must not
contain the dataset's tickets. If any ticket's text appears in the instruction, every
example scores 0 with feedback saying so (and the best-on-validation instruction is kept,
so such an instruction never wins).

    python examples/prompt_classification.py                  # default model, 1 epoch
    python examples/prompt_classification.py --epochs 2 --no-cache --log run.json
    python examples/prompt_classification.py --optimizer opro     # or textgrad
"""

from __future__ import annotations

import argparse
import json
import random
import re
import string
import time
from pathlib import Path

from optiforge.agents.optim import OPRO, OptoPrime, TextGrad
from optiforge.agents.trainer import evaluate, train
from optiforge.config import load_settings
from optiforge.llm import LLM
from optiforge.llm.serving import connect
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
            constraint=(
                "A plain-language system prompt, no code. It may name the allowed labels and "
                "briefly define each one; it must not contain the dataset's messages or their "
                "answers."
            ),
        )

    @bundle
    async def classify(self, instruction, text):
        """Ask the language model to answer `text` following `instruction` (its system
        prompt). Returns the reply's first line, lower-cased, without surrounding
        whitespace and punctuation."""
        messages = [{"role": "system", "content": instruction}, {"role": "user", "content": text}]
        reply = await self.llm.achat(messages, max_tokens=12, tag="router")
        return normalize(reply.text)

    async def forward(self, text):
        return await self.classify(self.instruction, text)


def normalize(reply: str) -> str:
    """The reply's first non-empty line, lower-cased, stripped of whitespace and
    punctuation at both ends (the prediction rule in the module docstring)."""
    lines = [line for line in reply.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    return first.lower().strip(string.whitespace + string.punctuation)


def _squash(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def make_judge(router: TicketRouter, tickets: list[str]):
    """The feedback function: 1 when the normalized reply is the expected label, else 0
    with feedback naming the expected label and the reply. Scores 0 everywhere while the
    instruction contains a dataset ticket (copying examples is not an instruction)."""
    squashed = [_squash(t) for t in tickets]

    def judge(output: str, label: str) -> tuple[float, str]:
        instruction = _squash(router.instruction.value)
        if any(t and t in instruction for t in squashed):
            return 0.0, (
                "The instruction contains a message from the dataset. Remove it: the "
                "instruction must be general, not a copy of examples."
            )
        if output == label:
            return 1.0, "Correct."
        allowed = ", ".join(LABELS)
        if output in LABELS:
            return 0.0, (
                f"Wrong label: the model answered {output!r}, the expected label is {label!r} "
                f"(allowed labels: {allowed})."
            )
        return 0.0, (
            f"The model answered {output!r}, which is not a label; the expected label is "
            f"{label!r}. The reply must be one word, one of: {allowed}."
        )

    return judge


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
    with connect(load_settings(model=args.model), cache=False if args.no_cache else None) as llm:
        router = TicketRouter(llm, "Classify this support ticket.")
        judge = make_judge(router, [t for t, _ in train_set + val_set + test_set])
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
            opt = OptoPrime(
                router.parameters(),
                llm,
                memory=2,
                instruction=(
                    "Rewrite the instruction in #Variables so that the model's replies become "
                    "the expected labels given in #Feedback."
                ),
            )
        result = train(
            router,
            train_set,
            judge,
            opt,
            epochs=args.epochs,
            batch_size=args.batch_size,
            val_set=val_set,
            seed=args.seed,
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
