"""sandbox_outcome: a sandboxed program's run -> a SolveResult, or an error for its author."""

from __future__ import annotations

from optiforge.solvers import ExitReason, SandboxResult, SolveResult, SolveStatus, sandbox_outcome
from optiforge.solvers import outcome as oc


def test_a_reported_result_is_returned_as_is():
    res = SolveResult(status=SolveStatus.OPTIMAL, objective=5050.0)
    sb = SandboxResult(exit_reason=ExitReason.OK, result=res, stderr="noise")
    assert sandbox_outcome(sb) == (res, None)


def test_a_crash_gives_the_message_and_the_end_of_stderr():
    stderr = "\n".join(f"line {i}" for i in range(40)) + "\nValueError: bad"
    sb = SandboxResult(
        exit_reason=ExitReason.ERROR, message="exit code 1: ValueError: bad", stderr=stderr
    )
    result, err = sandbox_outcome(sb)
    assert result is None
    lines = err.splitlines()
    assert lines[0] == "exit code 1: ValueError: bad"
    assert lines[1:] == stderr.splitlines()[-oc.STDERR_TAIL_LINES :]


def test_a_clean_exit_without_a_report_asks_for_one_and_errors_are_cut():
    sb = SandboxResult(
        exit_reason=ExitReason.OK, message="", report_error="report: not JSON", stderr=""
    )
    _, err = sandbox_outcome(sb)
    assert err.startswith("ok\nreport: not JSON\n")
    assert "end it with report(model=m, results=res)" in err
    long = SandboxResult(exit_reason=ExitReason.TIMEOUT, message="x" * 5000)
    _, err = sandbox_outcome(long)
    assert len(err) == oc.MAX_ERROR_CHARS
