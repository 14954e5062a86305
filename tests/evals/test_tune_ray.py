"""``optiforge tune --executor ray`` on a local Ray instance (``ray.init(num_cpus=2)``):
GEPA's unrecorded evaluations run on the workers (their clients make those requests, the
driver's only the traced minibatches and the reflection), the search is the one a local run
makes (which then, on the same response cache, sends the server no request at all), a
killed worker loses nothing, and Ctrl-C stops a CLI tune on Ray cleanly.

The model is a scripted OpenAI-compatible HTTP server (tests/llm/fake_server.py) that the
workers reach over the network like a real one: SmolLM2 spends minutes per direct-agent
reply on this loaded 2-core machine, and a scripted model can make a tuned prompt score
better, so candidates get accepted and validated on the workers. The direct agent's
program is run in each worker's sandbox. Marked slow (Ray start-up).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from optiforge.agents.spec import AgentSpec, build_agent
from optiforge.config import load_settings
from optiforge.datasets import load_dataset
from optiforge.evals.executor import RayExecutor
from optiforge.evals.sample import load_sample
from optiforge.evals.tune import TuneConfig, run_tune
from optiforge.llm import LLM

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
IDS = load_sample("nl4opt-tune-train")[:6]
SEED_PROMPT = "Seed rules: write the program."
TUNED_PROMPT = "TUNED rules: read every number."


def _fake_server_module():
    spec = importlib.util.spec_from_file_location(
        "optiforge_test_fake_server_tune", REPO / "tests" / "llm" / "fake_server.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ScriptedModel:
    """The model behind the fake server. A direct-agent request (its system prompt is the
    coder prompt) gets a program printing the problem's objective: right under the tuned
    prompt, off by one under any other. Any other request is a GEPA reflection and gets
    the tuned prompt. ``delay`` seconds before each answer; ``seen`` counts requests."""

    def __init__(self) -> None:
        self.answers = {p.text.strip(): p.answer for p in load_dataset("nl4opt", ids=IDS)}
        self.delay = 0.0
        self.seen = 0
        self.lock = threading.Lock()
        fake = _fake_server_module()
        self.server = fake.FakeServer([self.behaviour])
        self._ok = fake.ok

    def behaviour(self, handler, req) -> None:
        with self.lock:
            self.seen += 1
        time.sleep(self.delay)
        msgs = req.get("messages") or []
        system = msgs[0]["content"] if msgs and msgs[0]["role"] == "system" else ""
        user = msgs[-1]["content"] if msgs else ""
        if system in (SEED_PROMPT, TUNED_PROMPT):
            m = re.search(r"Problem: (.*)\n\nWrite the Pyomo program", user, re.DOTALL)
            answer = self.answers[m.group(1).strip()]
            value = answer if system == TUNED_PROMPT else answer + 1
            text = f"```python\nprint('OBJECTIVE:', {value!r})\n```"
        else:
            text = f"Read the numbers.\n```\n{TUNED_PROMPT}\n```"
        self._ok(text)(handler, req)


@pytest.fixture
def model():
    m = ScriptedModel()
    with m.server:
        yield m


@pytest.fixture(scope="module")
def ray_local():
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="WARNING",
        object_store_memory=200 * 1024 * 1024,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
    )
    yield ray
    ray.shutdown()


def _settings(base_url: str, cache_dir: Path):
    return load_settings(model="fake", base_url=base_url, cache=True, cache_dir=str(cache_dir))


def _client(settings) -> LLM:
    """The driver's client, built as the CLI and the workers build theirs."""
    return LLM(model=settings.model, base_url=settings.base_url, settings=settings)


def _cfg(out: Path, **kw) -> TuneConfig:
    return TuneConfig(
        dataset="nl4opt",
        ids=IDS,
        out=out / "prompts.json",
        agent="direct",
        optimizer="gepa",
        params=["coder_system"],
        init_prompts={"coder_system": SEED_PROMPT},
        val_fraction=0.34,
        max_metric_calls=10,
        minibatch=2,
        workers=2,
        progress=False,
        **kw,
    )


def _expected_remote(state: dict, n_val: int) -> int:
    """Evaluations GEPA runs without a graph (so on Ray): the seed's validation, every
    child's minibatch, and the validation of every accepted child."""
    n = n_val
    for h in state["history"]:
        if "child_scores" in h:
            n += len(h["minibatch"])
        if h.get("accepted"):
            n += n_val
    return n


def _search(state_path: Path) -> dict:
    state = json.loads(state_path.read_text())
    keep = ("candidates", "parents", "origins", "val_scores", "metric_calls", "iteration")
    out = {k: state[k] for k in keep}
    out["history"] = [
        {k: v for k, v in h.items() if k not in ("llm_calls", "tokens")} for h in state["history"]
    ]
    return out


def _local_replay(tmp_path: Path, settings, model: ScriptedModel, ray_state: Path) -> None:
    """A local tune on the same cache: the same search, and every request of the team
    (traced or not) is a cache hit, so the workers asked exactly what a local run asks.
    (The reflections are asked again: their prompt shows the traced runs' sandbox timings,
    which differ from run to run.)"""
    before = len(model.server.requests)
    llm = _client(settings)
    try:
        run_tune(_cfg(tmp_path / "local"), llm)
        direct = llm.usage.for_tag("direct")
    finally:
        llm.close()
    state = json.loads(ray_state.read_text())
    assert direct.calls == 0 and direct.cache_hits == state["metric_calls"], direct
    asked = [r["messages"][0]["content"] for r in model.server.requests[before:]]
    assert not {SEED_PROMPT, TUNED_PROMPT} & set(asked)  # no team request reached it
    assert _search(tmp_path / "local" / "prompts.state.json") == _search(ray_state)


def test_gepa_on_ray_runs_the_unrecorded_evaluations_on_workers(tmp_path, model, ray_local):
    settings = _settings(model.server.base_url, tmp_path / "cache")
    llm = _client(settings)
    try:
        out = run_tune(_cfg(tmp_path / "ray", executor="ray"), llm, settings=settings)
        here = llm.usage.snapshot()
    finally:
        llm.close()
    state = json.loads(out.state_path.read_text())
    # The tuned child won its minibatch on the workers and was validated there.
    assert state["origins"][1:] and state["candidates"][1]["coder_system"] == TUNED_PROMPT
    assert out.initial_val_score == 0.0 and out.best_val_score == 1.0
    usage = out.executor_usage
    assert usage["executor"]["workers"] == 2 and usage["executor"]["worker_deaths"] == 0
    # One request per direct solve: the workers sent one per unrecorded evaluation (or
    # found it in the shared cache); the driver's direct requests are the traced parent
    # minibatches, its other requests the reflections.
    remote = _expected_remote(state, len(out.val_ids))
    assert usage["calls"] + usage["cache_hits"] == remote >= 3 * len(out.val_ids)
    direct_here = here.by_tag["direct"]
    assert direct_here.calls + direct_here.cache_hits == state["metric_calls"] - remote
    assert usage["by_tag"].keys() == {"direct"}
    assert out.remote_calls == usage["calls"] and out.calls == here.calls + usage["calls"]
    assert usage["servers"][model.server.base_url]["ok"] == usage["calls"]
    assert json.loads(out.out.read_text())["meta"]["executor"] == "ray"
    _local_replay(tmp_path, settings, model, out.state_path)


class KillFirstDispatch(RayExecutor):
    """Kills the worker of the first problem it dispatches, right after dispatching it."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.killed: list[object] = []

    async def run(self, problem, *, prompts=None):
        task = asyncio.ensure_future(super().run(problem, prompts=prompts))
        if not self.killed:
            await asyncio.sleep(0)  # the task has sent the problem to a worker
            for actor in self.busy_actors():
                self.killed.append(actor)
                self._ray.kill(actor)
        return await task


def test_a_killed_worker_does_not_lose_the_tune(tmp_path, model, ray_local):
    settings = _settings(model.server.base_url, tmp_path / "cache")
    model.delay = 0.5  # the killed problem is certainly still running
    spec = AgentSpec(agent="direct", settings=settings)
    ex = KillFirstDispatch(functools.partial(build_agent, spec), concurrency=2).start()
    infos = ray_local.get([a.info.remote() for a in ex.worker_actors()])
    assert os.getpid() not in {i["pid"] for i in infos}  # the evaluations run elsewhere
    llm = _client(settings)
    try:
        out = run_tune(_cfg(tmp_path / "ray"), llm, executor=ex)
    finally:
        llm.close()
        ex.close()
    assert ex.killed and ex.died >= 1 and ex.retried >= 1
    usage = out.executor_usage
    assert usage["executor"]["worker_deaths"] >= 1
    state = json.loads(out.state_path.read_text())
    assert out.best_val_score == 1.0
    # Every unrecorded evaluation finished once on a live worker, and the search is the
    # local one.
    assert usage["calls"] + usage["cache_hits"] >= _expected_remote(state, len(out.val_ids))
    model.delay = 0.0
    _local_replay(tmp_path, settings, model, out.state_path)


def _alive_actors(ray) -> set[str]:
    """Ids of the cluster's live actors (read from the GCS: this Ray has no dashboard, so
    the public state API has no server to ask)."""
    from ray._private import state

    return {k for k, v in state.actors().items() if v.get("State") == "ALIVE"}


def test_ctrl_c_stops_a_ray_tune_cleanly_and_a_rerun_finishes(tmp_path, model, ray_local):
    """The CLI joined to a running cluster (--ray-address: this module's Ray). Ctrl-C while
    the workers are answering the seed's validation exits 130 with the resume hint and
    stops the run's workers (the cluster stays up); the same command then finishes."""
    out = tmp_path / "prompts.json"
    init = tmp_path / "init.json"
    init.write_text(json.dumps({"coder_system": SEED_PROMPT}))  # plain {name: text}
    argv = [
        *(sys.executable, "-m", "optiforge", "tune", "--dataset", "nl4opt"),
        *("--ids", ",".join(IDS), "--agent", "direct", "--params", "coder_system"),
        *("--optimizer", "gepa", "--val-fraction", "0.34", "--max-metric-calls", "10"),
        *("--minibatch", "2", "--workers", "2", "--prompts", str(init), "--out", str(out)),
        *("--model", "fake", "--base-url", model.server.base_url),
        *("--executor", "ray", "--ray-address", ray_local.get_runtime_context().gcs_address),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        "RAY_USAGE_STATS_ENABLED": "0",
        "OPTIFORGE_CACHE_DIR": str(tmp_path / "cache"),  # the CLI's, so the workers' too
    }

    def default_sigint() -> None:  # a test run in the background inherits SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    actors_before = _alive_actors(ray_local)
    model.delay = 30.0  # the seed's validation is in flight on the workers at Ctrl-C
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        preexec_fn=default_sigint,
    )
    deadline = time.monotonic() + 300
    while model.seen < 2 and time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the tune exited early: {proc.communicate()}")
        time.sleep(0.1)
    assert model.seen >= 2, "the workers never asked the model"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    stopped_s = time.monotonic() - t0
    assert proc.returncode == 130, err
    err = " ".join(err.split())  # rich wraps lines
    assert "ray: 2 workers ready" in err and "rerun the same command to resume" in err
    assert "Traceback" not in err
    assert stopped_s < 25, stopped_s  # it did not wait for the 30 s answers
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _alive_actors(ray_local) - actors_before:
        time.sleep(0.5)
    assert not _alive_actors(ray_local) - actors_before, "the run's workers outlived it"
    assert ray_local.is_initialized()

    model.delay = 0.0
    res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "on Ray workers, 0 worker deaths" in " ".join(res.stderr.split())  # rich wraps
    saved = json.loads(out.read_text())
    assert saved["meta"]["executor"] == "ray" and saved["meta"]["best_val_score"] == 1.0
    assert saved["parameters"]["coder_system"] == TUNED_PROMPT
