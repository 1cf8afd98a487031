"""The command's last steps before execve, in the child init forks (never returns).

Order matters: process group and terminal; core dumps off; (root mode) bounding set dropped
while still privileged, then setgroups/setgid/setuid and proof that uid 0 is gone; every
capability cleared; no_new_privs; Landlock; seccomp (last: it forbids some of the above);
descriptors other than stdin, stdout and stderr closed; execve.

The same sequence serves `stockade exec` (isolation/enter.py), which builds its `Command` from
the running sandbox's exec_info instead of the SandboxSpec.
"""

from __future__ import annotations

import errno
import os
import select
import signal
from typing import NoReturn

from . import libc, privileges
from .channel import SetupError, report_failure
from .landlock import LandlockSetup
from .privileges import RunAs
from .record import Record
from .spec import SandboxSpec
from .terminal import set_foreground

EXIT_SETUP, EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND = 125, 126, 127


class Command(Record):
    """What the last steps before execve need."""

    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    run_as: RunAs | None  # root mode: who the command becomes
    drop_bounding_set: bool  # we hold CAP_SETPCAP: root, or root of our user namespace
    die_with_parent: bool  # nothing else ends us with the sandbox: PR_SET_PDEATHSIG
    hard: bool  # landlock.compatibility == hard_requirement
    terminal_fd: int | None  # a terminal to take the foreground of
    parent: str = "init"  # who we die with, for the error message

    @classmethod
    def from_spec(cls, spec: SandboxSpec) -> Command:
        return cls(spec.argv, spec.env, spec.cwd, spec.run_as,
                   drop_bounding_set=spec.run_as is not None or "user" in spec.namespaces,
                   die_with_parent=spec.plan is None,  # no pid namespace: die with init
                   hard=spec.hard, terminal_fd=spec.terminal_fd)


def exec_command(spec: SandboxSpec, landlock: LandlockSetup, seccomp_filter: object, status_fd: int) -> NoReturn:
    run_command(Command.from_spec(spec), landlock, seccomp_filter, status_fd)


def run_command(cmd: Command, landlock: LandlockSetup, seccomp_filter: object, status_fd: int) -> NoReturn:
    try:
        _prepare(cmd, landlock, seccomp_filter, status_fd)
        _execvpe(cmd.argv, cmd.env)
    except SetupError as exc:
        report_failure(status_fd, exc)
        os._exit(EXIT_SETUP)
    except OSError as exc:
        err = exc.errno or errno.ENOENT
        report_failure(status_fd, SetupError("exec", f"cannot run {cmd.argv[0]!r}: {os.strerror(err)}", err))
        os._exit(EXIT_NOT_FOUND if err in (errno.ENOENT, errno.ENOTDIR) else EXIT_CANNOT_EXECUTE)
    except BaseException as exc:  # never let Python unwind into the parent's code
        report_failure(status_fd, SetupError("internal", f"{type(exc).__name__}: {exc}"))
        os._exit(EXIT_SETUP)
    os._exit(EXIT_SETUP)


def _prepare(cmd: Command, landlock: LandlockSetup, seccomp_filter: object, status_fd: int) -> None:
    _default_signals()
    parent = os.getppid()
    os.setpgid(0, 0)
    if cmd.terminal_fd is not None:
        set_foreground(cmd.terminal_fd, os.getpid())
    privileges.limit_core_dumps()
    if cmd.drop_bounding_set:
        privileges.drop_bounding_set()
    if cmd.run_as is not None:
        privileges.become(cmd.run_as)
    if cmd.die_with_parent:  # set after setuid, which clears it
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent or (parent == 0 and _reader_gone(status_fd)):
            raise SetupError(cmd.parent, f"{cmd.parent} died while the command was starting")
    privileges.clear_capabilities()
    try:
        os.chdir(cmd.cwd)
    except OSError as exc:
        who = cmd.run_as.user if cmd.run_as else "you"
        raise SetupError("workdir", f"cannot enter {cmd.cwd} as {who}: {exc.strerror}", exc.errno or 0) from None
    privileges.no_new_privs()
    try:
        landlock.restrict()
    except OSError as exc:
        if cmd.hard:
            raise SetupError("landlock", f"Landlock restrict_self failed: {exc.strerror}", exc.errno or 0) from None
        os.write(2, f"stockade: WARNING: Landlock restrict_self failed ({exc.strerror}): the filesystem "
                    "rules are NOT enforced (best_effort)\n".encode())
    _close_descriptors(keep=status_fd)
    try:
        seccomp_filter.load()  # type: ignore[attr-defined]
    except OSError as exc:
        raise SetupError("seccomp", f"loading the seccomp filter: {exc.strerror}", exc.errno or 0) from None


def _reader_gone(status_fd: int) -> bool:
    """Our parent lives outside our pid namespace (getppid() is 0 there): it holds the status
    pipe's read end, and a pipe whose readers are all gone polls POLLERR."""
    poller = select.poll()
    poller.register(status_fd, select.POLLOUT)
    return any(ev & select.POLLERR for _fd, ev in poller.poll(0))


def _execvpe(argv: tuple[str, ...], env: dict[str, str]) -> NoReturn:
    """execvp's search, except that a PATH directory we cannot enter means "not there" (as in
    shells), so a missing command is 127 even when PATH lists an unreadable directory."""
    if "/" in argv[0]:
        os.execve(argv[0], list(argv), env)
    saved: OSError | None = None
    for directory in env.get("PATH", os.defpath).split(":"):
        path = os.path.join(directory or ".", argv[0])
        try:
            os.execve(path, list(argv), env)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            if exc.errno == errno.EACCES and not os.path.exists(path):
                continue  # the directory itself is out of reach
            saved = saved or exc
    raise saved or FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])


def _default_signals() -> None:
    """Dispositions and mask as a fresh process has them: ignored signals survive execve."""
    signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            continue
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _close_descriptors(keep: int) -> None:
    """Close every descriptor but 0, 1, 2; `keep` (the status pipe) closes itself at exec."""
    os.set_inheritable(keep, False)
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 20)
