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


def _subtree(procs: list[tuple[int, int, int]], root: int) -> dict[int, list[int]]:
    """children lists of every process below ``root`` (``root`` included)."""
    kids: dict[int, list[int]] = {}
    for p, pp, _ in procs:
        kids.setdefault(pp, []).append(p)
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        tree[pid] = kids.get(pid, [])
        todo.extend(tree[pid])
    return tree


def assert_clean(pool: SandboxPool) -> None:
    """No program process is left behind.

    Below each worker's process (the one the pool started) there may be only a chain: with
    namespaces the worker proper (PID 1 of its namespace), then the pre-forked process
    waiting for the next program; without, that pre-forked process alone. A branch, a
    longer chain, or anything running as a job uid (root mode) is a leftover.
    """
    workers = set(pool.worker_pids())
    uids = {UID_BASE + w for w in workers}
    deadline = time.monotonic() + 5
    while True:
        procs = processes()
        left = [(p, pp, u) for p, pp, u in procs if u in uids]
        for w in workers:
            tree = _subtree(procs, w)
            if len(tree) > 3 or any(len(k) > 1 for k in tree.values()):
                left += [(p, pp, u) for p, pp, u in procs if p in tree and p != w]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"processes left behind: {left}"
