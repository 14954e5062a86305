"""A deterministic task for GEPA tests: a lookup program with two trainable rule lists.

``Lookup`` answers an item's category from the lines ``item: category`` in its two
parameters (``fruit_rules`` for fruits, ``veg_rules`` for vegetables; either list may hold
any rule). The judge says which category was expected. ``reflector`` is a scripted
reflection model that reads the feedback in GEPA's prompt and adds the missing rules to the
value it is asked to rewrite, so each accepted child fixes the minibatch's failures. Run as
a script (``python gepa_toy.py STATE BUDGET``) it runs GEPA slowly with a state file, for
the kill -9 test.
"""

from __future__ import annotations

import json
import re
import sys
import time

from optiforge.agents.optim import GEPA
from optiforge.llm.testing import ScriptedLLM
from optiforge.trace import Module, bundle, node

FRUITS = ["apple", "pear", "plum", "fig", "kiwi", "lime", "mango", "peach", "grape", "melon"]
VEGS = ["leek", "kale", "bean", "okra", "corn", "yam", "beet", "chard", "pea", "onion"]
DATA = [(w, "fruit") for w in FRUITS] + [(w, "vegetable") for w in VEGS]
# Validation items are training items too, so rules learned on minibatches show on it.
TRAIN = DATA
VAL = [DATA[i] for i in (0, 3, 6, 9, 11, 14, 17, 19)]


def rules_of(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out


@bundle
def lookup(fruit_rules, veg_rules, item):
    """Answer the category of `item` from the `item: category` lines of both rule lists
    ('unknown' when no line names it)."""
    return {**rules_of(veg_rules), **rules_of(fruit_rules)}.get(item, "unknown")


class Lookup(Module):
    def __init__(self, fruit_rules: str = "# fruits", veg_rules: str = "# vegetables"):
        self.fruit_rules = node(fruit_rules, trainable=True, description="rules for fruits")
        self.veg_rules = node(veg_rules, trainable=True, description="rules for vegetables")

    def forward(self, item):
        return lookup(self.fruit_rules, self.veg_rules, node(item, name="item"))


class CountingJudge:
    """1/0 with feedback naming the expected category; counts its calls (metric calls)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay

    def __call__(self, output, target):
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if output == target:
            return 1.0, "Correct."
        return 0.0, f"Wrong: answered {output!r}; the expected category is {target!r}."


def reflector(messages, **kw):
    """Scripted reflection: add `item: category` for every failure shown in the prompt."""
    user = messages[1]["content"]  # the first request (retries append to it)
    current = user.split("<current>\n", 1)[1].split("\n</current>", 1)[0]
    examples = user.split("# What the program did with", 1)[1]
    added = []
    for chunk in examples.split("## Example")[1:]:
        m = re.search(r"\(str\) item\d*=(\w+)", chunk)
        e = re.search(r"expected category is '(\w+)'", chunk)
        if m and e:
            added.append(f"{m.group(1)}: {e.group(1)}")
    new = "\n".join([current, *added])
    if kw.get("response_format") is not None:  # structured reflection: answer the schema
        return json.dumps(
            {"analysis": "The rules miss some items.", "requirements": added, "new_value": new}
        )
    return f"The rules miss some items.\n```\n{new}\n```"


def make(budget: int, **kwargs):
    module = Lookup()
    llm = ScriptedLLM(reflector)
    opt = GEPA(module, llm, max_metric_calls=budget, workers=1, **kwargs)
    return module, llm, opt


def main(state: str, budget: int) -> None:
    module, _llm, opt = make(budget)
    opt.optimize(module, TRAIN, CountingJudge(delay=0.05), VAL, state_path=state)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
