"""Run a command as an unprivileged user (uid/gid 65534), for the sandbox's unprivileged tests.

Must start as root. The interpreter often lives where that user cannot go (``/root`` is
mode 0700 under pyenv), so this first enters a private mount namespace and covers each such
directory with an empty tmpfs, binding back only the interpreter and the repository; the
host's files and modes are untouched. Then it drops every privilege (uid, gid, groups,
capabilities) and executes the command.

With ``--no-userns`` it also takes user namespaces away, as on a kernel or container that
forbids them: it enters a user namespace of its own (uid 65534 mapped to itself), sets
that namespace's ``user.max_user_namespaces`` to 0, and drops its capabilities there.

Usage: ``python tests/solvers/as_nobody.py [--no-userns] HOME -- command args...``
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534
UNAVAILABLE = 77  # exit code: this machine cannot build the requested user (tests skip)


def main() -> None:
    sys.path.insert(0, str(REPO))
    from optiforge.solvers import isolation as iso

    if os.geteuid() != 0:
        sys.exit("as_nobody.py must run as root")
    args = sys.argv[1:]
    no_userns = args[:1] == ["--no-userns"]
    home, sep, *cmd = args[1:] if no_userns else args
    if sep != "--" or not cmd:
        sys.exit(__doc__)
    needed = [sys.prefix, sys.base_prefix, os.path.dirname(sys.executable), str(REPO)]
    needed += [p for p in sys.path if p and os.path.isabs(p)]
    try:
        iso.unshare(iso.CLONE_NEWNS)
        iso.mount("none", "/", None, iso.MS_REC | iso.MS_PRIVATE, None)
        for path, keep in iso.cover_plan(iso.blocked_dirs(needed), needed):
            if os.path.isdir(path):
                iso.cover(path, keep)
    except OSError as e:  # e.g. a container without CAP_SYS_ADMIN
        print(f"AS_NOBODY_UNAVAILABLE: cannot make a mount namespace here: {e}")
        sys.exit(UNAVAILABLE)
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)  # clears every capability
    if no_userns:
        import ctypes

        ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: to write our own id maps
        try:
            iso.unshare(iso.CLONE_NEWUSER)
        except OSError as e:  # already forbidden here: the case it would build
            print(f"AS_NOBODY_UNAVAILABLE: user namespaces are forbidden here already: {e}")
            sys.exit(UNAVAILABLE)
        for name, text in (("setgroups", "deny"), ("uid_map", f"{NOBODY} {NOBODY} 1")):
            Path(f"/proc/self/{name}").write_text(text)
        Path("/proc/self/gid_map").write_text(f"{NOBODY} {NOBODY} 1")
        Path("/proc/sys/user/max_user_namespaces").write_text("0")
        iso.drop_capabilities()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "XDG_CACHE_HOME": os.path.join(home, ".cache"),
        "PYTHONPATH": str(REPO),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
    }
    env.update({k: v for k, v in os.environ.items() if k.startswith("OPTIFORGE_TEST_")})
    os.chdir(home)
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
