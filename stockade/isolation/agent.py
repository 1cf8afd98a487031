"""The command's last steps before execve, in the child init forks (never returns).

Order matters: process group and terminal; core dumps off; (root mode) bounding set dropped
while still privileged, then setgroups/setgid/setuid and proof that uid 0 is gone; every
capability cleared; no_new_privs; Landlock; seccomp (last: it forbids some of the above);
descriptors other than stdin, stdout and stderr closed; execve.
"""

from __future__ import annotations

import errno
import os
import signal
from typing import NoReturn

from . import libc, privileges
from .channel import SetupError, report_failure
from .landlock import LandlockSetup
from .spec import SandboxSpec
from .terminal import set_foreground

EXIT_SETUP, EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND = 125, 126, 127


def exec_command(spec: SandboxSpec, landlock: LandlockSetup, seccomp_filter: object, status_fd: int) -> NoReturn:
    try:
        _prepare(spec, landlock, seccomp_filter, status_fd)
        _execvpe(spec.argv, spec.env)
    except SetupError as exc:
        report_failure(status_fd, exc)
        os._exit(EXIT_SETUP)
    except OSError as exc:
        err = exc.errno or errno.ENOENT
        report_failure(status_fd, SetupError("exec", f"cannot run {spec.argv[0]!r}: {os.strerror(err)}", err))
        os._exit(EXIT_NOT_FOUND if err in (errno.ENOENT, errno.ENOTDIR) else EXIT_CANNOT_EXECUTE)
    except BaseException as exc:  # never let Python unwind into init's code
        report_failure(status_fd, SetupError("internal", f"{type(exc).__name__}: {exc}"))
        os._exit(EXIT_SETUP)
    os._exit(EXIT_SETUP)


def _prepare(spec: SandboxSpec, landlock: LandlockSetup, seccomp_filter: object, status_fd: int) -> None:
    _default_signals()
    parent = os.getppid()
    os.setpgid(0, 0)
    if spec.terminal_fd is not None:
        set_foreground(spec.terminal_fd, os.getpid())
    privileges.limit_core_dumps()
    if spec.run_as is not None or "user" in spec.namespaces:
        privileges.drop_bounding_set()  # we hold CAP_SETPCAP: root, or root of our user namespace
    if spec.run_as is not None:
        privileges.become(spec.run_as)
    if spec.plan is None:  # no pid namespace: die with init (set after setuid, which clears it)
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            raise SetupError("init", "init died while the command was starting")
    privileges.clear_capabilities()
    try:
        os.chdir(spec.cwd)
    except OSError as exc:
        who = spec.run_as.user if spec.run_as else "you"
        raise SetupError("workdir", f"cannot enter {spec.cwd} as {who}: {exc.strerror}", exc.errno or 0) from None
    privileges.no_new_privs()
    try:
        landlock.restrict()
    except OSError as exc:
        if spec.hard:
            raise SetupError("landlock", f"Landlock restrict_self failed: {exc.strerror}", exc.errno or 0) from None
        os.write(2, f"stockade: WARNING: Landlock restrict_self failed ({exc.strerror}): the filesystem "
                    "rules are NOT enforced (best_effort)\n".encode())
    _close_descriptors(keep=status_fd)
    try:
        seccomp_filter.load()  # type: ignore[attr-defined]
    except OSError as exc:
        raise SetupError("seccomp", f"loading the seccomp filter: {exc.strerror}", exc.errno or 0) from None


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
