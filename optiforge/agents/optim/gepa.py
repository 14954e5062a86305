"""GEPA: reflective prompt evolution with a Pareto front (Agrawal et al., ICLR 2026).

GEPA keeps a pool of candidates (one value per trainable parameter), each scored on every
validation example. One iteration of :meth:`GEPA.optimize`:

1. picks a parent from the Pareto front: for each validation example, the candidates with
   the best score on it. Candidates dominated by another front candidate (best on a subset
   of the examples it is best on) are dropped, and a parent is drawn with probability
   proportional to the number of examples on which it is (co-)best;
2. runs the parent on a minibatch of training examples (default 3) with full traces;
3. asks a reflection LLM, shown the traces, outputs and textual feedback, to rewrite ONE
   parameter of the parent (round robin over the parameters, per candidate);
4. runs the child on the same minibatch and accepts it only if its score sum is strictly
   higher; an accepted child is scored on all of validation and joins the pool;
5. optionally (``use_merge``), after an iteration that found a new candidate, tries to merge
   two front candidates that improved different parameters of a common ancestor; the merge
   is kept if it does at least as well as both on a validation subsample.

The budget is counted in metric calls: one call is one example run and judged. With
``state_path``, the whole state (pool, scores, lineage, sampler and RNG state) is written
atomically after every iteration, so an interrupted run (Ctrl-C, SIGTERM, kill -9) resumes
where it stopped and keeps every scored candidate.

GEPA also has the common optimizer interface: after ``backward(output, feedback)``,
:meth:`GEPA.step` rewrites the next parameter (round robin) by the same reflection, without
the search; :func:`optiforge.agents.trainer.train` runs :meth:`GEPA.optimize` instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, create_model

from optiforge.agents.optim.base import Optimizer, StepReport, jsonable
from optiforge.agents.optim.checks import same_value
from optiforge.agents.optim.errors import OptimizerError, ReplyError
from optiforge.agents.optim.params import backward
from optiforge.agents.optim.parsing import extract_json_object
from optiforge.agents.optim.replies import (
    DEFAULT_MAX_PROMPT_CHARS,
    MIN_VALUE_CHARS,
    prompt_chars,
)
from optiforge.agents.optim.rollouts import Evaluation, Rollouts, split_example, usage_total
from optiforge.llm.errors import ContextLengthError
from optiforge.llm.protocol import ChatClient
from optiforge.prompts import render_prompt

log = logging.getLogger("optiforge.agents.optim")

_FENCE = re.compile(r"```[^\n`]*\n(.*?)```", re.DOTALL)


def extract_block(text: str) -> str:
    """The last complete ``` block of a reply, else an unterminated one, else the whole reply.

    The last block, because models often quote the old value first and give the new one last.
    """
    blocks = _FENCE.findall(text)
    if blocks:
        return blocks[-1].strip()
    start = text.find("```")
    if start >= 0:
        rest = text[start + 3 :]
        newline = rest.find("\n")
        return (rest[newline + 1 :] if newline >= 0 else rest).strip()
    return text.strip()


def reflection_schema(current: Any) -> type[BaseModel]:
    """The reply model of a structured reflection; ``new_value`` typed like the value."""
    if isinstance(current, bool):
        kind: Any = bool
    elif isinstance(current, (int, float)):
        kind = float
    else:
        kind = str  # text, code, or JSON text for lists and dicts (parsed after)
    return create_model(
        "Reflection",
        analysis=(str, Field(max_length=1200)),
        requirements=(list[str], Field(max_length=8)),
        new_value=(kind, ...),
    )


_WORD = re.compile(r"[a-z0-9]+(?:[-_'][a-z0-9]+)*")
_QUOTED = re.compile(r"""'([^'\n]{1,40})'|"([^"\n]{1,40})"|`([^`\n]{1,40})`""")
# Three or more short items separated by commas, the last optionally after "or"/"and":
# "billing, technical, account or shipping".
_ENUMERATION = re.compile(
    r"(?:[\w-]+(?: [\w-]+)?\s*,\s*){2,}(?:(?:or|and)\s+)?[\w-]+(?: [\w-]+)?"
    r"|(?:[\w-]+\s*,\s*)+[\w-]+,?\s+(?:or|and)\s+[\w-]+"
)
_STOP_TEXT = (
    "the and for are but not you your with that this these those from into onto than then "
    "its it's their there here what which when where who whom why how all any each every "
    "one only must should shall will would can could may might has have had was were been "
    "being does did doing make makes made use used using always never also just very more "
    "most such same other some own per via etc output outputs answer answers reply replies "
    "response respond text value model"
)
_STOPWORDS = frozenset(_STOP_TEXT.split())


def _norm(word: str) -> str:
    word = word.lower()
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _words(text: str) -> set[str]:
    return {_norm(w) for w in _WORD.findall(text.lower())}


def requirement_stated(requirement: str, value: str) -> bool:
    """Whether ``value`` states ``requirement``, checked on words (no model call).

    Every quoted term and every item of an enumeration in the requirement ("one of
    billing, technical, account or shipping") must appear in the value, and at least half
    of the requirement's content words (three letters or more, not a stop word; a plural
    matches its singular).
    """
    have = _words(value)
    low = requirement.lower()
    items: list[str] = ["".join(m) for m in _QUOTED.findall(requirement)]
    for m in _ENUMERATION.finditer(low):
        items += [x for x in re.split(r",|\bor\b|\band\b", m.group(0)) if x.strip()]
    for item in items:
        words = _words(item) - _STOPWORDS
        if words and not words <= have:
            return False
    content = {w for w in _words(requirement) if len(w) >= 3 and w not in _STOPWORDS}
    return len(content & have) * 2 >= len(content)


def missing_requirements(requirements: Sequence[str], value: Any) -> list[str]:
    """The requirements that ``value`` (text; other values are rendered as JSON) does not
    state, by :func:`requirement_stated`."""
    text = value if isinstance(value, str) else json.dumps(value, default=repr)
    return [r for r in requirements if r.strip() and not requirement_stated(r, text)]


#: Sections of a rendered trace without the steps' code (the first thing left out to fit).
_NO_CODE = ("Inputs", "Others", "Outputs")
#: Feedback is cut last: it holds the expected answer.
_FEEDBACK_CHARS = 1000
_CUT_NOTE = "\n[the examples were cut here to fit the prompt]"
#: Room kept under the prompt cap for a re-ask: the first reply, cut, and the note after it.
_REASK_CHARS = 1400


def fit_examples(
    render: Callable[[int, int, bool], tuple[str, str]],
    scores: Sequence[float],
    value_chars: int,
    budget: int | None,
) -> str:
    """The examples of a reflection prompt in at most ``budget`` characters.

    ``render(k, chars, code)`` gives example ``k`` as (its heading and trace, its feedback),
    with values cut at ``chars`` and with or without the steps' code. The feedback (it holds
    the expected answer) is kept longest. Shortened in this order until the text fits: the
    code left out; values cut at half the length, again and again down to 200 characters;
    each trace cut to an equal share of what the feedback leaves; fewer examples (the lowest
    scores kept: the failures carry the signal); the text cut at the budget.
    ``budget=None`` renders everything at ``value_chars``.
    """

    def join(parts: Sequence[tuple[str, str]], share: int | None = None) -> str:
        out = []
        for body, feedback in parts:
            if share is not None and len(body) > share:
                body = body[: max(0, share - len(_CUT_NOTE))] + _CUT_NOTE
            out.append(f"{body}\n\n#Feedback\n{feedback}")
        return "\n\n".join(out)

    order = list(range(len(scores)))
    out = join([render(k, value_chars, True) for k in order])
    if budget is None or len(out) <= budget:
        return out
    chars = value_chars
    while True:
        parts = [render(k, chars, False) for k in order]
        out = join(parts)
        if len(out) <= budget or chars <= MIN_VALUE_CHARS:
            break
        chars = max(MIN_VALUE_CHARS, chars // 2)
    if len(out) <= budget:
        return out
    worst_first = sorted(order, key=lambda k: (scores[k], k))
    for n in range(len(order), 0, -1):
        kept = [parts[k] for k in sorted(worst_first[:n])]
        overhead = len(join([("", fb) for _, fb in kept]))
        share = (budget - overhead) // n
        if share >= MIN_VALUE_CHARS or n == 1:
            out = join(kept, max(0, share))
            break
    if len(out) > budget:
        out = out[: max(0, budget - len(_CUT_NOTE))] + _CUT_NOTE
    return out


def _fingerprint(items: Sequence[Any]) -> str:
    text = json.dumps([repr(x) for x in items])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class Candidate(BaseModel):
    """One candidate in the pool, as reported by :class:`GEPAResult`."""

    index: int
    parents: list[int]
    origin: str
    val_score: float
    front_count: int
    metric_calls_at_discovery: int


class GEPAResult(BaseModel):
    """The outcome of :meth:`GEPA.optimize`."""

    best_index: int
    best_values: dict[str, Any]
    initial_val_score: float
    best_val_score: float
    candidates: list[Candidate] = Field(default_factory=list)
    iterations: int = 0
    metric_calls: int = 0
    #: LLM calls and tokens of every client involved (optimizer, and ``llms``), this session.
    calls: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0
    resumed: bool = False
    state_path: str | None = None


class GEPA(Optimizer):
    """Reflective evolution of a program's parameters over a Pareto front of candidates.

    Args:
        parameters: trainable nodes, or a Module (``module.parameters()``).
        llm: the reflection model's client.
        minibatch_size: training examples run per iteration (the paper's default: 3).
        max_metric_calls: budget of :meth:`optimize`, in examples run and judged. An
            iteration starts only while calls remain; a child accepted by its last
            iteration is still scored on all of validation (as in the reference code).
        use_merge: try merging two lineages after an iteration that found a new candidate.
        max_merges: merges tried at most (accepted or not).
        merge_subsample: validation examples a merge is first tried on.
        skip_perfect: skip reflection when the parent is perfect on the minibatch.
        perfect_score: the score of a perfect example.
        value_chars: values in the rendered traces longer than this are cut.
        max_prompt_chars: the reflection prompt's length cap, in characters (about 3 per
            token on formulations and tables), so it fits the reflection model's context
            with room for the reply; the traces are shortened to fit (see
            :func:`fit_examples`). The default fits a 4096-token context; None: no cap.
        workers: examples run at once.
        error_score: score of an example whose run raised.
        requirement_asks: structured reflection only: re-asks (each one LLM call) when the
            new value leaves out requirements the reply itself listed; 0 turns the check
            off (see :func:`missing_requirements`).
        requirement_fill: text values only: requirements still missing after the re-asks
            are appended to the new value, one per line (the reflection's own rules).
        remote: runs the evaluations that record no graph (child minibatches, validation,
            merges) elsewhere, e.g. on Ray workers (a
            :data:`~optiforge.agents.optim.rollouts.RemoteRun`); the parent's traced
            minibatch always runs here.
    """

    kind = "gepa"

    def __init__(
        self,
        parameters: Iterable[Any],
        llm: ChatClient,
        *,
        minibatch_size: int = 3,
        max_metric_calls: int | None = None,
        use_merge: bool = False,
        max_merges: int = 5,
        merge_subsample: int = 5,
        skip_perfect: bool = True,
        perfect_score: float = 1.0,
        value_chars: int = 1500,
        max_prompt_chars: int | None = DEFAULT_MAX_PROMPT_CHARS,
        workers: int = 4,
        error_score: float = 0.0,
        max_tokens: int = 2048,
        remote: Callable[..., Any] | None = None,
        requirement_asks: int = 1,
        requirement_fill: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            parameters, llm, max_tokens=max_tokens, max_prompt_chars=max_prompt_chars, **kwargs
        )
        self.remote = remote
        if minibatch_size < 1 or workers < 1 or merge_subsample < 1 or max_merges < 0:
            raise OptimizerError(
                "minibatch_size, workers and merge_subsample must be at least 1, max_merges >= 0"
            )
        if requirement_asks < 0:
            raise OptimizerError("requirement_asks must be at least 0")
        self.requirement_asks = requirement_asks
        self.requirement_fill = requirement_fill
        if max_metric_calls is not None and max_metric_calls < 1:
            raise OptimizerError("max_metric_calls must be at least 1")
        self.minibatch_size = minibatch_size
        self.max_metric_calls = max_metric_calls
        self.use_merge = use_merge
        self.max_merges = max_merges
        self.merge_subsample = merge_subsample
        self.skip_perfect = skip_perfect
        self.perfect_score = perfect_score
        self.value_chars = value_chars
        self.workers = workers
        self.error_score = error_score
        self.rng = random.Random(self.seed or 0)
        # Set by optimize() for the duration of a search.
        self._rollouts: Rollouts | None = None
        self._train: list[Any] = []
        self._val: list[Any] = []
        self._reset_search()
        #: Round robin over parameters for :meth:`step` (outside the search).
        self.step_param = 0

    def _reset_search(self) -> None:
        #: ``{name: value}`` per candidate; candidate 0 is the starting point.
        self.candidates: list[dict[str, Any]] = []
        #: Parent indices per candidate ([] for the seed, two for a merge).
        self.parents: list[list[int]] = []
        self.origins: list[str] = []
        #: Score per candidate per validation example (in validation order).
        self.val_scores: list[list[float]] = []
        self.discovered_at: list[int] = []
        #: Next parameter (index into :attr:`names`) to rewrite, per candidate.
        self.next_param: list[int] = []
        self.metric_calls = 0
        self.iteration = 0
        self.sampler: dict[str, Any] = {"order": [], "pos": 0}
        self.merge: dict[str, Any] = {
            "due": 0,
            "tested": 0,
            "last_found_new": False,
            "performed": [],
            "merged": [],
        }
        #: One small dict per iteration (what was tried and whether it was kept).
        self.history: list[dict[str, Any]] = []
        self.fingerprint: dict[str, Any] = {}

    # -- the Pareto front ----------------------------------------------------------------
    def aggregate(self, index: int) -> float:
        """Mean validation score of candidate ``index``."""
        scores = self.val_scores[index]
        return sum(scores) / len(scores) if scores else 0.0

    @property
    def best_index(self) -> int:
        """The candidate with the highest mean validation score (the oldest on a tie)."""
        if not self.candidates:
            raise OptimizerError("no candidate scored yet: run optimize() first")
        return max(range(len(self.candidates)), key=lambda i: (self.aggregate(i), -i))

    def pareto_front(self) -> list[set[int]]:
        """Per validation example, the candidates with the best score on it."""
        if not self.val_scores:
            return []
        fronts = []
        for k in range(len(self.val_scores[0])):
            top = max(s[k] for s in self.val_scores)
            fronts.append({i for i, s in enumerate(self.val_scores) if s[k] == top})
        return fronts

    def front_weights(self) -> dict[int, int]:
        """``{candidate: examples on which it is (co-)best}`` after dropping dominated ones.

        A front candidate is dominated when another remaining candidate is best on every
        example it is best on, and on more of them or with a higher mean score (an exact tie
        keeps the older one). Dominated candidates are dropped one at a time, weakest first.
        """
        wins: dict[int, set[int]] = {}
        for k, front in enumerate(self.pareto_front()):
            for i in front:
                wins.setdefault(i, set()).add(k)
        alive = sorted(wins, key=lambda i: (self.aggregate(i), -i))  # weakest first
        changed = True
        while changed:
            changed = False
            for y in alive:
                for x in alive:
                    if x == y or not wins[y] <= wins[x]:
                        continue
                    stronger = len(wins[x]) > len(wins[y]) or (
                        self.aggregate(x),
                        -x,
                    ) > (self.aggregate(y), -y)
                    if stronger:
                        alive.remove(y)
                        changed = True
                        break
                if changed:
                    break
        return {i: len(wins[i]) for i in sorted(alive)}

    def select_parent(self) -> int:
        """Draw a parent with probability proportional to its :meth:`front_weights`."""
        weights = self.front_weights()
        if not weights:
            return 0
        ids = list(weights)
        return self.rng.choices(ids, weights=[weights[i] for i in ids], k=1)[0]

    def ancestors(self, index: int) -> set[int]:
        """Every candidate ``index`` descends from."""
        out: set[int] = set()
        todo = list(self.parents[index])
        while todo:
            p = todo.pop()
            if p not in out:
                out.add(p)
                todo.extend(self.parents[p])
        return out

    # -- running candidates --------------------------------------------------------------
    @contextmanager
    def _using(self, values: Mapping[str, Any]) -> Iterator[None]:
        """Set the parameters to ``values`` for the duration, then restore them."""
        before = self.values()
        try:
            for name, value in values.items():
                self.parameter(name).set(value)
            yield
        finally:
            for name, value in before.items():
                self.parameter(name).set(value)

    def _run(
        self, values: Mapping[str, Any], data: Sequence[Any], ids: Sequence[int], record: bool
    ) -> list[tuple[Evaluation, Any]]:
        assert self._rollouts is not None
        with self._using(values):
            out = self._rollouts.run(
                [(i, data[i]) for i in ids], record=record, remote=self.remote, values=values
            )
        self.metric_calls += len(ids)
        for e, _ in out:
            if e.score is None:
                raise OptimizerError(
                    "GEPA needs a score for every example: make the judge return a number or "
                    "(score, feedback)"
                )
        return out

    def _score_val(
        self, values: Mapping[str, Any], known: Mapping[int, float] | None = None
    ) -> list[float]:
        known = dict(known or {})
        todo = [k for k in range(len(self._val)) if k not in known]
        for e, _ in self._run(values, self._val, todo, record=False) if todo else []:
            known[e.index] = float(e.score)  # type: ignore[arg-type]
        return [known[k] for k in range(len(self._val))]

    def _add(
        self, values: dict[str, Any], parents: list[int], origin: str, scores: list[float]
    ) -> int:
        self.candidates.append({k: jsonable(v) for k, v in values.items()})
        self.parents.append(list(parents))
        self.origins.append(origin)
        self.val_scores.append(scores)
        self.discovered_at.append(self.metric_calls)
        # Round robin continues along a lineage: a child rewrites the parameter after the one
        # its parent last had rewritten.
        self.next_param.append(max((self.next_param[p] for p in parents), default=0))
        return len(self.candidates) - 1

    def _minibatch(self) -> list[int]:
        """The next ``minibatch_size`` training ids: epochs of a seeded shuffle."""
        out: list[int] = []
        n = len(self._train)
        while len(out) < min(self.minibatch_size, n):
            order, pos = self.sampler["order"], self.sampler["pos"]
            if pos >= len(order):
                order = list(range(n))
                self.rng.shuffle(order)
                self.sampler = {"order": order, "pos": 0}
                continue
            if order[pos] not in out:
                out.append(order[pos])
            self.sampler["pos"] = pos + 1
        return out

    # -- reflection ------------------------------------------------------------------------
    def _render_examples(
        self, name: str, rollouts: Sequence[tuple[Evaluation, Any]], budget: int | None = None
    ) -> str:
        """Each example's trace (the steps that read ``name``), output and feedback, in at
        most ``budget`` characters (see :func:`fit_examples`)."""
        from optiforge.agents.optim.sections import render_sections

        p = self.parameter(name)
        subs: list[Any] = []
        for e, output in rollouts:
            sub = None
            if output is not None and hasattr(output, "backward"):
                record = backward(output, e.feedback or f"score {e.score:g}")
                if callable(getattr(record, "subgraph", None)):
                    sub = record.subgraph(p)
            subs.append(sub)
        self.zero_feedback()

        def one(k: int, chars: int, code: bool) -> tuple[str, str]:
            e = rollouts[k][0]
            body = ""
            if subs[k] is not None:
                # The inputs (the problem) keep their room while the steps' values shrink.
                s = render_sections(
                    subs[k],
                    parameters=[p],
                    max_value_chars=chars,
                    max_input_chars=max(chars, self.value_chars),
                )
                body = s.text(["Code", "Inputs", "Others", "Outputs"] if code else _NO_CODE)
            if not body:
                x = self._train[e.index] if e.index < len(self._train) else None
                shown = split_example(x)[0] if x is not None else ""
                body = f"#Inputs\n{str(shown)[:chars]}\n\n#Outputs\n"
                body += str(e.output if e.error is None else e.error)[:chars]
            head = f"## Example {k + 1} (score {e.score:g})"
            return f"{head}\n{body}", e.feedback[: max(chars, _FEEDBACK_CHARS)]

        scores = [float(e.score) for e, _ in rollouts]  # type: ignore[arg-type]
        return fit_examples(one, scores, self.value_chars, budget)

    def _examples_budget(self, name: str, current: Any) -> int | None:
        """Characters left for the examples once the rest of the reflection prompt is
        counted (None: no cap)."""
        if self.max_prompt_chars is None:
            return None
        rest = prompt_chars(self.reflection_messages(name, current, ""))
        budget = max(0, self.max_prompt_chars - rest - _REASK_CHARS)
        if budget < _FEEDBACK_CHARS:
            log.warning(
                "gepa: the reflection prompt for %s leaves %d of max_prompt_chars=%d for the "
                "examples; raise it (with the reflection model's context) to show them",
                name,
                budget,
                self.max_prompt_chars,
            )
        return budget

    def reflection_messages(self, name: str, current: Any, examples: str) -> list[dict[str, str]]:
        """The chat messages asking for a new value of ``name`` (exposed for tests).

        With structured output (the default) the reply is a JSON object (analysis, the
        requirements the feedback states, the new value), constrained by a schema and shown
        a worked example; a 1.5B model then names what the feedback asks for far more often
        than in free text. Without it, the reply ends with the new value in a ``` block, as in
        the reference implementation.
        """
        p = self.parameter(name)
        constraint = "" if p.constraint is None else str(p.constraint)
        structured = self.structured
        user = render_prompt(
            "optimizers/gepa_reflect",
            name=name,
            description=p.description or "",
            constraint=f"Constraint: {constraint}" if constraint else "",
            current=current if isinstance(current, str) else json.dumps(current, default=repr),
            examples=examples,
            task=render_prompt(
                "optimizers/gepa_task_json" if structured else "optimizers/gepa_task_block",
                name=name,
            ),
        )
        system = render_prompt("optimizers/gepa_reflect_system")
        if structured:
            system += "\n\n" + render_prompt("optimizers/gepa_reflect_example")
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def _reply_value(self, text: str, parsed: Any, current: Any) -> tuple[str, list[str], Any]:
        """(analysis, requirements, raw new value) from one reply: the schema-validated
        object, else a JSON object found in the text, else the last ``` block (free-text
        replies, which list no requirements)."""
        needs: list[str] = []
        obj = parsed if isinstance(parsed, Mapping) else None
        if obj is None and self.structured:
            found = extract_json_object(text)
            obj = found if isinstance(found, Mapping) and "new_value" in found else None
        if obj is not None:
            analysis = str(obj.get("analysis") or "")
            needs = [str(r) for r in obj.get("requirements") or [] if str(r).strip()]
            if needs:
                analysis += "\nRequirements: " + "; ".join(needs)
            raw: Any = obj.get("new_value", "")
        else:
            analysis = text[: text.find("```")].strip() if "```" in text else ""
            raw = extract_block(text)
        if not isinstance(current, str) and isinstance(raw, str):
            with suppress(ValueError):
                raw = json.loads(raw)
        return analysis.strip(), needs, raw

    def _reflect(
        self, name: str, current: Any, examples: str, report: StepReport
    ) -> tuple[str, Any]:
        """Ask for a new value of ``name``; returns (analysis, checked value) or raises
        ReplyError after ``max_attempts`` unusable replies.

        A usable structured reply whose ``new_value`` leaves out requirements the reply
        itself listed is followed by up to ``requirement_asks`` re-asks naming the missing
        ones (see :meth:`_complete`)."""
        base = messages = self.reflection_messages(name, current, examples)
        schema = reflection_schema(current) if self.structured else None
        for attempt in range(1, self.max_attempts + 1):
            report.attempts = attempt
            temperature = (
                self.temperature if attempt == 1 else max(self.temperature, self.retry_temperature)
            )
            try:
                texts, items = self._chat(
                    messages,
                    schema=schema,
                    temperature=temperature,
                    seed=(self.seed or 0) + 1000 * self.iteration + attempt,
                )
            except ContextLengthError as exc:
                raise ReplyError(self.context_error(messages, exc)) from None
            text = texts[0] if texts else ""
            analysis, needs, raw = self._reply_value(text, items[0] if items else None, current)
            values, errors = self.check({name: raw})
            problem = self._unusable(name, values, errors, current)
            if not problem:
                analysis, value = self._complete(
                    name, current, base, text, schema, analysis, needs, values[name], report
                )
                return analysis[:800], value
            report.errors.append(problem)
            log.warning("gepa: unusable reflection for %s (attempt %d): %s", name, attempt, problem)
            again = (
                "Answer again with the JSON object; new_value must be the complete new value."
                if schema is not None
                else "Give the complete new value inside one ``` block."
            )
            # One failed reply at a time (the latest), so a re-ask stays within the cap.
            note = f"That reply could not be used: {problem[:400]}. {again}"
            messages = self.reask_messages(base, text, note)
        raise ReplyError(f"no usable reflection in {self.max_attempts} attempt(s)")

    @staticmethod
    def _unusable(name: str, values: Mapping[str, Any], errors: Sequence[str], current: Any) -> str:
        """Why a checked reply cannot be used ('' when it can)."""
        if errors:
            return "; ".join(errors)
        if not str(values[name]).strip() or same_value(values[name], current):
            return "the reply repeats the current value or is empty"
        return ""

    def _complete(
        self,
        name: str,
        current: Any,
        messages: list[dict[str, str]],
        text: str,
        schema: type[BaseModel] | None,
        analysis: str,
        needs: list[str],
        value: Any,
        report: StepReport,
    ) -> tuple[str, Any]:
        """Re-ask (at most ``requirement_asks`` times) while ``value`` leaves out some of the
        requirements the reflection listed; keep the reply that misses the fewest. With
        ``requirement_fill``, append to a text value the requirements it still misses.

        Small reflection models often list the right requirements (every allowed answer)
        and then write a new value that states only some of them; naming the missing ones
        fixes most of these. Each re-ask is one more LLM call of the optimizer, counted in
        its usage like any other; ``report.detail["requirement_asks"]`` records them.
        """
        missing = missing_requirements(needs, value)
        asks = 0
        while missing and asks < self.requirement_asks:
            asks += 1
            listed = "\n".join(f"- {r}" for r in missing)
            note = render_prompt("optimizers/gepa_missing", name=name, missing=listed)
            asked = self.reask_messages(messages, text, note)  # the first ask, the latest reply
            try:
                texts, items = self._chat(
                    asked,
                    schema=schema,
                    temperature=self.temperature,
                    seed=(self.seed or 0) + 1000 * self.iteration + 100 + asks,
                )
            except ContextLengthError as exc:  # the re-ask echoes the reply: keep the value
                report.errors.append(f"requirement re-ask did not fit the context: {exc}")
                break
            text = texts[0] if texts else ""
            a2, _, raw = self._reply_value(text, items[0] if items else None, current)
            values, errors = self.check({name: raw})
            if self._unusable(name, values, errors, current):
                continue
            still = missing_requirements(needs, values[name])
            if len(still) < len(missing):
                analysis = a2 or analysis
                value, missing = values[name], still
        if asks:
            report.detail.setdefault("requirement_asks", 0)
            report.detail["requirement_asks"] += asks
            report.detail["requirements_missing"] = missing
        if missing and self.requirement_fill and isinstance(value, str):
            # The constrained rewrite, done mechanically: the model's own general rules,
            # appended to its new text. The child still has to win on the minibatch.
            filled = value.rstrip() + "\n" + "\n".join(r.strip() for r in missing)
            values, errors = self.check({name: filled})
            if not self._unusable(name, values, errors, current):
                value = values[name]
                report.detail["requirements_appended"] = missing
        return analysis, value

    # -- the common interface: one reflection on the collected feedback --------------------
    def _propose(self, report: StepReport) -> tuple[str, dict[str, Any]]:
        from optiforge.agents.optim.sections import render_sections
        from optiforge.trace.feedback import feedback_subgraphs

        names = self.names
        for _ in range(len(names)):
            name = names[self.step_param % len(names)]
            self.step_param += 1
            p = self.parameter(name)
            subs = feedback_subgraphs([p])
            if not subs:
                continue

            def one(
                k: int, chars: int, code: bool, subs: Any = subs, p: Any = p
            ) -> tuple[str, str]:
                s = render_sections(subs[k], parameters=[p], max_value_chars=chars)
                which = ["Code", "Inputs", "Others", "Outputs"] if code else list(_NO_CODE)
                feedback = s.feedback[: max(chars, _FEEDBACK_CHARS)]
                return f"## Example {k + 1}\n" + s.text(which), feedback

            examples = fit_examples(
                one, [0.0] * len(subs), self.value_chars, self._examples_budget(name, p.value)
            )
            report.detail["parameter"] = name
            analysis, value = self._reflect(name, p.value, examples, report)
            return analysis, {name: value}
        return "no feedback reached any parameter: call backward() before step()", {}

    # -- the search -------------------------------------------------------------------------
    def optimize(
        self,
        module: Any,
        train_set: Sequence[Any],
        judge: Callable[[Any, Any], Any],
        val_set: Sequence[Any] | None = None,
        *,
        max_metric_calls: int | None = None,
        state_path: str | Path | None = None,
        llms: Sequence[Any] = (),
        on_candidate: Callable[[int], None] | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> GEPAResult:
        """Run the search until the metric-call budget is spent; set the parameters to the
        best candidate on validation and return what happened.

        ``train_set`` and ``val_set`` hold ``(input, target)`` pairs (or dicts, as for
        :func:`~optiforge.agents.trainer.train`); ``judge(output, target)`` returns a score
        or ``(score, feedback)``. Without ``val_set`` the training set is used. With
        ``state_path``, an existing state file is resumed (it must come from the same
        parameters and data) and the state is saved after every iteration.
        """
        budget = max_metric_calls if max_metric_calls is not None else self.max_metric_calls
        if budget is None or budget < 1:
            raise OptimizerError("GEPA needs a budget: max_metric_calls of at least 1")
        train = list(train_set)
        val = list(val_set) if val_set is not None else train
        if not train or not val:
            raise OptimizerError("GEPA needs a non-empty training set (and validation set)")
        for ex in train[:1] + val[:1]:
            split_example(ex)  # fail fast on a malformed dataset, before any LLM call
        self._train, self._val = train, val
        fingerprint = {
            "parameters": self.names,
            "train": _fingerprint(train),
            "val": _fingerprint(val),
        }
        path = Path(state_path) if state_path is not None else None
        resumed = False
        if path is not None and path.exists():
            self.load(path, restore_values=False)
            if self.fingerprint and self.fingerprint != fingerprint:
                raise OptimizerError(
                    f"the GEPA state {path} was saved for other parameters or data "
                    f"({self.fingerprint}, now {fingerprint}); use another state file or "
                    "delete it to start over"
                )
            resumed = bool(self.candidates)
            log.info(
                "gepa: resumed %s: %d candidates, %d metric calls",
                path,
                len(self.candidates),
                self.metric_calls,
            )
        self.fingerprint = fingerprint
        # An embedded server started lazily inside a rollout's event loop can leave the
        # reflection call (sync, on another loop) hanging: start it before any loop.
        ensure = getattr(self.llm, "ensure_server", None)
        if callable(ensure):
            ensure()
        clients = [self.llm, *llms]
        base_calls, base_tokens = usage_total(clients)
        start = time.perf_counter()
        self._rollouts = Rollouts(module, judge, self.workers, self.error_score)

        def save() -> None:
            if path is not None:
                self.save(path)

        tell = on_event or (lambda _line: None)
        try:
            if not self.candidates:
                tell(
                    f"GEPA: scoring the starting values on {len(self._val)} validation "
                    f"examples (budget {budget} metric calls)"
                )
                seed_values = self.values()
                scores = self._score_val(seed_values)
                self._add(seed_values, [], "seed", scores)
                save()
                tell(f"GEPA: starting values score {self.aggregate(0):.3f} on validation")
                if on_candidate:
                    on_candidate(0)
            while self.metric_calls < budget:
                self.iteration += 1
                entry = self._iterate()
                self.history.append(entry)
                save()
                tell(self._event_line(entry, budget))
                if entry.get("accepted") and on_candidate:
                    on_candidate(entry["child"])
        finally:
            self._rollouts.close()
            self._rollouts = None
        best = self.best_index
        for name, value in self.candidates[best].items():
            self.parameter(name).set(value)
        weights = self.front_weights()
        calls, tokens = usage_total(clients)
        return GEPAResult(
            best_index=best,
            best_values=dict(self.candidates[best]),
            initial_val_score=self.aggregate(0),
            best_val_score=self.aggregate(best),
            candidates=[
                Candidate(
                    index=i,
                    parents=self.parents[i],
                    origin=self.origins[i],
                    val_score=self.aggregate(i),
                    front_count=weights.get(i, 0),
                    metric_calls_at_discovery=self.discovered_at[i],
                )
                for i in range(len(self.candidates))
            ],
            iterations=self.iteration,
            metric_calls=self.metric_calls,
            calls=calls - base_calls,
            tokens=tokens - base_tokens,
            elapsed_s=round(time.perf_counter() - start, 3),
            resumed=resumed,
            state_path=str(path) if path else None,
        )

    def _event_line(self, entry: dict[str, Any], budget: int) -> str:
        """One line on an iteration, for a log: what it tried and what became of it."""
        what = f"{entry.get('kind', 'reflect')}"
        if entry.get("parameter"):
            what += f" {entry['parameter']}"
        if entry.get("skipped"):
            outcome = f"skipped ({entry['skipped']})"
        elif entry.get("error"):
            outcome = f"no proposal ({str(entry['error'])[:120]})"
        elif entry.get("accepted"):
            outcome = (
                f"accepted as candidate {entry.get('child')}, validation "
                f"{float(entry.get('val_score') or 0.0):.3f} (best {self.aggregate(self.best_index):.3f})"
            )
        else:
            outcome = "rejected on the minibatch"
        return (
            f"GEPA iteration {entry.get('iteration')}: {what}: {outcome}; "
            f"{self.metric_calls}/{budget} metric calls"
        )

    def _iterate(self) -> dict[str, Any]:
        """One iteration: a merge when one is due, else a reflective mutation."""
        if self.use_merge and self.merge["due"] > 0 and self.merge["last_found_new"]:
            self.merge["last_found_new"] = False
            entry = self._try_merge()
            if entry is not None:
                return entry
        entry = self._mutate()
        found = bool(entry.get("accepted"))
        self.merge["last_found_new"] = found
        if found and self.use_merge and self.merge["tested"] < self.max_merges:
            self.merge["due"] += 1
        return entry

    def _mutate(self) -> dict[str, Any]:
        parent = self.select_parent()
        batch = self._minibatch()
        entry: dict[str, Any] = {
            "iteration": self.iteration,
            "kind": "reflect",
            "parent": parent,
            "minibatch": batch,
        }
        parent_values = self.candidates[parent]
        rollouts = self._run(parent_values, self._train, batch, record=True)
        before = [float(e.score) for e, _ in rollouts]  # type: ignore[arg-type]
        entry["parent_scores"] = before
        if self.skip_perfect and all(s >= self.perfect_score for s in before):
            self.zero_feedback()
            entry["skipped"] = "perfect on the minibatch"
            return self._finish(entry)
        names = self.names
        name = names[self.next_param[parent] % len(names)]
        self.next_param[parent] += 1
        entry["parameter"] = name
        report = StepReport(step=self.iteration, optimizer=self.kind)
        calls_before = self._usage()
        try:
            examples = self._render_examples(
                name, rollouts, self._examples_budget(name, parent_values[name])
            )
            analysis, value = self._reflect(name, parent_values[name], examples, report)
        except ReplyError as exc:
            entry["error"] = str(exc)
            entry["errors"] = report.errors[-self.max_attempts :]
            return self._finish(entry, calls_before)
        finally:
            self.zero_feedback()
        child_values = {**parent_values, name: value}
        entry["analysis"] = analysis
        entry["new_value"] = str(value)[: self.value_chars]
        for key in ("requirement_asks", "requirements_missing", "requirements_appended"):
            if key in report.detail:
                entry[key] = report.detail[key]
        after = [
            float(e.score)  # type: ignore[arg-type]
            for e, _ in self._run(child_values, self._train, batch, record=False)
        ]
        entry["child_scores"] = after
        if sum(after) <= sum(before):
            entry["accepted"] = False
            return self._finish(entry, calls_before)
        scores = self._score_val(child_values)
        child = self._add(child_values, [parent], f"reflect:{name}", scores)
        entry.update(accepted=True, child=child, val_score=self.aggregate(child))
        log.info(
            "gepa iteration %d: candidate %d (%s of %d) val %.4g",
            self.iteration,
            child,
            name,
            parent,
            self.aggregate(child),
        )
        return self._finish(entry, calls_before)

    def _finish(
        self, entry: dict[str, Any], calls_before: tuple[int, int, int] | None = None
    ) -> dict[str, Any]:
        entry["metric_calls"] = self.metric_calls
        if calls_before is not None:
            now = self._usage()
            entry["llm_calls"] = now[0] - calls_before[0]
            entry["tokens"] = (now[1] - calls_before[1]) + (now[2] - calls_before[2])
        return entry

    # -- merge -------------------------------------------------------------------------------
    def merge_values(self, i: int, j: int, ancestor: int) -> dict[str, Any]:
        """Combine ``i`` and ``j`` over their common ``ancestor``: each parameter comes from
        the descendant that changed it; when both changed it, from the better one."""
        anc, ci, cj = self.candidates[ancestor], self.candidates[i], self.candidates[j]
        out = {}
        for name in self.names:
            a, vi, vj = anc[name], ci[name], cj[name]
            if same_value(vi, vj) or (not same_value(vj, a) and same_value(vi, a)):
                out[name] = vj
            elif same_value(vj, a):
                out[name] = vi
            else:  # both changed it differently
                si, sj = self.aggregate(i), self.aggregate(j)
                out[name] = vi if si > sj else vj if sj > si else self.rng.choice([vi, vj])
        return out

    def _merge_triplet(self) -> tuple[int, int, int] | None:
        ids = list(self.front_weights())
        if len(ids) < 2:
            return None
        for _ in range(10):
            i, j = sorted(self.rng.sample(ids, 2))
            anc_i, anc_j = self.ancestors(i), self.ancestors(j)
            if i in anc_j or j in anc_i:
                continue
            common = [
                a
                for a in sorted(anc_i & anc_j)
                if [i, j, a] not in self.merge["performed"]
                and self.aggregate(a) <= min(self.aggregate(i), self.aggregate(j))
                and any(
                    (
                        same_value(self.candidates[a][n], self.candidates[i][n])
                        or same_value(self.candidates[a][n], self.candidates[j][n])
                    )
                    and not same_value(self.candidates[i][n], self.candidates[j][n])
                    for n in self.names
                )
            ]
            if not common:
                continue
            weights = [self.aggregate(a) for a in common]
            if sum(weights) <= 0:
                weights = [1.0] * len(common)
            return i, j, self.rng.choices(common, weights=weights, k=1)[0]
        return None

    def _try_merge(self) -> dict[str, Any] | None:
        triplet = self._merge_triplet()
        if triplet is None:
            return None
        i, j, ancestor = triplet
        self.merge["performed"].append([i, j, ancestor])
        values = self.merge_values(i, j, ancestor)
        if any(all(same_value(c[n], values[n]) for n in self.names) for c in self.candidates):
            return None  # the merge is a candidate we already have
        si, sj = self.val_scores[i], self.val_scores[j]
        wins_i = [k for k in range(len(si)) if si[k] > sj[k]]
        wins_j = [k for k in range(len(si)) if sj[k] > si[k]]
        ties = [k for k in range(len(si)) if si[k] == sj[k]]
        take = max(1, -(-self.merge_subsample // 3))
        chosen: list[int] = []
        for bucket in (wins_i, wins_j, ties):
            pool = [k for k in bucket if k not in chosen]
            chosen += self.rng.sample(
                pool, min(take, len(pool), self.merge_subsample - len(chosen))
            )
        rest = [k for k in range(len(si)) if k not in chosen]
        chosen += self.rng.sample(rest, min(len(rest), self.merge_subsample - len(chosen)))
        self.merge["tested"] += 1
        self.merge["due"] -= 1
        entry: dict[str, Any] = {
            "iteration": self.iteration,
            "kind": "merge",
            "parents": [i, j],
            "ancestor": ancestor,
            "subsample": chosen,
        }
        sub = {
            e.index: float(e.score) for e, _ in self._run(values, self._val, chosen, record=False)
        }  # type: ignore[arg-type]
        new = sum(sub.values())
        entry["subsample_scores"] = [sub[k] for k in chosen]
        if new < max(sum(si[k] for k in chosen), sum(sj[k] for k in chosen)):
            entry["accepted"] = False
            return self._finish(entry)
        scores = self._score_val(values, known=sub)
        child = self._add(values, [i, j], "merge", scores)
        entry.update(accepted=True, child=child, val_score=self.aggregate(child))
        return self._finish(entry)

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        version, internal, gauss = self.rng.getstate()
        state.update(
            candidates=self.candidates,
            parents=self.parents,
            origins=self.origins,
            val_scores=self.val_scores,
            discovered_at=self.discovered_at,
            next_param=self.next_param,
            metric_calls=self.metric_calls,
            iteration=self.iteration,
            sampler=self.sampler,
            merge=self.merge,
            history=self.history,
            fingerprint=self.fingerprint,
            step_param=self.step_param,
            rng=[version, list(internal), gauss],
        )
        return state

    def load_state_dict(self, state: Mapping[str, Any], *, restore_values: bool = True) -> None:
        super().load_state_dict(state, restore_values=restore_values)
        try:
            candidates = [dict(c) for c in state.get("candidates", [])]
            n = len(candidates)
            lists = {
                k: list(state.get(k, []))
                for k in ("parents", "origins", "val_scores", "discovered_at", "next_param")
            }
            if any(len(v) != n for v in lists.values()):
                raise ValueError("per-candidate lists differ in length")
            for c in candidates:
                if sorted(c) != sorted(self.names):
                    raise ValueError(f"a candidate names {sorted(c)}, not {sorted(self.names)}")
            self.candidates = candidates
            self.parents = [list(map(int, p)) for p in lists["parents"]]
            self.origins = [str(o) for o in lists["origins"]]
            self.val_scores = [[float(s) for s in row] for row in lists["val_scores"]]
            self.discovered_at = [int(x) for x in lists["discovered_at"]]
            self.next_param = [int(x) for x in lists["next_param"]]
            self.metric_calls = int(state.get("metric_calls", 0))
            self.iteration = int(state.get("iteration", 0))
            self.sampler = dict(state.get("sampler", {"order": [], "pos": 0}))
            self.merge = {**self.merge, **dict(state.get("merge", {}))}
            self.history = list(state.get("history", []))
            self.fingerprint = dict(state.get("fingerprint", {}))
            self.step_param = int(state.get("step_param", 0))
            if state.get("rng"):
                version, internal, gauss = state["rng"]
                self.rng.setstate((version, tuple(internal), gauss))
        except (TypeError, ValueError, KeyError) as exc:
            raise OptimizerError(f"invalid GEPA state: {exc}") from None
