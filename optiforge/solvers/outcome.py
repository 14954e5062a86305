"""Turn what a sandboxed program did into a :class:`SolveResult` or an error for its author.

The sandbox reports a :class:`~optiforge.solvers.sandbox.SandboxResult` (exit reason,
output tails, the program's ``report(...)``). Agents need one of two things from it: the
solver result, or a short text that tells the model which wrote the program what went wrong
(for a repair prompt). :func:`sandbox_outcome` gives exactly that.
"""

from __future__ import annotations

from typing import Any

from optiforge.solvers.result import SolveResult

__all__ = ["sandbox_outcome"]

#: Lines of the program's stderr kept in the error text (the traceback's end).
STDERR_TAIL_LINES = 12
#: The error text is cut to its last this many characters (prompts stay small).
MAX_ERROR_CHARS = 2000


def sandbox_outcome(sb: Any) -> tuple[SolveResult | None, str | None]:
    """A sandbox run as ``(result, None)`` when the program reported a result, else
    ``(None, error text)``: the sandbox's message, the end of stderr, a rejected report, and
    a reminder to call ``report(...)`` when the program exited cleanly without one."""
    if sb.result is not None:
        return sb.result, None
    tail = (sb.stderr or "").strip().splitlines()[-STDERR_TAIL_LINES:]
    err = sb.message or sb.exit_reason.value
    if tail:
        err = f"{err}\n" + "\n".join(tail)
    if sb.report_error:
        err = f"{err}\n{sb.report_error}"
    if sb.exit_reason.value == "ok":
        err = (
            f"{err}\nThe program ran but reported no result: end it with "
            "report(model=m, results=res)."
        )
    return None, err[-MAX_ERROR_CHARS:]
