"""The client's shared machinery, through ScriptedLLM (the same code path as LLM)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest
from pydantic import BaseModel, Field

from optiforge.errors import OptiforgeError
from optiforge.llm import Budget, BudgetExceeded, LLMError, StructuredOutputError
from optiforge.llm.cache import ResponseCache
from optiforge.llm.testing import ScriptedLLM, ScriptExhausted


class Answer(BaseModel):
    x: float
    label: str = Field(max_length=10)


def test_string_and_list_messages_are_recorded(scripted_llm):
    llm = scripted_llm(["a", "b"])
    assert llm.chat("hello").text == "a"
    r = llm.chat(
        [{"role": "system", "content": "sys"}, {"role": "user", "content": "q"}], max_tokens=7
    )
    assert r.text == "b" and r.finish_reasons == ["stop"] and not r.cached
    first, second = llm.requests
    assert first.messages == [{"role": "user", "content": "hello"}]
    assert (second.system, second.prompt, second.max_tokens) == ("sys", "q", 7)
    assert "sys" in second.text and "q" in second.text


@pytest.mark.parametrize(
    "bad",
    [[], "", [{"role": "user"}], [{"role": "wizard", "content": "x"}], ["hi"], 42],
)
def test_bad_messages_are_clear_errors(scripted_llm, bad):
    llm = scripted_llm(["unused"])
    if bad == "":  # an empty string is a valid (empty) user message
        assert llm.chat(bad).text == "unused"
        return
    with pytest.raises(LLMError) as info:
        llm.chat(bad)
    assert isinstance(info.value, OptiforgeError)
    assert llm.requests == []


def test_bad_arguments(scripted_llm):
    llm = scripted_llm(["x"])
    for kwargs in ({"n": 0}, {"max_tokens": 0}, {"temperature": -1.0}, {"response_format": dict}):
        with pytest.raises(LLMError):
            llm.chat("q", **kwargs)


def test_n_samples_callable_and_kwargs(scripted_llm):
    seen = []

    def script(messages, **kw):
        seen.append(kw)
        return f"sample {kw['index']} at T={kw['temperature']}"

    llm = scripted_llm(script)
    r = llm.chat("q", n=3, temperature=0.7, seed=5, stop="END")
    assert r.texts == ["sample 0 at T=0.7", "sample 1 at T=0.7", "sample 2 at T=0.7"]
    assert [k["index"] for k in seen] == [0, 1, 2]
    assert seen[0]["seed"] == 5 and seen[0]["stop"] == ["END"]
    assert llm.requests[0].n == 3


def test_script_exhausted_and_single_string_cycles(scripted_llm):
    llm = scripted_llm(["only"])
    llm.chat("a")
    with pytest.raises(ScriptExhausted, match="ran out of replies"):
        llm.chat("b")
    always = scripted_llm("same")
    assert [always.chat(str(i)).text for i in range(3)] == ["same"] * 3


def test_structured_output_parses_each_sample(scripted_llm):
    llm = scripted_llm(['{"x": 1.5, "label": "a"}', 'Here:\n```json\n{"x": 2, "label": "b"}\n```'])
    r = llm.chat("q", n=2, response_format=Answer)
    assert r.parsed == [Answer(x=1.5, label="a"), Answer(x=2, label="b")]
    assert r.value == Answer(x=1.5, label="a")
    rf = llm.requests[0].response_format
    assert rf["type"] == "json_schema" and rf["json_schema"]["name"] == "Answer"
    assert (
        rf["json_schema"]["schema"]["required"] == ["x"]
        or "x" in rf["json_schema"]["schema"]["properties"]
    )


def test_structured_output_reasks_only_failing_samples(scripted_llm):
    llm = scripted_llm(['{"x": 1, "label": "ok"}', "no json here", '{"x": 3, "label": "fixed"}'])
    r = llm.chat("q", n=2, response_format=Answer)
    assert [p.x for p in r.parsed] == [1, 3]
    assert r.texts[1] == '{"x": 3, "label": "fixed"}'
    reask = llm.requests[1]
    assert reask.n == 1 and reask.messages[-2]["content"] == "no json here"
    assert "no JSON value found" in reask.prompt


def test_structured_output_error_after_one_reask(scripted_llm):
    llm = scripted_llm(['{"x": 1, "label": "far too long a label"}', '{"x": "nan?"}'])
    with pytest.raises(StructuredOutputError) as info:
        llm.chat("q", response_format=Answer)
    assert len(llm.requests) == 2
    assert info.value.texts == ['{"x": "nan?"}']
    assert "did not match Answer" in str(info.value)


def test_structured_output_error_keeps_the_samples_that_validated(scripted_llm):
    llm = scripted_llm(['{"x": 1, "label": "ok"}', "no json", '{"x": 3, "label": "b"}', "nope"])
    with pytest.raises(StructuredOutputError) as info:
        llm.chat("q", n=3, response_format=Answer)
    err = info.value
    assert err.texts == ["nope"] and len(err.errors) == 1
    assert err.all_texts == ['{"x": 1, "label": "ok"}', "nope", '{"x": 3, "label": "b"}']
    assert [p.x if p is not None else None for p in err.parsed] == [1, None, 3]
    assert "1 of 3 replies" in str(err)


def test_usage_and_tags(scripted_llm):
    llm = scripted_llm("reply words here")
    llm.chat("one two", tag="critic")
    with llm.tag("coder"):
        llm.chat("three", n=2)
        llm.chat("four", tag="critic")  # explicit tag wins
    llm.chat("five")
    u = llm.usage.snapshot()
    assert u.calls == 4
    assert set(u.by_tag) == {"critic", "coder", "default"}
    assert llm.usage.for_tag("critic").calls == 2
    assert llm.usage.for_tag("coder").completion_tokens == 6
    assert u.completion_tokens == sum(t.completion_tokens for t in u.by_tag.values())
    assert u.prompt_tokens > 0 and llm.usage.tokens == u.prompt_tokens + u.completion_tokens
    assert llm.requests[1].tag == "coder" and llm.requests[2].tag == "critic"


def test_cache_hits_and_sample_index(tmp_path):
    llm = ScriptedLLM(lambda m, **kw: f"{m[-1]['content']}#{kw['index']}", cache=tmp_path)
    r1 = llm.chat("q", n=2, temperature=0.9)
    r2 = llm.chat("q", n=2, temperature=0.9)
    assert r2.texts == r1.texts == ["q#0", "q#1"] and r2.cached and not r1.cached
    r3 = llm.chat("q", n=4, temperature=0.9)  # reuses two, asks for two more
    assert r3.cached_samples == 2 and not r3.cached
    assert llm.requests[-1].n == 2
    assert r3.texts[:2] == r1.texts
    assert llm.chat("q", n=2, temperature=0.8).cached is False  # temperature is in the key
    assert llm.usage.cache_hits == 4
    llm.close()
    again = ScriptedLLM("unused", cache=tmp_path)  # persisted on disk
    assert again.chat("q", n=4, temperature=0.9).cached
    assert again.requests == []


def test_cache_is_safe_across_processes(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys, threading
        from optiforge.llm.cache import ResponseCache
        c = ResponseCache({str(tmp_path)!r})
        def work(t):
            for i in range(50):
                c.put_many({{f"{{sys.argv[1]}}-{{t}}-{{i}}": {{"text": str(i)}}}})
        ts = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        [t.start() for t in ts]; [t.join() for t in ts]
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(p)]) for p in range(3)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    cache = ResponseCache(tmp_path)
    assert len(cache) == 3 * 4 * 50
    assert cache.get_many(["2-3-49"]) == {"2-3-49": {"text": "49"}}


def test_budget_stops_before_exceeding(scripted_llm):
    llm = scripted_llm("ok", budget=Budget(max_calls=2))
    llm.chat("a")
    llm.chat("b")
    with pytest.raises(BudgetExceeded, match="max_calls=2"):
        llm.chat("c")
    assert len(llm.requests) == 2
    tok = scripted_llm("ok", budget={"max_tokens": 100})
    with pytest.raises(BudgetExceeded, match="max_tokens=100"):
        tok.chat("q", max_tokens=200)
    assert tok.requests == []
    tok.chat("q", max_tokens=50)


def test_budget_ignores_cache_hits(tmp_path):
    llm = ScriptedLLM("ok", cache=tmp_path, budget=Budget(max_calls=1))
    llm.chat("a")
    for _ in range(3):
        assert llm.chat("a").cached
    with pytest.raises(BudgetExceeded):
        llm.chat("b")


async def test_concurrency_is_bounded_and_budget_holds_under_concurrency(scripted_llm):
    in_flight = 0
    peak = 0

    async def script(messages, **kw):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return "done"

    llm = scripted_llm(script, concurrency=3)
    results = await asyncio.gather(*(llm.achat(f"q{i}") for i in range(12)))
    assert all(r.text == "done" for r in results)
    assert peak == 3

    capped = scripted_llm(script, concurrency=8, budget=Budget(max_calls=5))
    outcomes = await asyncio.gather(
        *(capped.achat(f"q{i}") for i in range(10)), return_exceptions=True
    )
    assert sum(isinstance(o, BudgetExceeded) for o in outcomes) == 5
    assert capped.usage.calls == 5


async def test_sync_chat_inside_a_running_loop(scripted_llm):
    llm = scripted_llm(["sync", "async"])
    assert llm.chat("a").text == "sync"  # must not fail with "event loop is running"
    assert (await llm.achat("b")).text == "async"


def test_stream_scripted_shares_cache(tmp_path):
    llm = ScriptedLLM(["a fairly long streamed reply"], cache=tmp_path)
    pieces = list(llm.stream("s"))
    assert len(pieces) > 1 and "".join(pieces) == "a fairly long streamed reply"
    assert llm.chat("s").cached  # no second reply needed from the script
    assert llm.requests[0].stream


def test_context_manager_closes(tmp_path):
    with ScriptedLLM("x", cache=tmp_path) as llm:
        llm.chat("q")
    with pytest.raises(LLMError):
        llm.chat("other")


def test_cache_key_changes_with_everything_that_matters():
    from optiforge.llm.base import ChatRequest

    llm = ScriptedLLM("x")
    base = ChatRequest([{"role": "user", "content": "q"}], 1, 0.0, 16, None, None, None, None)
    from dataclasses import replace

    keys = {
        llm._key(base, 0),
        llm._key(base, 1),
        llm._key(replace(base, temperature=0.1), 0),
        llm._key(replace(base, max_tokens=17), 0),
        llm._key(replace(base, seed=1), 0),
        llm._key(replace(base, stop=["x"]), 0),
        llm._key(replace(base, response_format={"type": "json_schema"}), 0),
        llm._key(replace(base, messages=[{"role": "user", "content": "Q"}]), 0),
    }
    assert len(keys) == 8
    assert llm._key(replace(base, tag="other"), 0) == llm._key(
        base, 0
    )  # tags do not change answers
