"""Two real llama.cpp servers (SmolLM2-135M) behind one client: one is killed with SIGKILL in
the middle of an eval, the run completes on the other, nothing is lost or run twice, and
run.json reports each server's share. Marked slow (runs in CI); asserts protocol only."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from optiforge.agents.spec import AgentSpec, BuiltAgent
from optiforge.config import load_settings
from optiforge.datasets import load_dataset
from optiforge.evals import read_journal, run_eval
from optiforge.evals.executor import LocalExecutor

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

AGENT = f"{Path(__file__).resolve().parents[1] / 'evals' / 'executor_agents.py'}:short_llm"


def _start_server() -> tuple[subprocess.Popen, str]:
    """`optiforge serve --local` in its own process (so it can really be killed)."""
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "optiforge", "serve", "--local"),
            *("--model", "smollm2-135m", "--parallel", "2", "--ctx", "1024"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OPTIFORGE_LOCAL_THREADS": "1"},
    )
    deadline = time.time() + 180
    assert proc.stdout is not None
    while time.time() < deadline:
        line = proc.stdout.readline()
        if line.startswith("OPTIFORGE_BASE_URL="):
            return proc, line.split()[0].split("=", 1)[1]
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("optiforge serve --local did not print its URL")


async def test_killed_server_mid_eval_run_completes_on_the_other(tmp_path, tiny_llm):
    victim, victim_url = _start_server()
    survivor_url = tiny_llm.base_url
    ids = [f"nl4opt-{i:04d}" for i in range(1, 17)]  # enough left to start after the kill
    problems = load_dataset("nl4opt", ids=ids)
    log = tmp_path / "started.log"
    os.environ["EXEC_TEST_LOG"] = str(log)
    os.environ["EXEC_TEST_DELAY"] = "0.3"
    settings = load_settings(
        model="smollm2-135m", base_url=f"{victim_url},{survivor_url}", cache=False
    )
    ex = LocalExecutor(BuiltAgent(AgentSpec(agent_fn=AGENT, settings=settings)))
    out = tmp_path / "run"

    def victim_answered() -> bool:
        servers = (ex.usage() or {}).get("servers") or {}
        return servers.get(victim_url, {}).get("ok", 0) >= 1

    async def kill_mid_run():
        # Mid-run, and only once the victim has answered (a slow start must not make it
        # look as if it never served anything).
        while not (
            (out / "results.jsonl").exists()
            and len(read_journal(out).records) >= 3
            and victim_answered()
        ):
            await asyncio.sleep(0.05)
        victim.send_signal(signal.SIGKILL)

    try:
        killer = asyncio.create_task(kill_mid_run())
        outcome = await run_eval(problems, None, out, executor=ex, concurrency=4, usage=ex.usage)
        await killer
    finally:
        os.environ.pop("EXEC_TEST_LOG", None)
        os.environ.pop("EXEC_TEST_DELAY", None)
        ex.close()
        victim.kill()
        victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    assert outcome.finished == len(ids)
    lines = [json.loads(x)["id"] for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(lines) == ids  # nothing lost, nothing journalled twice
    started = Counter(line.split()[0] for line in log.read_text().splitlines())
    assert set(started) == set(ids) and set(started.values()) == {1}  # no problem re-run
    recs = read_journal(out).latest()
    assert all(r.failure_class not in ("llm_error", "agent_crash") for r in recs.values()), [
        (r.id, r.error) for r in recs.values() if r.failure_class
    ]
    usage = json.loads((out / "run.json").read_text())["sessions"][0]["usage"]
    servers = usage["servers"]
    assert set(servers) == {victim_url, survivor_url}
    assert servers[victim_url]["ok"] >= 1  # it answered before it was killed
    assert servers[victim_url]["up"] is False and servers[victim_url]["failures"] >= 1
    assert servers[survivor_url]["ok"] >= 1
    assert servers[victim_url]["ok"] + servers[survivor_url]["ok"] == usage["calls"] == len(ids)
    assert abs(servers[victim_url]["share"] + servers[survivor_url]["share"] - 1.0) < 1e-3
