"""Signals as bytes on a pipe, for the three processes that forward them: the supervisor, the
sandbox's init and `stockade exec`. Each waits in one loop (select/poll) for its children, its
peers and signals, so no work ever runs inside a signal handler."""

from __future__ import annotations

import os
import signal

# What a user can send a sandboxed command through stockade (DESIGN.md §1); each receiver
# forwards them to the command (or its process group).
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGWINCH)
# The loop also hears about its children and job control.
HANDLED = (*FORWARDED, signal.SIGCHLD, signal.SIGCONT, signal.SIGTSTP)
# A background process that touches the terminal, or writes to a closed pipe, must not stop or die.
IGNORED = (signal.SIGTTIN, signal.SIGTTOU, signal.SIGPIPE)


def install(ignored: tuple[int, ...] = IGNORED) -> int:
    """Route HANDLED signals to a non-blocking pipe and ignore `ignored`; the pipe's read end."""
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for sig in HANDLED:
        signal.signal(sig, noop)
    for sig in ignored:
        signal.signal(sig, signal.SIG_IGN)
    return read_fd


def noop(signum: int, frame: object) -> None:
    """The handler: the wakeup fd carries the signal number, nothing else needs doing."""


def drain(fd: int) -> list[int]:
    """The signal numbers waiting on the pipe (none if it is empty)."""
    data = b""
    while True:
        try:
            chunk = os.read(fd, 512)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    return list(data)


def kill(pid: int, sig: int) -> None:
    """os.kill, where a process that is already gone is not an error."""
    try:
        os.kill(pid, sig)
    except OSError:
        pass
