"""`stockade exec`: run another command inside a running sandbox, under the same layers.

The supervisor describes its sandbox in the control socket's `exec_info` reply (the `exec` key
is `exec_info_payload`). With it, the caller:

1. (join.py from here) pins the sandbox's launcher with a pidfd and checks that it is the
   supervisor's child. Init (PID 1) is non-dumpable, so its /proc entries are closed to us; the
   launcher holds the same user, mount, ipc, uts and net namespaces, and its
   `ns/pid_for_children` is the sandbox's pid namespace. Its namespace links are opened while
   the pidfd proves the pid was not reused, and each must differ from ours (a launcher that
   has not unshared yet is refused);
2. compiles the seccomp filter and binds libseccomp and landlockpy (nothing may be imported once
   the sandbox's mount view is ours: an import guard enforces it);
3. joins user (rootless; it grants the rights to join the rest), mnt, ipc, uts, net, then pid,
   checks that the view is the sealed one, builds the Landlock ruleset from the same grants as
   init (paths opened inside the view, as init does);
4. forks: the child is in the sandbox's pid namespace and runs the agent's exact sequence
   (agent.run_command): privilege drop, capabilities, no_new_privs, Landlock, seccomp, execve
   with the environment the sandbox was given (never the caller's);
5. waits like `stockade run` does: the command has its own process group and the terminal's
   foreground, signals are forwarded, Ctrl-Z stops both; its status is our exit code.

When the sandbox ends, the kernel kills everything in its pid namespace, the exec'd command
included. In the landlock-only mode there is nothing to join: the command gets the same
Landlock (with the proxy-port TCP rule), seccomp and environment, dies with us
(PR_SET_PDEATHSIG), and we end it, and whatever it left behind, when the sandbox's init exits.
The proxy attributes host-side connections only to processes below the sandbox's init or a
registered exec root, so before the forked child may go on (it waits on a pipe), we register
it over the control socket (`exec_register`): the supervisor checks that it is our child and
makes us a trusted root as init is (services/exec_info.py: ExecRoots), until it exits. Its
connections, and its descendants', are then decided by the policy as the sandbox's are.

The command gets a Landlock domain of its own: with ABI 6 scoping it cannot signal the sandbox's
first command, nor reach its abstract Unix sockets (and the reverse).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import EXIT_STOCKADE_FAILURE, StockadeError
from ..records import Struct
from .paths import PathGrant
from .privileges import RunAs
from .seccomp import ArgTest, Block
from .spec import LANDLOCK_ONLY, NAMESPACES, NAMESPACES_ROOTLESS, SandboxSpec

EXEC_FORMAT = 1


# -- the exec_info payload (sans-IO) ----------------------------------------------------------

def exec_info_payload(spec: SandboxSpec, processes: Any = None) -> dict[str, Any]:
    """The `exec` key of the control socket's exec_info reply: what rebuilds the command's layers.

    `processes` (supervisor.SandboxProcesses) adds the host pids of the launcher and init. The
    environment is the one the sandbox was given (proxy, CA, placeholders; no real secret)."""
    run_as = spec.run_as
    payload: dict[str, Any] = {
        "format": EXEC_FORMAT,
        "sandbox": spec.name,
        "isolation": spec.isolation,
        "namespaces": list(spec.namespaces),
        "supervisor_pid": spec.supervisor_pid,
        "uid": spec.uid,
        "gid": spec.gid,
        "run_as": None if run_as is None else {"user": run_as.user, "uid": run_as.uid, "gid": run_as.gid,
                                               "groups": list(run_as.groups), "home": run_as.home},
        "cwd": spec.cwd,
        "env": dict(spec.env),
        "landlock": {"grants": [[g.path, g.writable, g.origin] for g in spec.landlock_grants],
                     "hard": spec.hard,
                     "tcp_port": spec.proxy_port if spec.isolation == LANDLOCK_ONLY else None},
        "seccomp": [{"syscall": b.syscall, "errno": b.errno,
                     "tests": [[t.index, t.op, t.value, t.mask] for t in b.tests]} for b in spec.seccomp],
        "state_dir": spec.state_dir,
    }
    if processes is not None:
        payload["launcher_pid"] = processes.launcher_pid
        payload["init_pid"] = processes.init_pid
    return payload


class Target(Struct, frozen=True):
    """A running sandbox as `stockade exec` joins it."""

    name: str
    isolation: str
    namespaces: tuple[str, ...]
    supervisor_pid: int
    launcher_pid: int | None  # None in the landlock-only mode
    init_pid: int
    uid: int
    run_as: RunAs | None
    cwd: str
    env: dict[str, str]
    grants: tuple[PathGrant, ...]
    hard: bool
    tcp_port: int | None
    seccomp: tuple[Block, ...]
    state_dir: str

    @property
    def rootless(self) -> bool:
        return self.run_as is None


class _Malformed(Exception):
    pass


def parse_exec_info(reply: Mapping[str, Any]) -> Target:
    """The Target described by an exec_info reply; StockadeError when it is unusable."""
    payload = reply.get("exec")
    if not isinstance(payload, Mapping):
        raise StockadeError("the sandbox's exec_info reply has no `exec` description",
                            hint="was it started by another version of stockade?")
    if payload.get("format") != EXEC_FORMAT:
        raise StockadeError(f"the sandbox describes itself in exec format {payload.get('format')!r}, "
                            f"this stockade reads {EXEC_FORMAT}",
                            hint="run `stockade exec` from the same installation as `stockade run`")
    try:
        target = _parse(payload, reply)
    except (_Malformed, KeyError, TypeError, ValueError) as exc:
        raise StockadeError(f"the sandbox's exec_info reply is malformed ({exc})") from None
    if "agent_pid" in reply and reply["agent_pid"] is None:
        raise StockadeError(f"sandbox {target.name!r} is still starting: its command is not running yet",
                            hint="try again in a moment")
    return target


def _field(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _Malformed(f"{key!r} is {type(value).__name__}")
    return value


def _pid(payload: Mapping[str, Any], reply: Mapping[str, Any], key: str) -> int | None:
    for source in (payload, reply):
        value = source.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _parse(payload: Mapping[str, Any], reply: Mapping[str, Any]) -> Target:
    isolation = _field(payload, "isolation", str)
    if isolation not in (NAMESPACES, LANDLOCK_ONLY):
        raise _Malformed(f"unknown isolation {isolation!r}")
    namespaces = tuple(_field(payload, "namespaces", list))
    if any(n not in NAMESPACES_ROOTLESS for n in namespaces) or (isolation == NAMESPACES) != bool(namespaces):
        raise _Malformed(f"namespaces {list(namespaces)}")
    launcher = _pid(payload, reply, "launcher_pid")
    init = _pid(payload, reply, "init_pid")
    if init is None or (isolation == NAMESPACES and launcher is None):
        raise _Malformed("no launcher/init pid")
    run_as = payload.get("run_as")
    if run_as is not None:
        run_as = RunAs(_field(run_as, "user", str), _field(run_as, "uid", int), _field(run_as, "gid", int),
                       tuple(int(g) for g in _field(run_as, "groups", list)), _field(run_as, "home", str))
        if run_as.uid == 0 or run_as.gid == 0:
            raise _Malformed("run_as is root")
    landlock = _field(payload, "landlock", Mapping)
    grants = tuple(PathGrant(str(path), bool(writable), str(origin))
                   for path, writable, origin in _field(landlock, "grants", list))
    tcp_port = landlock.get("tcp_port")
    if isolation == LANDLOCK_ONLY and not isinstance(tcp_port, int):
        raise _Malformed("no proxy port for the landlock-only mode")
    seccomp = tuple(
        Block(_field(b, "syscall", str), "", tuple(ArgTest(int(i), str(op), int(v), int(m))
                                                   for i, op, v, m in _field(b, "tests", list)),
              _field(b, "errno", int))
        for b in _field(payload, "seccomp", list))
    if not seccomp:
        raise _Malformed("an empty seccomp table")
    env = _field(payload, "env", Mapping)
    return Target(
        name=_field(payload, "sandbox", str), isolation=isolation, namespaces=namespaces,
        supervisor_pid=_field(payload, "supervisor_pid", int), launcher_pid=launcher, init_pid=init,
        uid=_field(payload, "uid", int), run_as=run_as, cwd=_field(payload, "cwd", str),
        env={str(k): str(v) for k, v in env.items()}, grants=grants,
        hard=bool(_field(landlock, "hard", bool)), tcp_port=tcp_port if isolation == LANDLOCK_ONLY else None,
        seccomp=seccomp, state_dir=_field(payload, "state_dir", str),
    )


class ExecFailed(StockadeError):
    """The command could not be started in the sandbox; exit_code is 125, 126 or 127."""

    def __init__(self, message: str, exit_code: int = EXIT_STOCKADE_FAILURE, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code


# -- finding the sandbox (I/O) ----------------------------------------------------------------

def describe(name: str) -> Target:
    """Ask the running sandbox NAME how to join it (its control socket's exec_info)."""
    from .. import control, state

    state.validate_name(name)
    listing = "`stockade list` shows the running sandboxes"
    if not state.is_running(name):
        raise ExecFailed(f"no running sandbox named {name!r}", hint=listing)
    try:
        reply = control.call(state.control_socket_path(name), "exec_info", timeout=15)
    except control.ControlError as exc:
        if exc.error == "unavailable":
            raise ExecFailed(f"sandbox {name!r} does not answer: {exc.detail}", hint=listing) from None
        if exc.error in ("unsupported", "unknown_op"):
            raise ExecFailed(f"sandbox {name!r} does not support exec",
                             hint="it was started by another version of stockade") from None
        raise ExecFailed(f"sandbox {name!r} refused exec_info ({exc.error}): {exc.detail}") from None
    target = parse_exec_info(reply)
    if target.name != name:
        raise ExecFailed(f"the control socket of {name!r} answered for sandbox {target.name!r}")
    return target


def exec_in_sandbox(name: str, argv: tuple[str, ...], workdir: str | None = None) -> int:
    """Run argv in the running sandbox NAME; its exit code (128+N on signal N), or raise
    ExecFailed (exit_code 125, or 126/127 when the command cannot be executed / is not found)."""
    from .join import run

    return run(describe(name), argv, workdir)
