"""Everything the sandbox's processes need, decided by the supervisor.

Plain data. `Early` is what the launcher knows when it is forked, before the policy is loaded;
the SandboxSpec is sent to it (record.dumps) once the supervisor has decided it. Init and the
command's pre-exec code are forks of the launcher, not new interpreters: they read the spec
from their copy of its memory.

The records the launcher, init and the command's pre-exec code use (here, in paths, mountplan,
seccomp, privileges, landlock, sockscan, mounts, channel, agent) are Records (record.py) or plain
slotted classes, not msgspec Structs: the launcher is forked before the supervisor's imports and
never imports msgspec (~15 ms of its critical path on a small machine; tests/test_records.py
checks it), and defining them compiles nothing (typing.NamedTuple would: ~5 ms per process).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .record import Record

if TYPE_CHECKING:  # kept light: the supervisor imports this before it forks
    from .mountplan import MountPlan
    from .paths import PathGrant
    from .privileges import RunAs
    from .seccomp import Block

NAMESPACES = "namespaces"
LANDLOCK_ONLY = "landlock"
NAMESPACES_ROOT = ("mnt", "pid", "net", "ipc", "uts")
NAMESPACES_ROOTLESS = ("user",) + NAMESPACES_ROOT
PROXY_HOST = "127.0.0.1"
PROXY_PORT = 3128


class Early(Record):
    """What the supervisor's child knows when it is forked, before the policy is loaded."""

    isolation: str
    namespaces: tuple[str, ...]
    uid: int
    gid: int
    supervisor_pid: int
    proxy_port: int
    workdir: str | None = None  # the real path the supervisor will use, as far as it can be told now

    @classmethod
    def for_run(cls, isolation: str, supervisor_pid: int, host_port: int | None = None,
                workdir: str | None = None) -> Early:
        """The supervisor's: `host_port` is its host-side listener's (landlock-only mode);
        `workdir` is --workdir (None: the current directory)."""
        rootless = os.geteuid() != 0
        try:
            real = os.path.realpath(workdir or os.getcwd())
        except OSError:
            real = None
        return cls(isolation=isolation,
                   namespaces=() if isolation == LANDLOCK_ONLY else (NAMESPACES_ROOTLESS if rootless else NAMESPACES_ROOT),
                   uid=os.getuid(), gid=os.getgid(), supervisor_pid=supervisor_pid,
                   proxy_port=host_port if host_port is not None else PROXY_PORT, workdir=real)


class SandboxSpec(Record):
    name: str
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str  # where the command starts (the workdir when the view shows it, else /)
    isolation: str  # NAMESPACES | LANDLOCK_ONLY
    namespaces: tuple[str, ...]  # () in the landlock-only mode
    uid: int  # the invoking user
    gid: int
    run_as: RunAs | None  # root mode: who the command becomes
    plan: MountPlan | None  # the mount view (namespace mode)
    landlock_grants: tuple[PathGrant, ...]
    hard: bool  # landlock.compatibility == hard_requirement
    seccomp: tuple[Block, ...]
    state_dir: str  # real path; hidden from the view
    socket_candidates: tuple[str, ...]  # known Unix socket paths to hide
    terminal_fd: int | None  # a terminal whose foreground group we are, if any
    supervisor_pid: int
    proxy_port: int  # inside the sandbox (landlock mode: the host loopback port)
    ca_dir: str  # where the CA files live as the command sees them
    hidden_files: tuple[str, ...] = ()  # real paths covered in the view (inference route key files)

    @property
    def rootless(self) -> bool:
        return "user" in self.namespaces or (self.isolation == LANDLOCK_ONLY and self.run_as is None)
