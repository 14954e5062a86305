"""`optiforge eval` / `optiforge report` as subprocesses: kill -9 then resume, Ctrl-C,
unreachable servers, reports and comparisons. The agent is a fake selected with --agent-fn."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from optiforge.evals import read_journal

FAKE = str(Path(__file__).with_name("fake_agents.py"))


def _cmd(*args):
    return [sys.executable, "-m", "optiforge", *args]


def _run(*args, env=None, timeout=120):
    return subprocess.run(
        _cmd(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_lines(path: Path, n: int, proc, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"runner exited early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError("runner made no progress")


def test_kill_9_then_resume_loses_nothing_and_runs_nothing_twice(tmp_path):
    out = tmp_path / "run"
    log = tmp_path / "calls.log"
    env = {"FAKE_AGENT_DELAY": "0.15", "FAKE_AGENT_LOG": str(log)}
    args = [
        "eval",
        "nl4opt",
        "--limit",
        "30",
        "--agent-fn",
        f"{FAKE}:always_right",
        "--concurrency",
        "3",
        "--out",
        str(out),
        "--no-progress",
    ]
    proc = subprocess.Popen(
        _cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **env}
    )
    _wait_for_lines(out / "results.jsonl", 7, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # simulate the worst a kill can do: a torn, half-written last line
    with (out / "results.jsonl").open("ab") as fh:
        fh.write(b'{"v": 1, "id": "nl4opt-00')
    before = read_journal(out)
    finished_first = [r.id for r in before.records]
    assert len(finished_first) >= 7 and before.torn_bytes > 0
    first_calls = log.read_text().split()

    res = _run(*args, "--resume", env=env)
    assert res.returncode == 0, res.stderr
    after = read_journal(out)
    assert after.torn_bytes == 0
    ids = [r.id for r in after.records]
    assert Counter(ids).most_common(1)[0][1] == 1  # no problem journaled twice
    assert ids[: len(finished_first)] == finished_first  # earlier lines intact, in place
    assert len(ids) == 30
    second_calls = log.read_text().split()[len(first_calls) :]
    assert not set(second_calls) & set(finished_first)  # finished problems never re-ran
    s = json.loads((out / "summary.json").read_text())
    assert s["finished"] == 30 and s["complete"] and s["accuracy"]["strict_1e-6"]["accuracy"] == 1.0
    sessions = json.loads((out / "run.json").read_text())["sessions"]
    assert [x["status"] for x in sessions] == ["killed", "completed"]
    assert sessions[0]["finished"] == len(finished_first)
    assert sessions[0]["ended_at"] > sessions[0]["started_at"]


def test_ctrl_c_exits_cleanly_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    args = [
        "eval",
        "nl4opt",
        "--limit",
        "20",
        "--agent-fn",
        f"{FAKE}:always_right",
        "--concurrency",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]
    proc = subprocess.Popen(
        _cmd(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "FAKE_AGENT_DELAY": "0.2"},
        # Ctrl-C as a terminal delivers it: a test run started in the background (`cmd &`
        # in a script) inherits SIGINT ignored, and an ignored SIGINT survives exec.
        preexec_fn=_default_sigint,
    )
    _wait_for_lines(out / "results.jsonl", 2, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Interrupted" in err and "--resume" in err and "Traceback" not in err
    assert str(out) in err
    meta = json.loads((out / "run.json").read_text())
    assert meta["sessions"][-1]["status"] == "interrupted"
    done = len(read_journal(out).records)
    assert 2 <= done < 20
    res = _run(*args, "--resume")
    assert res.returncode == 0, res.stderr
    assert len(read_journal(out).records) == 20


def test_sigterm_stops_like_ctrl_c(tmp_path):
    out = tmp_path / "run"
    args = [
        "eval",
        "nl4opt",
        "--limit",
        "10",
        "--agent-fn",
        f"{FAKE}:always_right",
        "--concurrency",
        "1",
        "--out",
        str(out),
        "--no-progress",
    ]
    proc = subprocess.Popen(
        _cmd(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "FAKE_AGENT_DELAY": "0.2"},
    )
    _wait_for_lines(out / "results.jsonl", 1, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "--resume" in err, err
    assert json.loads((out / "run.json").read_text())["sessions"][-1]["status"] == "interrupted"


def test_unreachable_model_server_is_a_clear_error(tmp_path):
    res = _run(
        "eval",
        "nl4opt",
        "--limit",
        "1",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--out",
        str(tmp_path / "r"),
        "--no-progress",
    )
    assert res.returncode == 2
    assert "cannot reach the model server at http://127.0.0.1:9/v1" in res.stderr
    assert "Traceback" not in res.stderr


def test_malformed_dataset_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "a", "text": "ok", "answer": 1}\n{"id": "b", "text": "x", "answer": "lots"}\n'
    )
    res = _run("eval", str(bad), "--agent-fn", f"{FAKE}:always_right", "--out", str(tmp_path / "r"))
    assert res.returncode == 2
    assert f"{bad}, line 2, field 'answer'" in res.stderr and "Traceback" not in res.stderr
    res = _run("eval", "nl4opt", "--agent-fn", f"{FAKE}:nope", "--out", str(tmp_path / "r2"))
    assert res.returncode == 2 and "no callable 'nope'" in res.stderr


def test_eval_report_and_compare(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--sample", "nl4opt-readme40", "--limit", "20", "--no-progress"]
    res = _run("eval", "nl4opt", *common, "--agent-fn", f"{FAKE}:scripted", "--out", str(a))
    assert res.returncode == 0, res.stderr
    assert "accuracy (strict_1e-6, answer field 'answer')" in res.stderr
    res = _run("eval", "nl4opt", *common, "--agent-fn", f"{FAKE}:always_right", "--out", str(b))
    assert res.returncode == 0, res.stderr
    for name in ("results.jsonl", "summary.json", "report.md", "report.html", "run.json"):
        assert (a / name).exists()
    html = (a / "report.html").read_text()
    assert "<svg" in html and "<details" in html and "Accuracy by category" in html
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert "print(&#x27;fake&#x27;)" in html  # the code, escaped, inside the details

    res = _run("report", str(a))
    assert res.returncode == 0, res.stderr
    assert "strict_1e-6" in res.stdout

    res = _run("report", str(b), "--compare", str(a), "--json")
    assert res.returncode == 0, res.stderr
    cmp = json.loads(res.stdout)
    sa = json.loads((a / "summary.json").read_text())
    wrong_in_a = 20 - sa["accuracy"]["strict_1e-6"]["correct"]
    assert len(cmp["gained"]) == wrong_in_a and cmp["lost"] == []
    assert cmp["common"] == 20 and wrong_in_a >= 2
    assert abs(cmp["p_value"] - min(1.0, 2 * 0.5**wrong_in_a)) < 1e-12
    res = _run("report", str(b), "--compare", str(a))
    assert res.returncode == 0 and "McNemar" in res.stdout and "gained" in res.stdout

    res = _run("report", str(tmp_path / "nothing"))
    assert res.returncode == 2 and "no such directory" in res.stderr


def test_resume_of_a_finished_run_starts_no_model(tmp_path):
    from optiforge.evals import ResultRecord, RunMeta
    from optiforge.evals.journal import Journal, write_meta

    out = tmp_path / "run"
    with Journal(out) as j:
        j.append(ResultRecord(id="nl4opt-0001", dataset="nl4opt", gt=3000.0, gt_kind="value"))
    write_meta(out, RunMeta(dataset="nl4opt", agent="direct", model="no-such-model"))
    res = _run(
        "eval",
        "nl4opt",
        "--ids",
        "nl4opt-0001",
        "--agent",
        "direct",
        "--model",
        "no-such-model",
        "--out",
        str(out),
        "--resume",
        "--no-progress",
    )
    assert res.returncode == 0, res.stderr  # the unknown model was never loaded
    assert "0 run now, 1 already done" in res.stderr.replace("\n", " ")
    assert (out / "report.html").exists()


def test_bad_prompts_or_levers_fail_before_any_problem_runs(tmp_path):
    bad = tmp_path / "prompts.json"
    bad.write_text('{"prompts": {"no_such_role": "x"}}')
    out = tmp_path / "r"
    for extra, message in (
        (["--prompts", str(bad)], "unknown prompt name"),
        (["--prompts", str(tmp_path / "nope.json")], "does not exist"),
        (["--levers", "verfy"], "unknown lever 'verfy'"),
        (["--levers", "all", "--agent", "direct"], "use it with --agent team"),
        (["--levers", "experience"], "--experience-library FILE"),
        (["--experience-library", str(bad)], "turn the lever on"),
        (
            ["--levers", "experience", "--experience-library", str(tmp_path / "no.jsonl")],
            "no experience library at",
        ),
    ):
        res = _run(
            "eval",
            "nl4opt",
            "--limit",
            "1",
            *extra,
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--out",
            str(out),
            "--no-progress",
        )
        assert res.returncode == 2, res.stderr
        assert message in res.stderr
        assert "Traceback" not in res.stderr
    assert not (out / "results.jsonl").exists()
