"""Forking the launcher first thing in `stockade run`, before the CLI, the supervisor and the
policy are imported.

The launcher (launcher.py) enters the new namespaces, creates the proxy listener there and
imports what init needs: 30-50 ms on a small machine, on the critical path when it starts after
the supervisor's imports. `main()` calls `prefork` as soon as the command line is known to
start a sandbox in a known isolation mode (cli/runfast.py), so that work overlaps with the
supervisor's; the supervisor then `take`s it over. A launcher forked for another mode is
killed and the supervisor forks its own; one nobody takes over exits when its control socket
closes (or with the supervisor: PR_SET_PDEATHSIG).

Forked from the main thread before any other thread exists. Imports nothing but os and socket.
"""

from __future__ import annotations

import os
import signal
import socket

LANDLOCK_ONLY = "landlock"  # spec.LANDLOCK_ONLY, without importing spec (msgspec) here
EXIT_SETUP = 125


class Launcher:
    """The supervisor's end of a launcher: its pid, control socket and status pipe."""

    __slots__ = ("pid", "ctl", "status_r", "isolation", "host_listener")

    def __init__(self, pid: int, ctl: socket.socket, status_r: int, isolation: str,
                 host_listener: socket.socket | None) -> None:
        self.pid, self.ctl, self.status_r = pid, ctl, status_r
        self.isolation, self.host_listener = isolation, host_listener


_preforked: Launcher | None = None


def fork_launcher(isolation: str, host_listener: socket.socket | None = None,
                  close: tuple[int, ...] = (), workdir: str | None = None) -> Launcher:
    """Fork the launcher for `isolation` (the landlock-only mode needs the supervisor's host-side
    `host_listener`); `close` are the caller's descriptors the child must not keep; `workdir`
    is --workdir (the launcher surveys it for Unix sockets while it waits for the spec)."""
    ctl, ctl_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    supervisor = os.getpid()
    pid = os.fork()
    if pid == 0:  # never returns into the caller's code
        try:
            ctl.close()
            os.close(status_r)
            port = None
            if host_listener is not None:
                port = host_listener.getsockname()[1]
                host_listener.close()
            for fd in close:
                os.close(fd)
            from .launcher import child_main
            from .spec import Early

            child_main(Early.for_run(isolation, supervisor, port, workdir), ctl_child, status_w)
        except BaseException as exc:  # child_main reports its own failures; this is an import's
            _report(status_w, exc)
        finally:
            os._exit(EXIT_SETUP)
    ctl_child.close()
    os.close(status_w)
    return Launcher(pid, ctl, status_r, isolation, host_listener)


def prefork(isolation: str, close: tuple[int, ...] = (), workdir: str | None = None) -> None:
    """Fork the launcher now, for the supervisor to `take` (see the module doc)."""
    global _preforked
    if _preforked is not None:
        return
    host_listener = None
    if isolation == LANDLOCK_ONLY:
        try:
            host_listener = _host_listener()
        except OSError:
            return  # the supervisor tries again, and reports it
    _preforked = fork_launcher(isolation, host_listener, close, workdir)


def private_fds() -> tuple[int, ...]:
    """The preforked launcher's descriptors (supervisor's side), which a process forked later
    must not keep."""
    launcher = _preforked
    if launcher is None:
        return ()
    fds = (launcher.ctl.fileno(), launcher.status_r)
    return fds if launcher.host_listener is None else (*fds, launcher.host_listener.fileno())


def take(isolation: str) -> Launcher | None:
    """The preforked launcher when it was forked for `isolation`; else None (one forked for
    another mode is killed and reaped)."""
    global _preforked
    launcher, _preforked = _preforked, None
    if launcher is None or launcher.isolation == isolation:
        return launcher
    try:
        os.kill(launcher.pid, signal.SIGKILL)
    except OSError:
        pass
    os.waitpid(launcher.pid, 0)
    launcher.ctl.close()
    os.close(launcher.status_r)
    if launcher.host_listener is not None:
        launcher.host_listener.close()
    return None


def _host_listener() -> socket.socket:
    """namespaces.proxy_listener(port=0), without its imports."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(512)
    except BaseException:
        sock.close()
        raise
    return sock


def _report(status_fd: int, exc: BaseException) -> None:
    try:
        from .channel import SetupError, report_failure

        report_failure(status_fd, SetupError("launcher", f"{type(exc).__name__}: {exc}"))
    except BaseException:
        pass
