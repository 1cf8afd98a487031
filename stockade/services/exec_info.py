"""The `exec_info` control op: what `stockade exec NAME -- COMMAND` needs to join a running
sandbox. The `exec` key is stockade exec's own description of the sandbox's layers
(isolation/enter.py: exec_info_payload); the rest is a summary for humans and tools.
And `exec_register` (ExecRoots): in the landlock-only mode, the proxy serves an exec'd command.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..control import Peer
    from ..isolation.spec import SandboxSpec
    from ..network.identity import IdentityResolver
    from ..supervisor import SandboxProcesses


def exec_info(spec: SandboxSpec, processes: SandboxProcesses) -> dict[str, Any]:
    """Pids are host pids except `agent_pid` (the sandbox's own pid namespace)."""
    from ..isolation.enter import exec_info_payload

    run_as = spec.run_as
    return {
        "sandbox": spec.name,
        "isolation": spec.isolation,
        "namespaces": list(spec.namespaces),
        "rootless": spec.rootless,
        "supervisor_pid": os.getpid(),
        "launcher_pid": processes.launcher_pid,
        "init_pid": processes.init_pid,
        "agent_pid": processes.agent_pid,
        "workdir": spec.cwd,
        "uid": run_as.uid if run_as else spec.uid,
        "gid": run_as.gid if run_as else spec.gid,
        "groups": list(run_as.groups) if run_as else [],
        "exec": exec_info_payload(spec, processes),
    }


# -- exec_register: the proxy serves an exec'd command (landlock-only mode) -------------------

MAX_EXEC_ROOTS = 256  # live `stockade exec` sessions per sandbox: bounds the pidfds we hold


class ExecRoots:
    """`exec_register` and the peer check behind it, for the landlock-only mode.

    With no pid namespace to join, a `stockade exec` command runs on the host as the child of the
    `stockade exec` process, not below the sandbox's init, and the proxy would refuse its
    connections (`outside_root`). That process forks the command, which waits on a pipe, names
    it here, and lets it go once registered. The claim is checked: the pid must be a live child
    of the connection's peer (pinned by its pidfd), itself not a sandboxed process. The peer
    then becomes a trusted root of the resolver, as init is: parent and subreaper of its
    command, never scanned nor an ancestor (it runs stockade's interpreter). It stays one until
    that `stockade exec` process exits (its pidfd is watched on the loop), not merely its
    command: what the command left behind stays its child, and below the root, until `stockade
    exec` ends it.

    A sandboxed process shares our uid and namespaces in this mode, so `refuse_sandboxed` is
    the control socket's `vet_peer` there: a peer below init or a registered root is refused
    for every op, this one included; so is one that carries no_new_privs while we do not (every
    sandboxed process does, and keeps it when it is orphaned out of every tree, e.g. after a
    `stockade exec` was SIGKILLed).
    """

    def __init__(self, resolver: IdentityResolver) -> None:
        self.resolver = resolver
        self._watched: dict[int, int] = {}  # root pidfd (the `stockade exec` process) -> token
        self._own_nnp = _no_new_privs("self")

    def refuse_sandboxed(self, peer: Peer) -> str | None:
        if self.resolver.below_root(peer.pid):
            return "it runs in the sandbox (below its init or a `stockade exec` command)"
        if not self._own_nnp and _no_new_privs(str(peer.pid)) is not False:
            return "it runs with no_new_privs, as every process of the sandbox does (or its status is unreadable)"
        return None

    def register(self, peer: Peer, pid: int) -> dict[str, Any]:
        import asyncio

        from ..control import ControlError

        if len(self._watched) >= MAX_EXEC_ROOTS:
            raise ControlError("too_many", f"{MAX_EXEC_ROOTS} `stockade exec` commands already run here")
        command_fd, root_fd = _verify_child(peer, pid)
        os.close(command_fd)  # proven; from now on the `stockade exec` process is what counts
        token = self.resolver.add_root(peer.pid, root_fd)  # the resolver owns root_fd
        watch = os.dup(root_fd)
        self._watched[watch] = token
        asyncio.get_running_loop().add_reader(watch, self._ended, watch)
        return {"pid": pid, "root_pid": peer.pid}

    def _ended(self, watch: int) -> None:
        import asyncio

        asyncio.get_running_loop().remove_reader(watch)
        token = self._watched.pop(watch, None)
        os.close(watch)
        if token is not None:
            self.resolver.drop_root(token)


def _no_new_privs(pid: str) -> bool | None:
    """The NoNewPrivs flag of /proc/<pid>/status; None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f.read(1 << 16).splitlines():
                if line.startswith(b"NoNewPrivs:"):
                    return line.split()[1] == b"1"
    except (OSError, IndexError):
        return None
    return None


def _verify_child(peer: Peer, pid: int) -> tuple[int, int]:
    """(pidfd of `pid`, pidfd of the peer), once `pid` is proven a live child of the peer.

    Each pid is pinned before it is read about, and proven alive after: a process that exited
    and whose pid was reused in between is never mistaken for the one that was asked about."""
    from ..control import ControlError, peer_alive
    from ..network.identity import pidfd_alive as _alive
    from ..network.procfs import parse_ppid

    def refuse(why: str) -> ControlError:
        return ControlError("refused", f"exec_register of pid {pid}: {why}")

    if pid <= 0 or pid == peer.pid:
        raise refuse("not a child of the caller")
    try:
        command_fd = os.pidfd_open(pid)
    except OSError as exc:  # ESRCH, or EINVAL for a thread id
        raise refuse(f"no such process ({exc.strerror})") from None
    try:
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                ppid = parse_ppid(f.read(1 << 16))
        except (OSError, ValueError):
            raise refuse("its status cannot be read") from None
        if not _alive(command_fd):
            raise refuse("it exited")  # the status read may have been another process's
        if ppid != peer.pid:
            raise refuse(f"not a child of the caller (pid {peer.pid}); its parent is {ppid}")
        if peer.pidfd is not None:
            root_fd = os.dup(peer.pidfd)  # ours to keep: the server closes its own with the connection
        else:
            root_fd = os.pidfd_open(peer.pid)  # no SO_PEERPIDFD: the child still proves it is the peer
        # The child's parent is still the peer (neither exited): the root pidfd is the right process.
        if not (peer_alive(peer) and _alive(root_fd) and _alive(command_fd)):
            os.close(root_fd)
            raise refuse("it or the caller exited")
        return command_fd, root_fd
    except BaseException:
        os.close(command_fd)
        raise

