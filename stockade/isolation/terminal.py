"""The user's terminal: who is in the foreground, and handing it over without SIGTTOU.

When stockade runs in the foreground of a terminal, the command gets its own process group
and becomes the terminal's foreground group, so Ctrl-C, Ctrl-Z and SIGWINCH reach it (and its
children) exactly once, from the kernel, and bash job control works inside. When the command
stops (Ctrl-Z), the supervisor takes the terminal back and stops itself, as sudo does; on
SIGCONT (`fg`) the terminal goes back to the command.
"""

from __future__ import annotations

import os
import signal


def foreground_terminal() -> int | None:
    """The first of stdin, stdout, stderr that is a terminal whose foreground group is ours."""
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
                return fd
        except OSError:
            continue
    return None


def set_foreground(fd: int, pgid: int) -> bool:
    """Make `pgid` the terminal's foreground group; SIGTTOU is blocked so a background caller may."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
    try:
        os.tcsetpgrp(fd, pgid)
        return True
    except OSError:
        return False
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
