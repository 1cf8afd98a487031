"""Joining a running sandbox and being its command's parent: the I/O half of `stockade exec`
(the sequence is described in enter.py).
"""

from __future__ import annotations

import errno
import os
import posixpath
import select
import signal
import sys
import threading

from ..errors import EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, EXIT_STOCKADE_FAILURE
from ..records import Struct
from . import channel, libc, privileges
from .agent import Command, run_command
from .enter import ExecFailed, Target
from .init import end_children
from .landlock import LandlockSetup
from .landlock import preload as preload_landlock
from .landlock import prepare as prepare_landlock
from .seccomp import build_filter
from .spec import LANDLOCK_ONLY, NAMESPACES
from .terminal import foreground_terminal, set_foreground
from .wakeup import FORWARDED, install, noop
from .wakeup import drain as _drain
from .wakeup import kill as _kill

# user first: joining it grants the capabilities that joining the others needs (rootless).
JOIN_ORDER = ("user", "mnt", "ipc", "uts", "net", "pid")
_FLAGS = {"user": libc.CLONE_NEWUSER, "mnt": libc.CLONE_NEWNS, "ipc": libc.CLONE_NEWIPC,
          "uts": libc.CLONE_NEWUTS, "net": libc.CLONE_NEWNET, "pid": libc.CLONE_NEWPID}
TO_GROUP = frozenset({signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGWINCH})


def exit_code_of(failure: channel.SetupError) -> int:
    if failure.layer == "exec":
        return EXIT_NOT_FOUND if failure.errno in (errno.ENOENT, errno.ENOTDIR) else EXIT_CANNOT_EXECUTE
    return EXIT_STOCKADE_FAILURE


def failure_message(failure: channel.SetupError) -> str:
    if failure.layer == "exec":
        return failure.message
    return f"cannot start the command in the sandbox ({failure.layer}): {failure.message}"


# -- joining the namespaces (I/O) -------------------------------------------------------------

def _ended(target: Target) -> ExecFailed:
    return ExecFailed(f"sandbox {target.name!r} has ended", hint="`stockade list` shows the running sandboxes")


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return int(data[data.rindex(b")") + 2:].split()[1])


def pin(target: Target, pid: int) -> int:
    """A pidfd on `pid`, checked to be a child of the sandbox's supervisor (so not a recycled pid)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise _ended(target) from None
    except OSError as exc:
        raise ExecFailed(f"cannot watch the sandbox's process {pid}: {exc.strerror}") from None
    try:
        parent = _parent_of(pid)
        signal.pidfd_send_signal(pidfd, 0)  # still alive: /proc/<pid> was the pinned process
    except (OSError, ValueError, IndexError):
        os.close(pidfd)
        raise _ended(target) from None
    if parent != target.supervisor_pid:
        os.close(pidfd)
        raise _ended(target)
    return pidfd


def open_namespaces(target: Target, pidfd: int) -> dict[str, int]:
    """Descriptors of the sandbox's namespaces, from its pinned launcher (see the module doc)."""
    pid = target.launcher_pid
    fds: dict[str, int] = {}
    try:
        for name in JOIN_ORDER:
            if name not in target.namespaces:
                continue
            link = "pid_for_children" if name == "pid" else name
            try:
                fds[name] = os.open(f"/proc/{pid}/ns/{link}", os.O_RDONLY | os.O_CLOEXEC)
            except PermissionError:
                raise ExecFailed(f"cannot open the namespaces of sandbox {target.name!r}: permission denied",
                                 hint="run `stockade exec` as the user who ran `stockade run`") from None
            except OSError:
                raise _ended(target) from None
            mine, theirs = os.stat(f"/proc/self/ns/{link}"), os.fstat(fds[name])
            if (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino):
                raise ExecFailed(f"sandbox {target.name!r} shares our {name} namespace: refusing to run "
                                 "the command outside the sandbox")
        try:
            signal.pidfd_send_signal(pidfd, 0)  # the links were the pinned launcher's
        except ProcessLookupError:
            raise _ended(target) from None
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    return fds


class _NoImports:
    """Installed once the sandbox's mount view is ours: files there may be the sandbox's to
    write, and this process is privileged (root, or root of the sandbox's user namespace)."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        raise ImportError(f"stockade exec imports nothing inside the sandbox's view (wanted {name})")


def join(target: Target, fds: dict[str, int]) -> None:
    if "user" in fds and (threading.active_count() > 1 or len(os.listdir("/proc/self/task")) > 1):
        raise ExecFailed("internal: stockade exec must be single-threaded to join a user namespace")
    for name in JOIN_ORDER:
        if name not in fds:
            continue
        try:
            libc.setns(fds[name], _FLAGS[name])
        except OSError as exc:
            raise ExecFailed(f"cannot join the {name} namespace of sandbox {target.name!r}: "
                             f"{os.strerror(exc.errno or 0)}") from None
        if name == "mnt":
            sys.meta_path.insert(0, _NoImports())  # type: ignore[arg-type]
            _check_view(target)


def _check_view(target: Target) -> None:
    """Init seals the view (read-only root, /run/stockade) before the command starts: anything
    else is a sandbox still starting, and a view we must not run in."""
    try:
        sealed = bool(os.statvfs("/").f_flag & os.ST_RDONLY) and os.path.isdir("/run/stockade")
    except OSError:
        sealed = False
    if not sealed:
        raise ExecFailed(f"the mount view of sandbox {target.name!r} is not sealed (is it still starting?)",
                         hint="try again in a moment")


# -- running the command (I/O) ----------------------------------------------------------------

def run(target: Target, argv: tuple[str, ...], workdir: str | None = None) -> int:
    if os.geteuid() != target.uid:
        raise ExecFailed(f"sandbox {target.name!r} belongs to uid {target.uid}, not to you (uid {os.geteuid()})")
    seccomp_filter = _compile_seccomp(target)  # binds libseccomp before the view hides it
    preload_landlock()
    watch = pin(target, target.launcher_pid or target.init_pid)
    if target.isolation == NAMESPACES:
        fds = open_namespaces(target, watch)
        try:
            join(target, fds)
        finally:
            for fd in fds.values():
                os.close(fd)
    landlock = _landlock(target)
    cmd = Command(
        argv=argv, env=dict(target.env),
        cwd=posixpath.normpath(posixpath.join(target.cwd, workdir)) if workdir else target.cwd,
        run_as=target.run_as,
        drop_bounding_set=target.run_as is not None or "user" in target.namespaces,
        die_with_parent=True,  # the command's lifetime is bounded by ours, as the agent's is by init's
        hard=target.hard, terminal_fd=foreground_terminal(), parent="stockade exec",
    )
    return _Session(target, cmd, landlock, seccomp_filter, watch).run()


def _compile_seccomp(target: Target) -> object:
    try:
        return build_filter(target.seccomp)
    except (OSError, ValueError) as exc:
        raise ExecFailed(f"cannot build the sandbox's seccomp filter: {exc}") from None


def _landlock(target: Target) -> LandlockSetup:
    try:
        setup = prepare_landlock(list(target.grants), hard=target.hard, tcp_connect_port=target.tcp_port)
    except channel.SetupError as exc:
        raise ExecFailed(f"cannot rebuild the sandbox's Landlock rules: {exc.message}") from None
    return setup


class _Session(Struct):
    """The command's parent: forks it, forwards signals, shares the terminal, reaps it."""

    target: Target
    cmd: Command
    landlock: LandlockSetup
    seccomp_filter: object
    watch: int  # pidfd of the launcher (namespaces) or init (landlock-only): readable when it ends
    pid: int = 0
    ended: bool = False
    status_data: bytes = b""
    status_closed: bool = False

    def run(self) -> int:
        wake_r = install()
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        subreaper = self.target.isolation == LANDLOCK_ONLY  # no pid namespace holds what it leaves behind
        go_r, go_w = os.pipe2(os.O_CLOEXEC) if subreaper else (-1, -1)
        if subreaper:
            libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)
        try:
            self.pid = os.fork()
        except OSError as exc:  # ENOMEM: the pid namespace's init is gone
            raise _ended(self.target) if exc.errno == errno.ENOMEM else ExecFailed(f"fork: {exc.strerror}") from None
        if self.pid == 0:
            os.close(status_r)
            os.close(wake_r)
            os.close(self.watch)
            if subreaper:
                _wait_for_registration(go_r, go_w)
            run_command(self.cmd, self.landlock, self.seccomp_filter, status_w)
        os.close(status_w)
        self.landlock.ruleset = None
        try:
            os.setpgid(self.pid, self.pid)  # the child does it too: whoever runs first wins the race
        except OSError:
            pass
        try:
            if subreaper:
                os.close(go_r)
                _register(self.target, self.pid)
                os.write(go_w, b"\x01")  # registered: the command may start (and connect)
                os.close(go_w)
            if self.target.isolation == NAMESPACES and self.target.rootless:
                privileges.clear_capabilities()  # ours in the sandbox's user namespace: not needed now
            status = self._wait(wake_r, status_r)
        except BaseException:
            _kill(-self.pid, signal.SIGKILL)
            raise
        finally:
            if self.cmd.terminal_fd is not None:
                set_foreground(self.cmd.terminal_fd, os.getpgrp())
            if subreaper:
                end_children()  # what the command left behind (we are its subreaper)
        self._read_rest(status_r)
        failures = channel.parse_failures(self.status_data)
        if failures:
            raise ExecFailed(failure_message(failures[0]), exit_code_of(failures[0]))
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL and self._sandbox_ended():
            sys.stderr.write(f"stockade: sandbox {self.target.name} ended, and the command with it\n")
        return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)

    def _wait(self, wake_r: int, status_r: int) -> int:
        readers = [wake_r, status_r, self.watch]
        while True:
            try:
                ready, _, _ = select.select(readers, [], [])
            except InterruptedError:
                continue
            if status_r in ready:
                data = os.read(status_r, 65536)
                self.status_data += data
                if not data:
                    readers.remove(status_r)
                    os.close(status_r)
                    self.status_closed = True
            if self.watch in ready:
                readers.remove(self.watch)
                self.ended = True
                if self.target.isolation == LANDLOCK_ONLY:  # no pid namespace ends the command for us
                    _kill(-self.pid, signal.SIGKILL)
                    _kill(self.pid, signal.SIGKILL)
            if wake_r in ready:
                for sig in _drain(wake_r):
                    if sig == signal.SIGCHLD:
                        status = self._reap()
                        if status is not None:
                            return status
                    elif sig in TO_GROUP:
                        _kill(-self.pid, sig)
                    elif sig in FORWARDED:
                        _kill(self.pid, sig)

    def _reap(self) -> int | None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG | os.WUNTRACED)
            except ChildProcessError:
                return None
            if pid == 0:
                return None
            if pid != self.pid:
                continue  # something the command left behind, adopted as its subreaper
            if os.WIFSTOPPED(status):
                self._stop_with_command()
            else:
                return status

    def _read_rest(self, status_r: int) -> None:
        """The child is gone, so the pipe's only writer is: read to EOF."""
        if self.status_closed:
            return
        while chunk := os.read(status_r, 65536):
            self.status_data += chunk
        os.close(status_r)

    def _stop_with_command(self) -> None:
        """Ctrl-Z stopped the command: take the terminal back and stop too (as `stockade run`
        does); on `fg` hand the terminal back and continue it. Without a terminal, a stop is
        someone else's business."""
        terminal = self.cmd.terminal_fd
        if terminal is None:
            return
        set_foreground(terminal, os.getpgrp())
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # returns once the shell's `fg` continues us
        signal.signal(signal.SIGTSTP, noop)
        set_foreground(terminal, self.pid)
        _kill(-self.pid, signal.SIGCONT)

    def _sandbox_ended(self) -> bool:
        """The kernel killed the command because the sandbox's pid namespace ended (the launcher
        exits right after init, which waits for us to reap the command: give it a moment)."""
        return self.ended or bool(select.select([self.watch], [], [], 0.5)[0])


def _wait_for_registration(go_r: int, go_w: int) -> None:
    """The command's side of exec_register (landlock-only mode): nothing of it runs, so nothing
    connects, before the proxy knows it. EOF means our parent failed or died: end here."""
    os.close(go_w)
    try:
        go = os.read(go_r, 1)
    except OSError:
        go = b""
    if go != b"\x01":
        os._exit(EXIT_STOCKADE_FAILURE)
    os.close(go_r)


def _register(target: Target, pid: int) -> None:
    """Have the sandbox's proxy serve our child `pid` as it serves the sandbox's own command:
    with no pid namespace to join, it is not below the sandbox's init (see exec_info.ExecRoots)."""
    from .. import control, state

    try:
        control.call(state.control_socket_path(target.name), "exec_register", pid=pid, timeout=15)
    except control.ControlError as exc:
        if exc.error in ("unknown_op", "unsupported"):  # a sandbox of an older stockade: fail closed there
            sys.stderr.write(f"stockade: note: sandbox {target.name} cannot register exec'd commands: its proxy "
                             "refuses this command's connections (it is not below the sandbox's init)\n")
            return
        if exc.error == "unavailable":
            raise _ended(target) from None
        raise ExecFailed(f"sandbox {target.name!r} refused to serve the command ({exc.error}): {exc.detail}") from None

