"""A model server that dies in the middle of an eval, and comes back (real SmolLM2, slow).

``optiforge serve --local`` runs in its own process; the eval runs here against its URL.
The server is killed (SIGKILL) while problems are in flight: they, and the ones after,
are journalled as ``llm_error`` with what they cost. The server is restarted on the same
port and ``resume=True, retry_failed=True`` completes them: every problem ends with exactly
one good result, none is lost or run twice, and the costs add up in both sessions.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import httpx
import pytest

from optiforge.datasets.problem import Problem
from optiforge.evals import read_journal, run_eval
from optiforge.evals.records import INFRA_FAILURES
from optiforge.evals.runner import USAGE_FIELDS
from optiforge.llm.usage import usage_scope

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_sigint() -> None:
    # The child gets SIGINT as a terminal's Ctrl-C would: handled and not blocked, whatever
    # this process inherited or set (Ray, used earlier in a full run, or a shell's `&`).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def start_serve(port: int, tmp_path, wait: float = 240.0) -> tuple[subprocess.Popen, str]:
    """``optiforge serve --local`` on ``port``; returns once it printed its URL."""
    env = {
        **os.environ,
        "OPTIFORGE_LOCAL_THREADS": "1",  # a shared 2-core machine: see local.default_threads
        "OPTIFORGE_CACHE_DIR": str(tmp_path / "serve-cache"),
    }
    cmd = [sys.executable, "-m", "optiforge", "serve", "--local", "--model", "smollm2-135m"]
    cmd += ["--port", str(port), "--parallel", "2", "--ctx", "1024"]
    err = open(tmp_path / f"serve-{port}.stderr", "w")  # noqa: SIM115 (the process owns it)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        env=env,
        start_new_session=True,
        # In full runs serve once sat in time.sleep 90 s after SIGINT (its SIGUSR1 stack
        # dump showed it): the signal never became a KeyboardInterrupt, because the child
        # inherited it ignored or blocked. Start it as a terminal would.
        preexec_fn=_default_sigint,
    )
    proc.stderr_path = err.name  # type: ignore[attr-defined]
    found: list[str] = []

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith("OPTIFORGE_BASE_URL="):
                found.append(line.split()[0].split("=", 1)[1])
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(wait)
    if not found:
        proc.kill()
        raise AssertionError(f"serve --local printed no URL within {wait} s")
    return proc, found[0]


def stop(proc: subprocess.Popen, sig: int = signal.SIGINT) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            # Freeing the model can take a while on a loaded 2-core machine (a CI run next
            # to a model eval once needed more than 30 s): only a hang is a failure here.
            proc.wait(90)
        except subprocess.TimeoutExpired:
            # A hang: have serve print its threads' stacks (faulthandler on SIGUSR1) into
            # its stderr file before it is killed, so the failure shows where it hung.
            os.killpg(proc.pid, signal.SIGUSR1)
            time.sleep(2)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def stderr_tail(proc: subprocess.Popen, chars: int = 4000) -> str:
    """The end of what a server started by :func:`start_serve` wrote to stderr."""
    path = getattr(proc, "stderr_path", None)
    try:
        return open(path, encoding="utf-8", errors="replace").read()[-chars:] if path else ""
    except OSError:
        return ""


def test_serve_local_prints_its_url_only_when_ready(tmp_path):
    proc, url = start_serve(_free_port(), tmp_path)
    try:
        # Right after the URL: a real request is answered (no 503 while loading).
        r = httpx.post(
            url + "/chat/completions",
            json={"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}]}
            | {"max_tokens": 2},
            timeout=60,
        )
        assert r.status_code == 200 and r.json()["choices"]
        # what a command connecting to it learns: its slots, its kind and model file
        from optiforge.cli.common import llm_provenance, server_slots
        from optiforge.llm import LLM
        from optiforge.llm.serving.store import MODELS

        assert server_slots(url) == 2
        with LLM(model="smollm2-135m", base_url=url, cache=False) as llm:
            prov = llm_provenance(llm)
        assert prov["server"]["kind"] == "llama.cpp" and prov["server"]["url"] == url
        assert prov["model_file"]["sha256"] == MODELS["smollm2-135m"].sha256
    finally:
        t0 = time.monotonic()
        stop(proc)
        stopped_in = time.monotonic() - t0
    # Ctrl-C ends it cleanly and soon.
    assert proc.returncode == 0 and stopped_in < 60, (
        proc.returncode,
        stopped_in,
        stderr_tail(proc),
    )


def _client(url: str):
    from optiforge.llm import LLM

    llm = LLM(
        model="smollm2-135m", base_url=url, cache=False, max_retries=1, timeout=60, concurrency=2
    )
    llm.retry_base_delay = 0.05
    return llm


def _agent(llm):
    async def agent(problem: Problem):
        n = 2 if problem.id.endswith(("1", "3", "5")) else 1
        await llm.achat(problem.text, n=n, temperature=0.8, max_tokens=12, tag="solver")
        return SimpleNamespace(answer=None)

    return agent


def _check_costs(out, session_index: int) -> None:
    run = json.loads((out / "run.json").read_text())
    session = run["sessions"][session_index - 1]
    recs = [r for r in read_journal(out).records if r.session == session_index]
    for f in USAGE_FIELDS:
        assert sum(getattr(r, f) for r in recs) == session["usage"][f], (session_index, f)


def test_server_killed_mid_eval_then_resumed(tmp_path):
    port = _free_port()
    problems = [
        Problem(id=f"q{i}", dataset="toy", text=f"Name a colour. ({i})", answer=1.0)
        for i in range(6)
    ]
    out = tmp_path / "run"
    proc, url = start_serve(port, tmp_path)
    llm = _client(url)
    try:

        async def first_session():
            task = asyncio.create_task(
                run_eval(
                    problems,
                    _agent(llm),
                    out,
                    concurrency=2,
                    max_consecutive_failures=0,
                    write_report=False,
                    usage=lambda: llm.usage.snapshot().model_dump(),
                    usage_scope=usage_scope,
                )
            )
            while len(read_journal(out).records) < 2:  # some done, two in flight
                await asyncio.sleep(0.05)
                assert not task.done()
            stop(proc, signal.SIGKILL)
            return await task

        asyncio.run(first_session())
    finally:
        stop(proc, signal.SIGKILL)
        llm.close()
    first = read_journal(out).records
    assert sorted(r.id for r in first) == [p.id for p in problems]  # nothing lost
    failed = [r for r in first if r.failure_class in INFRA_FAILURES]
    assert failed and all(r.failure_class == "llm_error" for r in failed)
    assert all(r.failed_calls >= 1 for r in failed)  # the refused/broken requests count
    done_before = {r.id for r in first if r.failure_class not in INFRA_FAILURES}
    assert len(done_before) >= 2
    _check_costs(out, 1)
    # n=2 requests: both choices are counted (llama.cpp reports the first one only)
    for r in first:
        if r.id in done_before and r.id.endswith(("1", "3", "5")):
            tokens = [rep["completion_tokens"] for rep in r.replies]
            assert len(tokens) == 2 and r.completion_tokens == sum(tokens)
            assert all(t >= 1 for t in tokens)

    deadline = time.monotonic() + 60
    while True:  # the same port again, as a restarted service would use
        try:
            proc, url2 = start_serve(port, tmp_path)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
    assert url2 == url
    llm = _client(url)
    try:
        asyncio.run(
            run_eval(
                problems,
                _agent(llm),
                out,
                concurrency=2,
                resume=True,
                retry_failed=True,
                write_report=False,
                usage=lambda: llm.usage.snapshot().model_dump(),
                usage_scope=usage_scope,
            )
        )
    finally:
        stop(proc)
        llm.close()
    recs = read_journal(out).records
    latest = read_journal(out).latest()
    assert sorted(latest) == [p.id for p in problems]
    assert not any(r.failure_class in INFRA_FAILURES for r in latest.values())
    # nothing duplicated: problems that had a result were not run again; each problem has
    # exactly one result that is not an infrastructure failure
    good = [r for r in recs if r.failure_class not in INFRA_FAILURES]
    assert sorted(r.id for r in good) == [p.id for p in problems]
    assert {r.id for r in recs if r.session == 2} == {r.id for r in failed}
    _check_costs(out, 2)
    run = json.loads((out / "run.json").read_text())
    assert [s["status"] for s in run["sessions"]] == ["completed", "completed"]
