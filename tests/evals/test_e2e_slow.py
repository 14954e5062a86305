"""Real end-to-end evals with the embedded model (marked slow; they run in CI).

They assert the protocol (journal, summary, reports, resume, usage), never accuracy.
"""

import json
import os
import subprocess
import sys

import pytest

from optiforge.datasets import load_dataset
from optiforge.evals import RunMeta, read_journal, run_eval

pytestmark = pytest.mark.slow


async def test_team_agent_eval_in_process(tmp_path, tiny_llm):
    from optiforge.agents import asolve

    problems = load_dataset("optibench", ids=["optibench-0001", "optibench-0094"])

    async def agent(problem):
        return await asolve(problem.text, llm=tiny_llm, agent="team", budget=2, samples=1)

    meta = RunMeta(dataset="optibench", agent="team", model="smollm2-135m")

    out = await run_eval(
        problems,
        agent,
        tmp_path,
        meta=meta,
        concurrency=2,
        problem_timeout=180,
        usage=lambda: tiny_llm.usage.snapshot().model_dump(),
    )
    assert out.finished == 2
    recs = read_journal(tmp_path).records
    assert sorted(r.id for r in recs) == [p.id for p in problems]
    for r in recs:
        assert r.agent == "team" and r.gt_kind == "value" and r.elapsed_s > 0
        assert set(r.correct) == {"strict_1e-6", "rel_1e-4", "dp2", "orlm_round_5pct"}
        # a timeout (slow CI machine) is a recorded outcome too, never a lost problem
        assert r.calls >= 1 or r.failure_class == "timeout"
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["finished"] == 2 and s["complete"] and s["scored"] == 2
    assert sum(s["failure_classes"].values()) + s["accuracy"]["strict_1e-6"]["correct"] == 2
    run = json.loads((tmp_path / "run.json").read_text())
    usage = run["sessions"][0]["usage"]
    assert usage["calls"] >= sum(1 for r in recs if r.calls)  # the client's own count
    html = (tmp_path / "report.html").read_text()
    assert all(f'id="p-{p.id}"' in html for p in problems)
    assert (tmp_path / "report.md").read_text().count("| optibench-") == 2

    # resume: nothing left to run, no model call made
    calls_before = tiny_llm.usage.calls
    again = await run_eval(problems, agent, tmp_path, meta=meta, resume=True)
    assert again.finished == 0 and tiny_llm.usage.calls == calls_before


def test_cli_eval_direct_with_the_embedded_server(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OPTIFORGE_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("OPTIFORGE_BASE_URL", None)
    cmd = [
        sys.executable,
        "-m",
        "optiforge",
        "eval",
        "nl4opt",
        "--agent",
        "direct",
        "--model",
        "smollm2-135m",
        "--ids",
        "nl4opt-0001,nl4opt-0002",
        "--concurrency",
        "2",
        "--out",
        str(out),
        "--no-progress",
        "--timeout",
        "180",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stderr
    assert "accuracy (strict_1e-6, answer field 'answer')" in res.stderr
    recs = read_journal(out).records
    assert [r.id for r in recs if r.id] and len(recs) == 2
    assert all(r.agent == "direct" for r in recs)
    meta = json.loads((out / "run.json").read_text())
    assert meta["model"] == "smollm2-135m" and meta["sessions"][0]["status"] == "completed"
    # the journal's per-problem counts add up to the client's own, even for a problem cut
    # by --timeout on a slow machine (its calls so far are kept)
    from optiforge.evals.runner import USAGE_FIELDS
    from optiforge.llm.serving.store import MODELS

    usage = meta["sessions"][0]["usage"]
    for f in USAGE_FIELDS:
        assert sum(getattr(r, f) for r in recs) == usage[f], f
    assert all(r.calls + r.failed_calls >= 1 for r in recs)
    assert all(r.usage_source == "client" and r.replies for r in recs if r.calls)
    prov = meta["sessions"][0]["provenance"]
    assert prov["server"]["kind"] == "embedded llama.cpp"
    assert prov["model_file"]["sha256"] == MODELS["smollm2-135m"].sha256
    assert prov["git_commit"] and prov["settings"]["model"] == "smollm2-135m"
    for name in ("summary.json", "report.md", "report.html"):
        assert (out / name).stat().st_size > 0
    # the same command again with --resume runs nothing
    res = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stderr
    assert "0 run now, 2 already done" in res.stderr.replace("\n", " ")
    assert len(read_journal(out).records) == 2
