"""The launcher: the supervisor's child that enters the new namespaces and forks init.

unshare(CLONE_NEWPID) only moves the caller's *children* into the new pid namespace, so the
launcher stays outside, forks init (PID 1 inside), waits for it and exits with its status. It
dies with the supervisor (PR_SET_PDEATHSIG, with getppid() checked against the race), which
takes init, and so the whole pid namespace, with it.

In the landlock-only mode there is no launcher: the supervisor forks init directly.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import NoReturn

from . import channel, libc, namespaces
from .channel import SetupError, report_failure
from .init import run_init
from .spec import SandboxSpec

EXIT_SETUP = 125


def run_launcher(spec: SandboxSpec, ctl: socket.socket, status_fd: int) -> NoReturn:
    try:
        _run(spec, ctl, status_fd)
    except SetupError as exc:
        report_failure(status_fd, exc)
    except BaseException as exc:
        report_failure(status_fd, SetupError("launcher", f"{type(exc).__name__}: {exc}"))
    os._exit(EXIT_SETUP)


def _run(spec: SandboxSpec, ctl: socket.socket, status_fd: int) -> NoReturn:
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)  # the terminal's signals are the supervisor's to forward
    os.setpgid(0, 0)  # out of the terminal's foreground group: no signal arrives twice
    namespaces.enter(spec.namespaces, uid=spec.uid, gid=spec.gid, hostname=spec.name)
    libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != spec.supervisor_pid:
        os._exit(EXIT_SETUP)  # the supervisor died before PR_SET_PDEATHSIG took hold
    namespaces.loopback_up()
    listener = namespaces.proxy_listener(port=spec.proxy_port)
    lifeline_r, lifeline_w = os.pipe2(os.O_CLOEXEC)
    init_pid = os.fork()
    if init_pid == 0:
        os.close(lifeline_w)
        listener.close()
        run_init(spec, ctl, status_fd, lifeline_r)
    os.close(lifeline_r)
    channel.send(ctl, "launcher", {"init_pid": init_pid}, fds=(listener.fileno(),))
    listener.close()
    ctl.close()
    os.close(status_fd)
    while True:
        try:
            _, status = os.waitpid(init_pid, 0)
            break
        except InterruptedError:
            continue
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
