"""Trainer bookkeeping with scripted LLMs and deterministic modules."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from optiforge.agents.optim import OPRO, OptimizerError, OptoPrime
from optiforge.agents.trainer import train
from optiforge.llm.testing import ScriptedLLM
from optiforge.trace import Module, bundle, node


@bundle
def apply_style(style, text):
    """Rewrite text in the given style: 'upper', 'lower' or 'title'."""
    return {"upper": text.upper(), "lower": text.lower(), "title": text.title()}.get(style, text)


class Styler(Module):
    def __init__(self, style="none"):
        self.style = node(style, trainable=True, description="the style to apply")

    def forward(self, text):
        return apply_style(self.style, text)


TRAIN = [("ab", "AB"), ("cd", "CD"), ("ef", "EF"), ("gh", "GH")]
VAL = [{"input": "xy", "target": "XY"}, {"input": "zz", "target": "ZZ"}]


def judge(output, target):
    ok = output == target
    return float(ok), "correct" if ok else f"expected {target!r}, got {output!r}"


def style_reply(style):
    return json.dumps({"reasoning": f"use {style}", "suggestion": {"style": style}})


def test_train_improves_keeps_best_and_logs(tmp_path):
    model = Styler()
    llm = ScriptedLLM([style_reply("lower"), style_reply("upper")])
    opt = OptoPrime(model.parameters(), llm)
    log_path = tmp_path / "run.json"
    result = train(
        model,
        TRAIN,
        judge,
        opt,
        epochs=1,
        batch_size=2,
        val_set=VAL,
        log_path=log_path,
        progress=False,
    )
    assert result.initial_val_score == 0.0
    assert result.best_val_score == 1.0 and result.final_val_score == 1.0
    assert result.best_parameters == {"style": "upper"}
    assert model.style.value == "upper"
    assert [s.val_score for s in result.steps] == [0.0, 1.0]
    assert [s.improved for s in result.steps] == [False, True]
    assert len(result.steps[0].batch) == 2 and len(result.steps[0].feedback) == 2
    # Both examples' feedback of the batch reached the optimizer's single prompt.
    first_prompt = llm.requests[0].prompt
    assert first_prompt.count("expected") == 2
    assert result.calls == 2 and result.steps[0].optimizer_calls == 1
    saved = json.loads(log_path.read_text())
    assert len(saved["steps"]) == 2
    assert saved["steps"][1]["parameters"] == {"style": "upper"}
    assert saved["steps"][1]["changes"][0]["new"] == "upper"
    assert "total_tokens" in saved["steps"][0]


def test_early_stop_restores_best():
    model = Styler("upper")
    llm = ScriptedLLM([style_reply("lower"), style_reply("title"), style_reply("upper")])
    opt = OptoPrime(model.parameters(), llm)
    result = train(
        model, TRAIN, judge, opt, epochs=3, batch_size=2, val_set=VAL, patience=2, progress=False
    )
    assert result.stopped_early
    assert len(result.steps) == 2
    assert result.best_val_score == 1.0
    assert model.style.value == "upper"  # the best parameters are restored


def test_examples_run_in_parallel_threads():
    seen = set()
    barrier = threading.Barrier(2, timeout=5)

    @bundle
    def slow_style(style, text):
        seen.add(threading.get_ident())
        barrier.wait()  # deadlocks unless two examples run at the same time
        return text.upper() if style == "upper" else text

    class M(Module):
        def __init__(self):
            self.style = node("none", trainable=True)

        def forward(self, text):
            return slow_style(self.style, text)

    model = M()
    opt = OptoPrime(model.parameters(), ScriptedLLM(style_reply("upper")))
    result = train(model, TRAIN[:2], judge, opt, batch_size=2, workers=2, progress=False)
    # The barrier already proves two examples ran at once; the pools of later evaluations
    # may start new threads, whose idents Python 3.11 reuses and 3.10 does not.
    assert len(seen) >= 2
    assert result.steps[0].train_score == 0.0
    assert model.style.value == "upper"


def test_async_module_and_async_judge():
    @bundle
    async def astyle(style, text):
        await asyncio.sleep(0)
        return text.upper() if style == "upper" else text

    class M(Module):
        def __init__(self):
            self.style = node("none", trainable=True)

        async def forward(self, text):
            return await astyle(self.style, text)

    async def ajudge(output, target):
        return judge(output, target)

    model = M()
    opt = OptoPrime(model.parameters(), ScriptedLLM(style_reply("upper")))
    result = train(model, TRAIN, ajudge, opt, batch_size=4, val_set=VAL, progress=False)
    assert result.best_val_score == 1.0


def test_exceptions_become_feedback():
    @bundle(trainable=True)
    def parse(text):
        return int(text)

    class M(Module):
        def forward(self, text):
            return parse(text)

    fixed = "def parse(text):\n    return int(text.strip() or 0)\n"
    llm = ScriptedLLM(json.dumps({"reasoning": "r", "suggestion": {"__code_parse": fixed}}))
    model = M()
    opt = OptoPrime([parse.code], llm)
    data = [(" 3 ", 3), ("", 0)]
    result = train(
        model, data, lambda o, t: float(o == t), opt, batch_size=2, error_score=0.0, progress=False
    )
    assert "ValueError" in result.steps[0].feedback[1]
    assert "ValueError" in llm.requests[0].prompt
    assert parse("").value == 0


def test_opro_gets_batch_mean_scores():
    w = node(0.0, name="w", trainable=True)

    class Line(Module):
        def __init__(self):
            self.w = w

        def forward(self, x):
            return self.w * x

    llm = ScriptedLLM(['{"suggestion": {"w": 2.0}}', '{"suggestion": {"w": 3.0}}'])
    opt = OPRO([w], llm, maximize=False, n=1)
    data = [(1.0, 2.0), (2.0, 4.0)]
    result = train(
        Line(),
        data,
        lambda o, t: (o - t) ** 2,
        opt,
        epochs=2,
        batch_size=2,
        maximize=False,
        progress=False,
    )
    assert [h["score"] for h in opt.history] == [10.0, 0.0]
    assert result.best_val_score == 0.0 and w.value == 2.0


def test_bad_inputs_fail_fast():
    model = Styler()
    opt = OptoPrime(model.parameters(), ScriptedLLM([]))
    with pytest.raises(OptimizerError, match="empty"):
        train(model, [], judge, opt, progress=False)
    with pytest.raises(OptimizerError, match="pairs"):
        train(model, ["just text"], judge, opt, progress=False)
    with pytest.raises(OptimizerError, match="input"):
        train(model, [{"question_text": 1}], judge, opt, progress=False)
    with pytest.raises(OptimizerError, match="needs scores"):
        train(model, TRAIN, lambda o, t: "text only", opt, val_set=VAL, progress=False)


def test_interrupted_training_resumes_from_its_state_file(tmp_path):
    replies = [style_reply(s) for s in ("lower", "title", "lower", "upper")]

    def run(state, judge_fn, llm):
        model = Styler()
        opt = OptoPrime(model.parameters(), llm)
        result = train(
            model,
            TRAIN,
            judge_fn,
            opt,
            epochs=2,
            batch_size=2,
            val_set=VAL,
            workers=1,
            progress=False,
            state_path=state,
        )
        return model, result

    # Reference: the same run, never interrupted.
    _, whole = run(tmp_path / "whole.json", judge, ScriptedLLM(replies))
    assert len(whole.steps) == 4

    # Interrupted (as by Ctrl-C) while judging the third step's batch.
    state = tmp_path / "state.json"
    calls = {"n": 0}

    def flaky(output, target):
        calls["n"] += 1
        if calls["n"] == 2 + 2 * (2 + 2) + 1:  # initial val, 2 x (batch + val), then stop
            raise KeyboardInterrupt
        return judge(output, target)

    with pytest.raises(KeyboardInterrupt):
        run(state, flaky, ScriptedLLM(replies))
    saved = json.loads(state.read_text())
    assert saved["step"] == 2 and saved["optimizer"]["step_count"] == 2
    assert (saved["format"], saved["version"], saved["kind"]) == ("optiforge.state", 1, "training")
    assert saved["parameters"] == saved["result"]["best_parameters"]

    llm = ScriptedLLM(replies[2:])  # only the remaining steps may ask the model
    model, resumed = run(state, judge, llm)
    assert resumed.resumed_steps == 2 and len(llm.requests) == 2
    assert [s.val_score for s in resumed.steps] == [s.val_score for s in whole.steps]
    assert model.style.value == "upper" and resumed.best_val_score == 1.0
    with pytest.raises(OptimizerError, match="other data or settings"):
        train(
            Styler(),
            TRAIN[:2],
            judge,
            OptoPrime(Styler().parameters(), llm),
            val_set=VAL,
            progress=False,
            state_path=state,
        )


def test_training_state_of_the_old_format_still_resumes(tmp_path):
    """A state file written before the shared format (optiforge.train-state/1, with the
    optimizer's version-1 state inside) resumes like a current one."""
    replies = [style_reply(s) for s in ("lower", "title", "lower", "upper")]

    def run(state, llm, max_steps=None):
        model = Styler()
        result = train(
            model,
            TRAIN,
            judge,
            OptoPrime(model.parameters(), llm),
            epochs=2,
            batch_size=2,
            val_set=VAL,
            workers=1,
            progress=False,
            state_path=state,
            max_steps=max_steps,
        )
        return model, result

    state = tmp_path / "state.json"
    run(state, ScriptedLLM(replies), max_steps=2)
    new = json.loads(state.read_text())
    opt_state = {
        k: v for k, v in new["optimizer"].items() if k not in ("format", "kind")
    }  # version 1, optimizer, step_count, parameters, log, memory
    old = {
        "format": "optiforge.train-state/1",
        "fingerprint": new["fingerprint"],
        "step": new["step"],
        "since_best": new["since_best"],
        "best_values": new["parameters"],
        "result": new["result"],
        "optimizer": opt_state,
    }
    state.write_text(json.dumps(old))
    llm = ScriptedLLM(replies[2:])
    model, resumed = run(state, llm)
    assert resumed.resumed_steps == 2 and len(llm.requests) == 2
    assert model.style.value == "upper" and resumed.best_val_score == 1.0

    state.write_text(json.dumps({**old, "format": "optiforge.train-state/7"}))
    with pytest.raises(OptimizerError, match="is not a training state file"):
        run(state, ScriptedLLM([]))
    state.write_text(json.dumps({**new, "version": 5}))
    with pytest.raises(OptimizerError, match="version 5 of the optiforge state format"):
        run(state, ScriptedLLM([]))
