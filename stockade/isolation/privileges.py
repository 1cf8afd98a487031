"""Privileges of the command: who it runs as, and the capabilities and limits it keeps (none).

The run-as user is resolved in the supervisor when the policy is loaded (a missing user fails
before anything starts); the child only applies numbers. In root mode the command drops to
`process.run_as_user`/`run_as_group`, or nobody/nogroup: it never runs as root. In rootless mode
it keeps the invoking user's uid (mapped to itself) and loses the user namespace's capabilities.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import resource

from .channel import SetupError
from .record import Record

DEFAULT_USER = "nobody"
DEFAULT_GROUPS = ("nogroup", "nobody")  # Debian names it nogroup, Fedora nobody


class RunAs(Record):
    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def resolve_run_as(user: str | None, group: str | None) -> RunAs:
    """The identity the command takes in root mode; ValueError with a clear message otherwise."""
    user = user or None
    group = group or None
    if user is None and group is None:
        user = DEFAULT_USER
        group = next((g for g in DEFAULT_GROUPS if _group_exists(g)), None)
    if user is None:
        raise ValueError("process.run_as_group without run_as_user: name the user too")
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, ValueError):
        raise ValueError(f"process.run_as_user {user!r} not found on this system") from None
    gid = pw.pw_gid
    if group is not None:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except (KeyError, ValueError):
            raise ValueError(f"process.run_as_group {group!r} not found on this system") from None
    if pw.pw_uid == 0 or gid == 0:
        raise ValueError("the sandboxed command never runs as root: choose another process.run_as_user/group")
    groups = tuple(g for g in os.getgrouplist(pw.pw_name, gid) if g != 0)
    return RunAs(pw.pw_name, pw.pw_uid, gid, groups, pw.pw_dir)


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def drop_bounding_set() -> None:
    """Empty the capability bounding set (needs CAP_SETPCAP: root, or root of a user namespace)."""
    from . import libc

    cap = 0
    while True:
        try:
            libc.prctl(libc.PR_CAPBSET_DROP, cap)
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # past the kernel's last capability
                return
            raise SetupError.from_os("capabilities", exc) from None
        cap += 1


def become(run_as: RunAs) -> None:
    """setgroups, setgid, setuid (all of real, effective, saved), then prove root is gone."""
    try:
        os.setgroups(list(run_as.groups))
        os.setresgid(run_as.gid, run_as.gid, run_as.gid)
        os.setresuid(run_as.uid, run_as.uid, run_as.uid)
    except OSError as exc:
        raise SetupError("privileges", f"cannot switch to {run_as.user}: {exc.strerror}", exc.errno or 0) from None
    if os.getresuid() != (run_as.uid,) * 3 or os.getresgid() != (run_as.gid,) * 3:
        raise SetupError("privileges", f"privilege drop verification failed for {run_as.user}")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise SetupError("privileges", "privilege drop verification failed: the command could regain uid 0")


def clear_capabilities() -> None:
    """Clear the ambient, effective, permitted and inheritable sets of this process."""
    from . import libc

    try:
        libc.prctl(libc.PR_CAP_AMBIENT, libc.PR_CAP_AMBIENT_CLEAR_ALL)
        libc.clear_capabilities()
    except OSError as exc:
        raise SetupError.from_os("capabilities", exc) from None


def no_new_privs() -> None:
    from . import libc

    try:
        libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
    except OSError as exc:
        raise SetupError.from_os("no_new_privs", exc) from None


def limit_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
