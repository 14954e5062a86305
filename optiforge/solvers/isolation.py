"""Kernel confinement for the sandbox: namespaces, a read-only view, no capabilities.

Used by the sandbox worker (:mod:`optiforge.solvers._worker`), which runs these once per
worker and once per program; nothing here runs in the optiforge process except
:func:`probe`, which forks a throw-away child. Standard library only (ctypes on libc).

Layers (the names in ``SandboxResult.isolation``):

- ``userns``: without root, an unprivileged user namespace where the worker is root
  (``uid 0`` maps to the caller's uid) and so may create the other namespaces;
- ``netns``: a network namespace with no interface up, not even loopback;
- ``mountns``: a mount namespace where ``/tmp`` is a private tmpfs holding the job
  directories and the user's home, the optiforge home and ``/run`` are covered by empty
  tmpfs mounts (only the interpreter's own files are bound back);
- ``readonly``: every mount of that view is read-only except the program's own directory;
- ``pidns``: each program is in a PID namespace of its own, so every process it starts
  (double fork and ``setsid`` included) dies with it; ``procfs``: its ``/proc`` shows only
  those processes;
- ``ipcns``: a fresh System V IPC and POSIX message-queue namespace per program;
- ``nproc``: ``RLIMIT_NPROC`` bounds the processes and threads it may create;
- ``nocaps``: the program holds no capabilities (empty bounding set, ``no_new_privs``);
- ``uid``: as root, the program runs as a uid of its own that owns only its directory.

``FULL_LAYERS`` is what "full isolation" means (``sandbox_require=full``).
"""

from __future__ import annotations

import ctypes
import os
import struct

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 1 << 14
MS_PRIVATE = 1 << 18

_AT_FDCWD = -100
_AT_RECURSIVE = 0x8000
_MOUNT_ATTR_RDONLY = 0x1
_MOUNT_ATTR_NOSUID = 0x2
_SYS_MOUNT_SETATTR = 442  # the same number on every architecture (added in Linux 5.12)

_PR_CAPBSET_DROP = 24
_PR_SET_SECUREBITS = 28
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
#: NOROOT, NO_SETUID_FIXUP and KEEP_CAPS=0, each locked: uid 0 never regains capabilities.
_SECUREBITS_LOCKED = 0b101111
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

#: Layers every program gets under full isolation (see the module docstring).
FULL_LAYERS = ("netns", "mountns", "readonly", "pidns", "ipcns", "nproc", "nocaps")
#: Layers that hold without the kernel's help.
BASE_LAYERS = ("fork", "rlimits", "audit-hook")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int, what: str = "unshare") -> None:
    """unshare(2), raising OSError with ``what`` in the message."""
    _check(_libc.unshare(flags), what)


def setns(fd: int, nstype: int) -> None:
    """setns(2)."""
    _check(_libc.setns(fd, nstype), "setns")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    """mount(2)."""
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {fstype or source} on {target}",
    )


def enter_user_namespace(flags: int) -> None:
    """Unshare a user namespace (plus ``flags``) and map this process's uid/gid to root.

    Only one id can be mapped without a setuid helper, so every process in the namespace
    shares the caller's uid; confinement comes from mounts, namespaces and dropped
    capabilities, not from a second uid.
    """
    uid, gid = os.getuid(), os.getgid()
    unshare(CLONE_NEWUSER | flags, "unshare(CLONE_NEWUSER)")
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")


def _mount_setattr(path: str, recursive: bool, set_: int, clear: int) -> None:
    attr = struct.pack("QQQQ", set_, clear, 0, 0)
    buf = ctypes.create_string_buffer(attr, len(attr))
    flags = _AT_RECURSIVE if recursive else 0
    rc = _libc.syscall(
        ctypes.c_long(_SYS_MOUNT_SETATTR),
        ctypes.c_int(_AT_FDCWD),
        ctypes.c_char_p(path.encode()),
        ctypes.c_uint(flags),
        buf,
        ctypes.c_size_t(len(attr)),
    )
    _check(rc, f"mount_setattr {path}")


def _mount_points() -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            p = line.split()[4]
            out.append(p.encode().decode("unicode_escape"))
    return out


def _remount(path: str, readonly: bool) -> None:
    """Bind-remount one mount keeping its locked flags (a user namespace may not drop them)."""
    st = os.statvfs(path)
    keep = 0
    for bit, flag in (
        (os.ST_NOSUID, MS_NOSUID),
        (os.ST_NODEV, MS_NODEV),
        (os.ST_NOEXEC, MS_NOEXEC),
    ):
        if st.f_flag & bit:
            keep |= flag
    flags = MS_REMOUNT | MS_BIND | keep | (MS_RDONLY if readonly else 0)
    mount("none", path, None, flags, None)


def make_readonly(path: str, recursive: bool) -> None:
    """Make the mount at ``path`` (and, if ``recursive``, every mount below it) read-only."""
    try:
        _mount_setattr(path, recursive, _MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID, 0)
        return
    except OSError as e:
        if e.errno not in (38, 22):  # ENOSYS, EINVAL: older kernel, remount one by one
            raise
    points = (
        [path]
        if not recursive
        else [p for p in _mount_points() if p == path or p.startswith(path.rstrip("/") + "/")]
    )
    failed = []
    for p in points:
        try:
            _remount(p, readonly=True)
        except (FileNotFoundError, NotADirectoryError):  # hidden under another mount
            continue
        except OSError as e:
            failed.append(f"{p}: {e.strerror}")
    if failed:
        raise OSError(f"could not make read-only: {'; '.join(failed[:5])}")


def make_writable(path: str) -> None:
    """Clear read-only on the one mount at ``path`` (one this worker made itself)."""
    try:
        _mount_setattr(path, False, 0, _MOUNT_ATTR_RDONLY)
    except OSError as e:
        if e.errno not in (38, 22):
            raise
        _remount(path, readonly=False)


def mount_tmpfs(path: str, size_mb: int, mode: str) -> None:
    """An empty tmpfs on ``path``, bounded in bytes and inodes."""
    # nr_inodes bounds kernel memory a program could pin with millions of empty files.
    opts = f"size={size_mb}m,nr_inodes={max(1024, size_mb * 400)},mode={mode}"
    mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, opts)


def cover(path: str, keep: list[str], size_mb: int = 1, mode: str = "0755") -> None:
    """Hide ``path`` under an empty tmpfs, binding back the entries in ``keep``.

    ``keep`` are direct children of ``path`` (e.g. ``/root/.pyenv`` for ``/root``). Each is
    opened before the tmpfs goes on, then bound back from that handle, so no staging
    directory is needed.
    """
    fds = []
    try:
        for child in keep:
            fds.append((child, os.open(child, os.O_PATH | os.O_CLOEXEC)))
        mount_tmpfs(path, size_mb, mode)
        for child, fd in fds:
            if os.path.isdir(f"/proc/self/fd/{fd}"):
                os.makedirs(child, exist_ok=True)
            else:
                with open(child, "w"):
                    pass
            mount(f"/proc/self/fd/{fd}", child, None, MS_BIND | MS_REC, None)
    finally:
        for _, fd in fds:
            os.close(fd)


def cover_plan(covers: list[str], needed: list[str]) -> list[tuple[str, list[str]]]:
    """For each directory to cover, the children to bind back so ``needed`` stay reachable.

    Outer directories come first. The root, a directory that is needed, and one inside a
    needed directory (e.g. a working directory inside ``site-packages``) are not covered:
    covering them would hide what the interpreter imports.
    """
    needed_real = {os.path.realpath(p) for p in needed if p and os.path.exists(p)}
    plan = []
    for d in sorted({os.path.realpath(c) for c in covers if c}, key=lambda p: p.count("/")):
        if d == "/" or not os.path.isdir(d):
            continue
        if any(d == n or d.startswith(n.rstrip("/") + "/") for n in needed_real if n != "/"):
            continue
        keep = set()
        for n in needed_real:
            if n.startswith(d + "/"):
                keep.add(d + "/" + n[len(d) + 1 :].split("/")[0])
        plan.append((d, sorted(keep)))
    return plan


def blocked_dirs(needed: list[str]) -> list[str]:
    """Directories on the way to ``needed`` that other users cannot traverse (e.g. /root)."""
    import stat

    out = set()
    for path in needed:
        if not path or not os.path.exists(path):
            continue
        cur = ""
        for part in os.path.realpath(path).strip("/").split("/")[:-1]:
            cur = f"{cur}/{part}"
            try:
                if not os.stat(cur).st_mode & stat.S_IXOTH:
                    out.add(cur)
                    break
            except OSError:
                break
    return sorted(out)


def drop_bounding_set() -> None:
    """Empty the capability bounding and ambient sets: nothing executed later regains one."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except OSError:
        last = 63
    for cap in range(last + 1):
        _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)


def drop_capabilities() -> None:
    """Drop every capability for good: bounding and ambient sets, securebits (uid 0 gains
    none on exec), then the effective, permitted and inheritable sets."""
    drop_bounding_set()
    _check(_libc.prctl(_PR_SET_SECUREBITS, _SECUREBITS_LOCKED, 0, 0, 0), "PR_SET_SECUREBITS")
    header = struct.pack("Ii", _LINUX_CAPABILITY_VERSION_3, 0)
    data = bytes(24)  # two {effective, permitted, inheritable} u32 triples, all zero
    _check(_libc.capset(header, data), "capset")


def has_capabilities() -> bool:
    """True when this process holds any capability (root, or root of a user namespace)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("CapEff:", "CapPrm:")) and int(line.split()[1], 16):
                    return True
    except (OSError, ValueError):
        return os.geteuid() == 0
    return False


def level(layers: list[str] | tuple[str, ...] | set[str]) -> str:
    """``full`` when every layer of :data:`FULL_LAYERS` is present, ``basic`` when no
    namespace is (fork, rlimits and the audit hook only), else ``partial``."""
    have = set(layers)
    if all(x in have for x in FULL_LAYERS):
        return "full"
    if not have & {"netns", "mountns", "pidns", "ipcns"}:
        return "basic"
    return "partial"


def missing(layers: list[str] | tuple[str, ...] | set[str]) -> list[str]:
    """The layers of :data:`FULL_LAYERS` that ``layers`` lacks."""
    have = set(layers)
    return [x for x in FULL_LAYERS if x not in have]
