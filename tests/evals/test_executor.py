"""The executor interface without Ray: the local executor through the runner, usage merging,
clear errors, and the promise that nothing imports Ray unless the Ray executor is chosen."""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from optiforge.agents.spec import AgentSpec, AgentSpecError, BuiltAgent, build_agent, load_agent_fn
from optiforge.datasets import load_dataset
from optiforge.evals import read_journal, run_eval
from optiforge.evals.executor import LocalExecutor, RayExecutor, merge_usage
from optiforge.evals.records import EvalError

FAKE = str(Path(__file__).with_name("fake_agents.py"))
REPO = Path(__file__).resolve().parents[2]


async def test_local_executor_runs_through_the_runner(tmp_path):
    problems = load_dataset("nl4opt", ids=["nl4opt-0001", "nl4opt-0002", "nl4opt-0008"])
    ex = LocalExecutor(BuiltAgent(AgentSpec(agent_fn=f"{FAKE}:scripted")))
    out = await run_eval(problems, None, tmp_path, executor=ex, usage=ex.usage)
    ex.close()
    assert out.finished == 3
    recs = read_journal(tmp_path).latest()
    assert sorted(recs) == [p.id for p in problems]
    assert recs["nl4opt-0008"].failure_class == "agent_crash"  # the agent's own exception


async def test_local_executor_from_a_plain_function_and_prompts_rule():
    problems = load_dataset("nl4opt", ids=["nl4opt-0001"])
    fn = load_agent_fn(f"{FAKE}:always_right")
    ex = LocalExecutor(fn)
    sol = await ex.run(problems[0])
    assert sol.answer == problems[0].answer
    assert ex.usage() is None
    with pytest.raises(EvalError, match="prompt values"):
        await ex.run(problems[0], prompts={"direct_system": "x"})
    built = BuiltAgent(AgentSpec(agent_fn=f"{FAKE}:always_right"))
    with pytest.raises(AgentSpecError, match="prompt values"):
        await built.solve(problems[0], {"direct_system": "x"})


async def test_spec_agent_passes_prompts_to_the_team(tmp_path, scripted_llm):
    """A per-call ``prompts`` reaches the agent's prompts (how tune evaluates a candidate)."""
    llm = scripted_llm(lambda messages, **kw: "no code here")
    problem = load_dataset("nl4opt", ids=["nl4opt-0001"])[0]
    ex = LocalExecutor(BuiltAgent(AgentSpec(agent="direct"), llm=llm))
    await ex.run(problem, prompts={"coder_system": "CANDIDATE PROMPT MARKER"})
    sent = " ".join(str(m.get("content")) for m in llm.requests[-1].messages)
    assert "CANDIDATE PROMPT MARKER" in sent
    usage = ex.usage()
    assert usage["calls"] == 1 and usage["servers"] == {}


def test_run_eval_needs_an_agent_or_executor(tmp_path):
    import asyncio

    problems = load_dataset("nl4opt", ids=["nl4opt-0001"])
    with pytest.raises(EvalError, match="agent function or an executor"):
        asyncio.run(run_eval(problems, None, tmp_path))


def test_bad_agent_fn_specs():
    with pytest.raises(AgentSpecError, match="must look like"):
        load_agent_fn("no_colon")
    with pytest.raises(AgentSpecError, match="no such file"):
        load_agent_fn("/nope/agent.py:fn")
    with pytest.raises(AgentSpecError, match="has no callable"):
        load_agent_fn(f"{FAKE}:missing")


def test_merge_usage_sums_counters_and_servers():
    a = {
        "calls": 2,
        "prompt_tokens": 10,
        "wall_time_s": 1.5,
        "by_tag": {"coder": {"calls": 2}},
        "servers": {"http://a/v1": {"requests": 2, "ok": 2, "failures": 0, "up": True}},
    }
    b = {
        "calls": 3,
        "prompt_tokens": 5,
        "wall_time_s": 0.5,
        "by_tag": {"coder": {"calls": 1}, "critic": {"calls": 2}},
        "servers": {
            "http://a/v1": {"requests": 1, "ok": 1, "failures": 0, "up": True},
            "http://b/v1": {"requests": 3, "ok": 2, "failures": 1, "up": False},
        },
    }
    m = merge_usage([a, b])
    assert (m["calls"], m["prompt_tokens"], m["wall_time_s"]) == (5, 15, 2.0)
    assert m["by_tag"] == {"coder": {"calls": 3}, "critic": {"calls": 2}}
    assert m["servers"]["http://a/v1"]["ok"] == 3 and m["servers"]["http://b/v1"]["up"] is False
    assert m["servers"]["http://a/v1"]["share"] == 0.6
    assert merge_usage([]) == {"servers": {}}


def test_ray_executor_without_ray_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    ex = RayExecutor(functools.partial(build_agent, AgentSpec(agent_fn=f"{FAKE}:always_right")))
    with pytest.raises(EvalError, match=r"pip install -e '\.\[ray\]'"):
        ex.start()
    with pytest.raises(EvalError, match="concurrency"):
        RayExecutor(functools.partial(build_agent, AgentSpec()), concurrency=0)


def test_cli_executor_flag_errors(tmp_path):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "optiforge", "eval", "nl4opt", "--limit", "1", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    out = run("--executor", "spark", "--out", str(tmp_path / "a"))
    assert out.returncode != 0 and "--executor must be local or ray" in out.stderr
    out = run("--ray-address", "auto", "--out", str(tmp_path / "b"))
    assert out.returncode != 0 and "need --executor ray" in out.stderr
    assert "Traceback" not in out.stderr


def test_local_eval_never_imports_ray(tmp_path):
    """Importing evals and agents, building executors and running a local eval (the CLI
    included) must not load Ray."""
    code = textwrap.dedent(
        f"""
        import asyncio, sys
        import optiforge.agents, optiforge.evals, optiforge.evals.executor, optiforge.cli
        from optiforge.agents import asolve  # noqa
        from optiforge.datasets import load_dataset
        from optiforge.evals import run_eval
        import optiforge.agents.spec
        from optiforge.agents.spec import AgentSpec, BuiltAgent
        from optiforge.evals.executor import LocalExecutor
        ex = LocalExecutor(BuiltAgent(AgentSpec(agent_fn={FAKE + ":always_right"!r})))
        problems = load_dataset("nl4opt", ids=["nl4opt-0001", "nl4opt-0002"])
        out = asyncio.run(run_eval(problems, None, {str(tmp_path / "run")!r}, executor=ex))
        assert out.finished == 2
        from optiforge.cli import main
        try:
            main(["eval", "nl4opt", "--limit", "2", "--no-progress",
                "--agent-fn", {FAKE + ":always_right"!r}, "--out", {str(tmp_path / "cli")!r}])
        except SystemExit as exc:
            assert not exc.code, exc.code
        loaded = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
        print("RAY", loaded)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "RAY []" in out.stdout


async def test_a_ray_worker_body_returns_each_problems_usage(scripted_llm):
    """The worker side of per-problem usage on Ray, in-process: the problem runs inside the
    shipped scope function and its counts and replies come back with the Solution (or with
    the agent's exception); the driver side hands them to the runner's scope and keeps a
    tally that survives the worker."""
    from optiforge.evals.executor import RemoteUsage, _Done, _RayWorker, _Slot
    from optiforge.llm.usage import usage_scope

    llm = scripted_llm(lambda messages, **kw: "12345")
    agents = Path(__file__).with_name("executor_agents.py")
    spec = AgentSpec(agent_fn=f"{agents}:short_llm")
    worker = _RayWorker(lambda: BuiltAgent(spec, llm=llm), usage_scope)
    problem = load_dataset("nl4opt", ids=["nl4opt-0001"])[0]
    done = await worker.run(problem, None)
    assert isinstance(done, _Done) and done.error is None and done.value.answer == 5.0
    assert (done.usage.calls, len(done.replies)) == (1, 1)
    assert done.replies[0]["sha256"] and done.usage.by_tag

    class Unpicklable(RuntimeError):  # a local class: pickle cannot find it by name
        pass

    class Crashing:
        def __init__(self, exc_type):
            self.exc_type = exc_type

        async def solve(self, problem, prompts=None):
            await llm.achat("first", max_tokens=3)
            raise self.exc_type("after one call")

    bad = await _RayWorker(lambda: Crashing(ValueError), usage_scope).run(problem, None)
    assert isinstance(bad.error, ValueError) and bad.usage.calls == 1  # counted though it raised
    with pytest.raises(Unpicklable):  # raised as is, for Ray to report (its usage is lost)
        await _RayWorker(lambda: Crashing(Unpicklable), usage_scope).run(problem, None)

    # The driver side: the runner's scope gets the counts, the slot's tally keeps them.
    ex = RayExecutor(functools.partial(build_agent, spec), usage_scope=usage_scope)
    assert ex.usage_scope is not None
    slot = _Slot(actor=None)
    with ex.usage_scope() as scope:
        assert isinstance(scope, RemoteUsage) and scope.snapshot().calls == 0
        assert ex._unpack(done, slot, 0) is done.value
    assert scope.snapshot().calls == 1 and scope.replies == done.replies
    assert slot.finished_usage == [done.usage.model_dump()]
    with ex.usage_scope() as scope, pytest.raises(ValueError):
        ex._unpack(bad, slot, 0)
    assert scope.snapshot().calls == 1 and len(slot.finished_usage) == 2
    assert RayExecutor(functools.partial(build_agent, spec)).usage_scope is None


def test_a_remote_scope_cut_off_before_its_worker_answered_sums_as_zero():
    # A Ray problem interrupted in flight has no worker snapshot yet: the runner still sums
    # its counts into run.json's usage_unjournalled (zeros), instead of crashing at Ctrl-C.
    from optiforge.evals.executor import RemoteUsage

    dumped = RemoteUsage().snapshot().model_dump()
    assert dumped["calls"] == dumped["failed_calls"] == dumped["cached_calls"] == 0
