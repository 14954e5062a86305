"""Process-table helpers for sandbox tests: is anything left behind?"""

from __future__ import annotations

import os
import time

from optiforge.solvers._worker import UID_BASE
from optiforge.solvers.sandbox import SandboxPool


def processes() -> list[tuple[int, int, int]]:
    """(pid, ppid, uid) of every process."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/status") as f:
                    text = f.read()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            out.append((int(name), int(fields["PPid"]), int(fields["Uid"].split()[0])))
    return out


def assert_clean(pool: SandboxPool) -> None:
    """No program process is left behind.

    Each worker may have one child: the pre-forked spare waiting for the next program (it
    has no children of its own). Nothing may run as a job uid, and nothing may descend
    from a worker beyond that spare.
    """
    workers = set(pool.worker_pids())
    uids = {UID_BASE + w for w in workers}
    deadline = time.monotonic() + 5
    while True:
        procs = processes()
        children = [(p, pp, u) for p, pp, u in procs if pp in workers]
        child_pids = {p for p, _, _ in children}
        per_worker = {w: sum(1 for _, pp, _ in children if pp == w) for w in workers}
        left = [(p, pp, u) for p, pp, u in procs if u in uids or pp in child_pids]
        left += [c for c in children if per_worker[c[1]] > 1]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"processes left behind: {left}"
