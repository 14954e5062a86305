"""GEPA with a scripted reflection model on a deterministic lookup task (gepa_toy.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optiforge.agents.optim import GEPA, OptimizerError, OptoPrime
from optiforge.agents.optim.base import StepReport
from optiforge.agents.optim.errors import ReplyError
from optiforge.agents.optim.gepa import extract_block, fit_examples, reflection_schema
from optiforge.agents.trainer import train
from optiforge.llm.testing import ScriptedLLM
from optiforge.trace import node

sys.path.insert(0, str(Path(__file__).parent))
import gepa_toy as T

TOY = Path(__file__).parent / "gepa_toy.py"


def test_extract_block_takes_the_last_complete_block():
    assert extract_block("old:\n```\nA\n```\nnew:\n```text\nB\nC\n```") == "B\nC"
    assert extract_block("```\nunterminated") == "unterminated"
    assert extract_block("  plain  ") == "plain"


def scored(scores):
    """A GEPA whose pool holds one candidate per row of validation scores."""
    _m, _llm, opt = T.make(10)
    opt.val_scores = [list(map(float, row)) for row in scores]
    opt.candidates = [opt.values() for _ in scores]
    opt.parents = [[] for _ in scores]
    return opt


def test_pareto_front_and_dominated_candidates():
    opt = scored([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    assert opt.pareto_front() == [{0, 1}, {1}, {2, 3}, {0, 1, 2, 3, 4}]
    # 0 is best only where 1 is too; 4 only where everyone is; 3 ties 2 exactly (older kept).
    assert opt.front_weights() == {1: 3, 2: 2}
    assert opt.best_index == 1


def test_parent_sampling_is_proportional_to_front_wins_and_seeded():
    opt = scored([[1, 1, 1, 0], [0, 0, 0, 1]])
    assert opt.front_weights() == {0: 3, 1: 1}
    draws = [opt.select_parent() for _ in range(4000)]
    assert 0.72 < draws.count(0) / len(draws) < 0.78
    again = scored([[1, 1, 1, 0], [0, 0, 0, 1]])
    assert [again.select_parent() for _ in range(4000)] == draws


def test_search_improves_and_accepts_only_strict_minibatch_gains():
    calls = {"n": 0}

    def sometimes_wrong(messages, **kw):
        calls["n"] += 1
        good = T.reflector(messages, **kw)
        if calls["n"] % 2:
            return good
        # Every other reply breaks the rules: its child must be rejected.
        reply = json.loads(good)
        reply["new_value"] = reply["new_value"].replace(": fruit", ": vegetable")
        return json.dumps(reply)

    module = T.Lookup()
    opt = GEPA(module, ScriptedLLM(sometimes_wrong), max_metric_calls=200, workers=1)
    judge = T.CountingJudge()
    res = opt.optimize(module, T.TRAIN, judge, T.VAL)
    assert res.initial_val_score == 0.0 and res.best_val_score == 1.0
    mutations = [h for h in opt.history if "child_scores" in h]
    assert any(not h["accepted"] for h in mutations) and any(h["accepted"] for h in mutations)
    for h in mutations:
        assert h["accepted"] == (sum(h["child_scores"]) > sum(h["parent_scores"]))
    assert len(opt.candidates) == 1 + sum(bool(h.get("accepted")) for h in opt.history)
    # Round robin along a lineage: a parent's successive children rewrite alternate params.
    params = [h["parameter"] for h in opt.history if "parameter" in h]
    assert {"fruit_rules", "veg_rules"} <= set(params)
    # The module ends on the best candidate.
    assert opt.values() == res.best_values
    assert all(module(x).value == y for x, y in T.VAL)


def test_budget_counts_every_example_judged():
    judge = T.CountingJudge()
    module, _llm, opt = T.make(50, minibatch_size=3)
    res = opt.optimize(module, T.TRAIN, judge, T.VAL)
    assert res.metric_calls == opt.metric_calls == judge.calls
    starts = [len(T.VAL)] + [h["metric_calls"] for h in opt.history[:-1]]
    assert all(s < 50 for s in starts)  # no iteration started with the budget spent
    assert 50 <= res.metric_calls <= 50 + 2 * 3 + len(T.VAL)
    with pytest.raises(OptimizerError, match="budget"):
        T.make(10)[2].optimize(module, T.TRAIN, judge, T.VAL, max_metric_calls=0)


def test_merge_combines_two_lineages():
    module, _llm, opt = T.make(1, use_merge=True)
    fruits = "\n".join(f"{x}: {y}" for x, y in T.VAL if y == "fruit")
    vegs = "\n".join(f"{x}: {y}" for x, y in T.VAL if y == "vegetable")
    seed = opt.values()
    opt.candidates = [seed, {**seed, "fruit_rules": fruits}, {**seed, "veg_rules": vegs}]
    opt.parents = [[], [0], [0]]
    opt.origins = ["seed", "reflect:fruit_rules", "reflect:veg_rules"]
    opt.val_scores = [[0.0] * 8, [1.0] * 4 + [0.0] * 4, [0.0] * 4 + [1.0] * 4]
    opt.discovered_at = [0, 0, 0]
    opt.next_param = [0, 1, 0]
    opt.merge.update(due=1, last_found_new=True)
    assert opt.merge_values(1, 2, 0) == {"fruit_rules": fruits, "veg_rules": vegs}
    judge = T.CountingJudge()
    res = opt.optimize(module, T.TRAIN, judge, T.VAL)
    entry = opt.history[0]
    assert entry["kind"] == "merge" and entry["accepted"] and entry["parents"] == [1, 2]
    assert len(entry["subsample"]) == 5
    assert opt.origins[3] == "merge" and opt.parents[3] == [1, 2]
    assert res.best_index == 3 and res.best_val_score == 1.0
    # The subsample's scores are reused: full validation costs only the other 3 examples.
    assert judge.calls == len(T.VAL) == opt.metric_calls
    assert opt.merge["tested"] == 1 and opt.merge["due"] == 0


def test_state_round_trips_and_resume_continues(tmp_path):
    state = tmp_path / "gepa.json"
    module, _llm, opt = T.make(40)
    first = opt.optimize(module, T.TRAIN, T.CountingJudge(), T.VAL, state_path=state)
    saved = json.loads(state.read_text())
    assert saved["optimizer"] == "gepa" and saved["version"] == 1
    assert len(saved["candidates"]) == len(first.candidates)

    module2, _llm2, opt2 = T.make(120)
    judge = T.CountingJudge()
    second = opt2.optimize(module2, T.TRAIN, judge, T.VAL, state_path=state)
    assert second.resumed
    assert opt2.candidates[: len(first.candidates)] == saved["candidates"]
    assert second.metric_calls == first.metric_calls + judge.calls
    assert second.best_val_score >= first.best_val_score

    # Another validation set, or another optimizer class, is refused with a clear message.
    with pytest.raises(OptimizerError, match="other parameters or data"):
        T.make(200)[2].optimize(module2, T.TRAIN, judge, T.VAL[:4], state_path=state)
    with pytest.raises(OptimizerError, match="not 'optoprime'"):
        OptoPrime(module2, ScriptedLLM(["{}"])).load(state)


def test_kill_9_then_resume_loses_no_scored_candidate(tmp_path):
    state = tmp_path / "gepa.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TOY.parent), *sys.path])}
    proc = subprocess.Popen([sys.executable, str(TOY), str(state), "400"], env=env)
    try:
        deadline = time.monotonic() + 60
        seen = 0
        while time.monotonic() < deadline and seen < 3:
            time.sleep(0.05)
            with contextlib.suppress(OSError, ValueError, KeyError):
                seen = len(json.loads(state.read_text())["candidates"])
        assert seen >= 3, "the subprocess never saved three candidates"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    saved = json.loads(state.read_text())  # never a torn file: written by rename
    module, _llm, opt = T.make(saved["metric_calls"] + 30)
    res = opt.optimize(module, T.TRAIN, T.CountingJudge(), T.VAL, state_path=state)
    assert res.resumed
    assert opt.candidates[: len(saved["candidates"])] == saved["candidates"]
    assert opt.val_scores[: len(saved["val_scores"])] == saved["val_scores"]
    assert res.metric_calls > saved["metric_calls"]


def test_step_rewrites_one_parameter_from_backward_feedback():
    module, llm, opt = T.make(10)
    for item, label in T.VAL[:2]:
        out = module(item)
        opt.backward(out, f"Wrong: answered {out.value!r}; the expected category is {label!r}.")
    report = opt.step()
    assert report.ok and [c.name for c in report.changes] == ["fruit_rules"]
    assert all(module(x).value == y for x, y in T.VAL[:2])
    assert "#Feedback" in llm.requests[0].prompt


def test_train_runs_the_gepa_search(tmp_path):
    module, _llm, opt = T.make(80)
    result = train(
        module,
        T.TRAIN,
        T.CountingJudge(),
        opt,
        val_set=T.VAL,
        progress=False,
        log_path=tmp_path / "log.json",
        state_path=tmp_path / "state.json",
    )
    assert result.initial_val_score == 0.0 and result.best_val_score > 0.5
    assert result.search["metric_calls"] >= 80 and result.steps
    assert json.loads((tmp_path / "state.json").read_text())["optimizer"] == "gepa"


def test_structured_reflection_sends_a_schema_and_a_worked_example():
    module = T.Lookup()
    seen = []

    def reply(messages, **kw):
        seen.append((messages, kw.get("response_format")))
        return T.reflector(messages, **kw)

    opt = GEPA(module, ScriptedLLM(reply), max_metric_calls=20, workers=1)
    opt.optimize(module, T.TRAIN, T.CountingJudge(), T.VAL)
    messages, schema = seen[0]
    assert schema["json_schema"]["schema"]["required"] == ["analysis", "requirements", "new_value"]
    assert '"new_value"' in messages[0]["content"]  # the worked example
    assert "JSON object" in messages[1]["content"] and "```" not in messages[1]["content"]
    # The requirements the model listed are kept with its analysis in the history.
    accepted = [h for h in opt.history if h.get("accepted")]
    assert accepted and "Requirements:" in accepted[0]["analysis"]


def test_free_text_reflection_reads_the_last_block_without_a_schema():
    module = T.Lookup()
    schemas = []

    def reply(messages, **kw):
        schemas.append(kw.get("response_format"))
        return T.reflector(messages, **kw)

    opt = GEPA(module, ScriptedLLM(reply), max_metric_calls=30, workers=1, structured=False)
    res = opt.optimize(module, T.TRAIN, T.CountingJudge(), T.VAL)
    assert schemas and all(s is None for s in schemas)
    assert res.best_val_score > res.initial_val_score


def test_a_reply_that_misses_the_schema_is_parsed_leniently_or_re_asked():
    module = T.Lookup()
    replies = iter(
        [
            # The grammar was not enforced: JSON with a stray prefix and a trailing comma.
            'Here: {"analysis": "x", "requirements": [], "new_value": "# fruits\\napple: fruit",}',
            "still not JSON",  # the client's own re-ask of the invalid structured reply
        ]
    )
    opt = GEPA(module, ScriptedLLM(lambda m, **kw: next(replies)), workers=1)
    report = StepReport(step=0, optimizer="gepa")
    analysis, value = opt._reflect("fruit_rules", "# fruits", "## Example 1", report)
    assert value == "# fruits\napple: fruit" and analysis == "x"
    same = iter(['{"analysis": "", "requirements": [], "new_value": "# fruits"}'] * 2)
    opt = GEPA(T.Lookup(), ScriptedLLM(lambda m, **kw: next(same)), workers=1, max_attempts=1)
    with pytest.raises(ReplyError, match="no usable reflection"):
        opt._reflect("fruit_rules", "# fruits", "## Example 1", report)
    assert "repeats the current value" in report.errors[-1]


def test_a_numeric_parameter_gets_a_numeric_new_value_field():

    assert reflection_schema(3.5).model_fields["new_value"].annotation is float
    assert reflection_schema(True).model_fields["new_value"].annotation is bool
    assert reflection_schema("text").model_fields["new_value"].annotation is str


def test_a_log_line_per_iteration_for_runs_without_a_progress_bar():
    lines: list[str] = []
    module, _llm, opt = T.make(50, minibatch_size=3)
    res = opt.optimize(module, T.TRAIN, T.CountingJudge(), T.VAL, on_event=lines.append)
    assert lines[0].startswith(f"GEPA: scoring the starting values on {len(T.VAL)} validation")
    assert lines[1] == f"GEPA: starting values score {res.initial_val_score:.3f} on validation"
    iterations = lines[2:]
    assert len(iterations) == len(opt.history)
    for line, h in zip(iterations, opt.history, strict=True):
        assert line.startswith(f"GEPA iteration {h['iteration']}: ")
        assert ("accepted as candidate" in line) == bool(h.get("accepted"))
        assert line.endswith(f"/{50} metric calls")
    assert any("accepted as candidate" in line for line in iterations)


# -- the reflection prompt fits the reflection model's context ------------------------------
def _render(sizes):
    """Example k: a trace of sizes[k] characters (values cut at `chars`) and its feedback."""

    def render(k, chars, code):
        body = (
            f"## Example {k + 1}\n"
            + ("#Code\nop(x)\n" if code else "")
            + "v" * min(sizes[k], chars * 4)
        )
        return body, f"expected answer {k}"

    return render


def test_fit_examples_shortens_traces_but_keeps_every_feedback():
    render = _render([6000, 6000, 6000])
    scores = [1.0, 0.0, 0.0]
    assert fit_examples(render, scores, 1500, None).count("v") == 18000  # no cap
    roomy = fit_examples(render, scores, 1500, 20000)
    assert "#Code" in roomy and roomy.count("v") == 18000
    # Over the cap: code out first, then values shorter, until it fits.
    out = fit_examples(render, scores, 1500, 9000)
    assert len(out) <= 9000 and "#Code" not in out
    assert all(f"expected answer {k}" in out for k in range(3))
    # Tighter than any value cut: each trace is cut to its share, the feedback stays.
    tight = fit_examples(render, scores, 1500, 2000)
    assert len(tight) <= 2000 and all(f"expected answer {k}" in tight for k in range(3))
    assert "cut here to fit" in tight
    # Tighter still: fewer examples, the failures (lowest scores) kept.
    tiny = fit_examples(render, scores, 1500, 500)
    assert len(tiny) <= 500 and "expected answer 0" not in tiny
    assert "expected answer 1" in tiny


class Long(T.Lookup):
    """The lookup program on inputs of 5,000 characters (a long word problem)."""

    def forward(self, item):
        return T.lookup(self.fruit_rules, self.veg_rules, node(item + " " + "w" * 5000))


def search_long(reflector, cap):
    """GEPA over :class:`Long` with values shown up to 6,000 characters and ``cap``."""
    module = Long()
    opt = GEPA(
        module,
        ScriptedLLM(reflector),
        max_metric_calls=12,
        workers=1,
        seed=1,
        value_chars=6000,
        max_prompt_chars=cap,
    )
    return opt, opt.optimize(module, T.TRAIN, T.CountingJudge(), T.VAL)


def test_a_long_trace_is_shortened_to_max_prompt_chars():
    # Values of 5,000 characters (a long word problem and its formulation) would make a
    # prompt far over a 4096-token context; the reflection prompt stays under the cap.
    seen = []

    def reflector(messages, **kw):
        seen.append(sum(len(m["content"]) for m in messages))
        return T.reflector(messages, **kw)

    search_long(reflector, 9000)
    assert seen and max(seen) <= 9000
    seen.clear()
    search_long(reflector, None)
    assert max(seen) > 9000
    with pytest.raises(OptimizerError, match="max_prompt_chars"):
        GEPA(Long(), ScriptedLLM(reflector), max_prompt_chars=0)


def test_a_reflection_over_the_context_is_an_iteration_error_not_a_crash():
    from optiforge.llm.errors import ContextLengthError

    answered = []

    def small_context(messages, **kw):
        if sum(len(m["content"]) for m in messages) > 6000:
            raise ContextLengthError("the request exceeds the available context size")
        answered.append(1)
        return T.reflector(messages, **kw)

    opt, res = search_long(small_context, None)
    errors = [h["error"] for h in opt.history if "error" in h]
    assert errors and all("does not fit the model's context" in e for e in errors)
    assert "max_prompt_chars" in errors[0] and res.metric_calls >= len(T.VAL) and not answered
    # Within the cap the same search reflects.
    opt, _ = search_long(small_context, 5000)
    assert not any("context" in h.get("error", "") for h in opt.history)
    assert answered
