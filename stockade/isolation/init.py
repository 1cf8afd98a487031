"""PID 1 of the sandbox: builds the view, prepares Landlock and seccomp, forks the command,
then reaps zombies, forwards signals and exits with the command's status.

Init is a fork of the supervisor (no new interpreter) and still holds a copy of its memory, so
it makes itself non-dumpable first: the command must never read it. It dies with the launcher
(PR_SET_PDEATHSIG, checked against the race through a lifeline pipe), and when PID 1 dies the
kernel kills everything else in the pid namespace.
"""

from __future__ import annotations

import os
import select
import signal
import socket
from typing import NoReturn

from . import channel, gcpause, libc
from .agent import exec_command
from .channel import SetupError, report_failure
from .landlock import preload as preload_landlock
from .landlock import prepare as prepare_landlock
from .mounts import build_view, seal_view, write_run_files
from .seccomp import Block, build_filter
from .sockscan import Survey
from .spec import SandboxSpec
from .terminal import set_foreground
from .wakeup import install
from .wakeup import kill as _kill

# Signals a terminal would send to the whole foreground group: forwarded to the command's group.
TO_GROUP = frozenset({signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGWINCH, signal.SIGTSTP,
                      signal.SIGCONT})
EXIT_SETUP = 125


def run_init(spec: SandboxSpec, ctl: socket.socket, status_fd: int, lifeline_fd: int | None,
             prebuilt: tuple[tuple[Block, ...], object] | None = None, survey: Survey | None = None) -> NoReturn:
    """`prebuilt`: a seccomp filter the launcher compiled for a table, used if it is the spec's;
    `survey`: the launcher's early socket walk of the workdir (used where it is the view's)."""
    try:
        code = _run(spec, ctl, status_fd, lifeline_fd, prebuilt, survey)
    except SetupError as exc:
        report_failure(status_fd, exc)
        os._exit(EXIT_SETUP)
    except BaseException as exc:  # a bug: say where, never unwind into the supervisor's code
        report_failure(status_fd, SetupError("init", f"{type(exc).__name__}: {exc}"))
        os._exit(EXIT_SETUP)
    os._exit(code)


def _run(spec: SandboxSpec, ctl: socket.socket, status_fd: int, lifeline_fd: int | None,
         prebuilt: tuple[tuple[Block, ...], object] | None, survey: Survey | None) -> int:
    libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if _parent_gone(spec, lifeline_fd):
        os._exit(EXIT_SETUP)
    libc.prctl(libc.PR_SET_DUMPABLE, 0)
    wakeup = install()
    try:
        if prebuilt is not None and prebuilt[0] == spec.seccomp:
            seccomp_filter = prebuilt[1]
        else:
            seccomp_filter = build_filter(spec.seccomp)
    except (OSError, ValueError) as exc:
        raise SetupError("seccomp", f"building the seccomp filter: {exc}") from None
    preload_landlock()
    facts: dict[str, object] = {"seccomp_rules": len(spec.seccomp)}
    if spec.plan is not None:
        try:
            view = build_view(spec.plan, state_dir=spec.state_dir, socket_candidates=spec.socket_candidates,
                              hidden_files=spec.hidden_files, early=survey)
        except OSError as exc:
            raise SetupError("mounts", exc.strerror or str(exc), exc.errno or 0) from None
        facts.update(hidden_sockets=view.hidden_sockets, scan_exhausted=view.scan_exhausted,
                     state_dir_hidden=view.state_dir_hidden, detached=view.detached,
                     hidden_files=view.hidden_files)
    else:
        libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)  # no pid namespace: collect orphans ourselves
    procfs = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    channel.send(ctl, "procfs", fds=(procfs,))
    os.close(procfs)
    tcp_port = spec.proxy_port if spec.plan is None else None
    landlock = prepare_landlock(list(spec.landlock_grants), hard=spec.hard, tcp_connect_port=tcp_port)
    facts.update(landlock_abi=landlock.abi, landlock_unavailable=landlock.unavailable,
                 landlock_rules=landlock.rules, landlock_skipped=landlock.skipped,
                 landlock_scoped=landlock.scoped, landlock_tcp_port=landlock.tcp_port)
    channel.send(ctl, "ready", facts)
    start = channel.recv(ctl)
    if start is None or start.kind != "start":
        os._exit(EXIT_SETUP)  # the supervisor gave up (it reports why)
    if spec.plan is not None:
        try:
            write_run_files(_split_files(start))
            seal_view()
        except OSError as exc:
            raise SetupError("mounts", f"sealing the view: {exc.strerror or exc}", exc.errno or 0) from None
    agent = os.fork()
    if agent == 0:
        os.close(wakeup)
        exec_command(spec, landlock, seccomp_filter, status_fd)
    os.close(status_fd)
    landlock.ruleset = None
    gcpause.resume()  # the command runs: init only reaps and forwards from now on
    try:
        os.setpgid(agent, agent)  # also done by the child: whoever runs first wins the race
    except OSError:
        pass
    _send(ctl, "started", {"pid": agent})
    return _supervise(spec, ctl, agent, wakeup)


def _split_files(start: channel.Message) -> dict[str, bytes]:
    files, offset = {}, 0
    for name, size in start.data["files"]:
        files[name] = start.blob[offset:offset + size]
        offset += size
    return files


def _parent_gone(spec: SandboxSpec, lifeline_fd: int | None) -> bool:
    if lifeline_fd is None:  # landlock-only mode: the supervisor is our parent
        return os.getppid() != spec.supervisor_pid
    readable, _, _ = select.select([lifeline_fd], [], [], 0)
    return bool(readable)  # EOF: the launcher is gone




def _send(ctl: socket.socket, kind: str, data: dict[str, object]) -> None:
    try:
        channel.send(ctl, kind, data)
    except OSError:
        pass  # the supervisor is gone; PR_SET_PDEATHSIG ends us


def _supervise(spec: SandboxSpec, ctl: socket.socket, agent: int, wakeup: int) -> int:
    stopped = False
    while True:
        try:
            select.select([wakeup], [], [])
            signals = os.read(wakeup, 512)
        except InterruptedError:
            continue
        except BlockingIOError:
            continue
        for sig in signals:
            if sig == signal.SIGCHLD:
                code, now_stopped = _reap(agent)
                if code is not None:
                    # Said first: the supervisor records the run's end while the kernel tears
                    # the sandbox down (our exit unmounts the view and empties the pid namespace).
                    _send(ctl, "exited", {"code": code})
                    _end_orphans(spec)
                    return code
                if now_stopped is not None:
                    stopped = True
                    _send(ctl, "stopped", {"signal": now_stopped})
            elif sig == signal.SIGCONT:
                if stopped and spec.terminal_fd is not None:
                    set_foreground(spec.terminal_fd, agent)
                stopped = False
                _kill(-agent, sig)
            elif sig in TO_GROUP:
                _kill(-agent, sig)
            else:
                _kill(agent, sig)


def _reap(agent: int) -> tuple[int | None, int | None]:
    """Reap every exited child; (the command's exit code, or None; its stop signal, or None)."""
    stop = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG | os.WUNTRACED)
        except ChildProcessError:
            return None, stop
        if pid == 0:
            return None, stop
        if pid != agent:
            continue
        if os.WIFSTOPPED(status):
            stop = os.WSTOPSIG(status)
        elif os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status), None
        elif os.WIFEXITED(status):
            return os.WEXITSTATUS(status), None


def _end_orphans(spec: SandboxSpec) -> None:
    """Without a pid namespace, kill what the command left behind (we are its subreaper)."""
    if spec.plan is not None:
        return  # PID 1 exiting takes the whole pid namespace with it
    end_children()


def end_children() -> None:
    """Kill and reap our children until none is left (orphans keep arriving while we do: we
    are their subreaper). Also used by `stockade exec` in the landlock-only mode."""
    for _ in range(50):
        children = _children()
        if not children:
            return
        for pid in children:
            _kill(pid, signal.SIGKILL)
        for _pid in children:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break


def _children() -> list[int]:
    pid = os.getpid()
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []
