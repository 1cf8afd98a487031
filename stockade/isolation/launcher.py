"""The launcher: the supervisor's child that enters the new namespaces and forks init.

The supervisor forks it first thing (from its main thread, before any other thread exists),
so the launcher's imports, namespace setup and survey of the workdir for Unix sockets
(sockscan.py) overlap with the supervisor loading the policy on the other core. The launcher
then receives the SandboxSpec over the control socket.

unshare(CLONE_NEWPID) only moves the caller's *children* into the new pid namespace, so the
launcher stays outside, forks init (PID 1 inside), waits for it and exits with its status. It
dies with the supervisor (PR_SET_PDEATHSIG, with getppid() checked against the race), which
takes init, and so the whole pid namespace, with it.

In the landlock-only mode there is no launcher: the supervisor's child becomes init directly.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import TYPE_CHECKING, NoReturn

from . import channel, gcpause, libc, namespaces, record
from .channel import SetupError, report_failure
from .spec import NAMESPACES, Early, SandboxSpec

if TYPE_CHECKING:
    from .seccomp import Block
    from .sockscan import Survey

EXIT_SETUP = 125


def child_main(early: Early, ctl: socket.socket, status_fd: int) -> NoReturn:
    """Entry point of the supervisor's child (never returns)."""
    try:
        _ignore_terminal_signals()
        if early.isolation == NAMESPACES:
            _launcher(early, ctl, status_fd)
        else:
            _preload()
            prebuilt = _prebuild_filter()
            spec = _receive_spec(ctl)
            from .init import run_init

            run_init(spec, ctl, status_fd, None, prebuilt)
    except SetupError as exc:
        report_failure(status_fd, exc)
    except BaseException as exc:
        report_failure(status_fd, SetupError("launcher", f"{type(exc).__name__}: {exc}"))
    os._exit(EXIT_SETUP)


def _ignore_terminal_signals() -> None:
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)  # the terminal's signals are the supervisor's to forward
    os.setpgid(0, 0)  # out of the terminal's foreground group: no signal arrives twice


def _preload() -> None:
    """Import what init and the command's pre-exec code need, and bind the C libraries, now:
    in parallel with the supervisor's policy loading, and before pivot_root hides them."""
    from . import init  # noqa: F401  (imports mounts, landlock, seccomp, agent)
    from .landlock import preload
    from .seccomp import load_pyseccomp

    load_pyseccomp()
    preload()


def _prebuild_filter() -> tuple[tuple[Block, ...], object] | None:
    """The default seccomp filter, compiled while the supervisor decides the spec (init uses
    it when the spec's table is that one; otherwise, or if this fails, it compiles its own)."""
    from .seccomp import DENYLIST, build_filter

    try:
        return DENYLIST, build_filter(DENYLIST)
    except (OSError, ValueError):
        return None


def _survey_workdir(workdir: str | None) -> Survey | None:
    """The workdir's Unix sockets, found while the supervisor decides the spec: the usual first
    tree of the view's socket walk, done before it is needed (isolation/sockscan.py)."""
    from .mountplan import scan_roots_of
    from .sockscan import survey

    if workdir is None or workdir == "/" or scan_roots_of([workdir]) != (workdir,):
        return None  # not a tree the view walks (or `/`, which the supervisor refuses to grant)
    return survey(workdir)


def _receive_spec(ctl: socket.socket) -> SandboxSpec:
    msg = channel.recv(ctl)
    if msg is None or msg.kind != "spec":
        os._exit(EXIT_SETUP)  # the supervisor gave up before the sandbox started (it says why)
    spec: SandboxSpec = record.loads(msg.blob)
    return spec


def _launcher(early: Early, ctl: socket.socket, status_fd: int) -> NoReturn:
    namespaces.enter(early.namespaces, uid=early.uid, gid=early.gid)
    libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != early.supervisor_pid:
        os._exit(EXIT_SETUP)  # the supervisor died before PR_SET_PDEATHSIG took hold
    namespaces.loopback_up()
    listener = namespaces.proxy_listener(port=early.proxy_port)
    diag = namespaces.sock_diag_socket()  # bound to this netns, like the listener
    _preload()
    prebuilt = _prebuild_filter()
    survey = _survey_workdir(early.workdir)
    spec = _receive_spec(ctl)
    if "uts" in spec.namespaces:
        socket.sethostname(spec.name)
    lifeline_r, lifeline_w = os.pipe2(os.O_CLOEXEC)
    init_pid = os.fork()
    if init_pid == 0:
        os.close(lifeline_w)
        listener.close()
        if diag is not None:
            diag.close()
        from .init import run_init

        run_init(spec, ctl, status_fd, lifeline_r, prebuilt, survey)
    os.close(lifeline_r)
    gcpause.resume()
    fds = (listener.fileno(),) if diag is None else (listener.fileno(), diag.fileno())
    channel.send(ctl, "launcher", {"init_pid": init_pid}, fds=fds)
    listener.close()
    if diag is not None:
        diag.close()
    ctl.close()
    os.close(status_fd)
    while True:
        try:
            _, status = os.waitpid(init_pid, 0)
            break
        except InterruptedError:
            continue
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
