"""From a policy and the command line to a SandboxSpec (runs in the supervisor, before any fork).

Everything that can be decided without entering the sandbox is decided here, so a bad policy,
a missing run-as user or a missing path under hard_requirement fails with exit 125 before
anything starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..errors import StockadeError
from ..policy.model import Compatibility, Policy
from ..records import Struct
from .environment import CA_DIR, EnvironmentInputs, build_environment
from .landlock import IMPLICIT_LANDLOCK_ONLY, IMPLICIT_NAMESPACE
from .mountplan import MountPlan, plan_mounts
from .paths import PathGrant, host_inspect, is_within, normalize, planted_links
from .privileges import RunAs, resolve_run_as
from .seccomp import effective_denylist
from .spec import NAMESPACES, NAMESPACES_ROOT, NAMESPACES_ROOTLESS, PROXY_HOST, PROXY_PORT, SandboxSpec
from .terminal import foreground_terminal

# Sockets worth hiding wherever they are (besides everything /proc/net/unix lists).
WELL_KNOWN_SOCKETS = (
    "/var/run/docker.sock", "/run/docker.sock", "/run/podman/podman.sock",
    "/run/containerd/containerd.sock", "/run/dbus/system_bus_socket", "/var/run/dbus/system_bus_socket",
    "/run/user/{uid}/bus", "/run/user/{uid}/podman/podman.sock", "/run/user/{uid}/docker.sock",
)


class Request(Struct, frozen=True):
    """What `stockade run` was asked to do."""

    argv: tuple[str, ...]
    policy: Policy
    name: str
    workdir: str | None = None
    isolation: str = NAMESPACES
    proxy_port: int = PROXY_PORT  # landlock mode: the port of the host-side listener
    tls_dir: str = CA_DIR  # landlock mode: a directory in the state dir
    env_overrides: tuple[tuple[str, str], ...] = ()  # secret placeholders, route key placeholders
    hidden_files: tuple[str, ...] = ()  # files the sandbox must not read (inference route keys)


class Prepared(Struct, frozen=True):
    spec: SandboxSpec
    notes: tuple[str, ...]
    not_enforced: tuple[str, ...]


def grants_from_policy(policy: Policy, workdir: str) -> list[PathGrant]:
    fs = policy.filesystem
    if fs is None:
        return []
    grants = [PathGrant(p, False) for p in fs.read_only] + [PathGrant(p, True) for p in fs.read_write]
    if fs.include_workdir:
        grants.append(PathGrant(workdir, True, "workdir"))
    return grants


def prepare(req: Request, *, state_dir: str, env: Mapping[str, str] | None = None) -> Prepared:
    env = os.environ if env is None else env
    policy = req.policy
    rootless = os.geteuid() != 0
    run_as = None if rootless else _run_as(policy)
    workdir = normalize(os.path.realpath(req.workdir or os.getcwd()))
    if req.workdir and not os.path.isdir(workdir):
        raise StockadeError(f"--workdir {req.workdir}: not a directory")
    if workdir == "/" and policy.filesystem and policy.filesystem.include_workdir:
        raise StockadeError("refusing to make / writable: the workdir is / and the policy has include_workdir",
                            hint="run stockade from a project directory, or pass --workdir DIR")
    grants = grants_from_policy(policy, workdir)
    hard = policy.landlock is not None and policy.landlock.compatibility is Compatibility.HARD_REQUIREMENT
    notes: list[str] = []
    not_enforced: list[str] = []
    plan: MountPlan | None = None
    cwd = workdir
    if req.isolation == NAMESPACES:
        plan = plan_mounts(grants, host_inspect())
        notes += plan.notes
        if hard and plan.skipped:
            path, reason = plan.skipped[0]
            raise StockadeError(f"Landlock path unavailable in hard_requirement mode: {path} ({reason})",
                                hint="fix the path in the policy, or use landlock.compatibility: best_effort")
        if workdir in ("/tmp", "/run"):
            notes.append(f"the workdir {workdir} is the sandbox's private {workdir}, not the host's")
        elif not any(is_within(workdir, b.path) for b in plan.binds):
            cwd = "/"
            notes.append(f"the workdir {workdir} is not in the policy: the command starts in /")
        implicit = IMPLICIT_NAMESPACE
    else:
        implicit = IMPLICIT_LANDLOCK_ONLY + (PathGrant(req.tls_dir, False, "implicit"),)
        # Landlock opens the host's paths, following links: one planted in a writable grant
        # would grant its target (the mount plan skips these the same way).
        planted = planted_links(grants, host_inspect())
        grants = [g for g in grants if g.path not in planted]
        not_enforced += [f"{path} not granted: {why}" for path, why in planted.items()]
        _refuse_readable_key_files(grants + list(implicit), req.hidden_files)
        not_enforced += _landlock_mode_gaps(grants, state_dir)
    if rootless and policy.process and (policy.process.run_as_user or policy.process.run_as_group):
        # Not an error: without root there is no other user to become (said in the report).
        notes.append("process.run_as_user/run_as_group NOT APPLIED (rootless: the command keeps your uid)")
    allow = policy.process.seccomp_allow if policy.process else frozenset()
    try:
        blocks = effective_denylist(frozenset(allow))
    except ValueError as exc:
        raise StockadeError(str(exc)) from None
    if allow:
        notes.append(f"seccomp allows {', '.join(sorted(allow))} (policy)")
    proxy_url = f"http://{PROXY_HOST}:{req.proxy_port}"
    identity = (("USER", run_as.user), ("LOGNAME", run_as.user), ("HOME", run_as.home)) if run_as else ()
    spec = SandboxSpec(
        name=req.name,
        argv=req.argv,
        env=build_environment(env, EnvironmentInputs(req.name, proxy_url, req.tls_dir, identity,
                                                     req.env_overrides)),
        cwd=cwd,
        isolation=req.isolation,
        namespaces=(NAMESPACES_ROOTLESS if rootless else NAMESPACES_ROOT) if req.isolation == NAMESPACES else (),
        uid=os.getuid(),
        gid=os.getgid(),
        run_as=run_as,
        plan=plan,
        landlock_grants=tuple(grants) + implicit,
        hard=hard,
        seccomp=blocks,
        state_dir=normalize(os.path.realpath(state_dir)),
        socket_candidates=socket_candidates(env, os.getuid()),
        terminal_fd=foreground_terminal(),
        supervisor_pid=os.getpid(),
        proxy_port=req.proxy_port,
        ca_dir=req.tls_dir,
        hidden_files=tuple(normalize(os.path.realpath(p)) for p in req.hidden_files),
    )
    return Prepared(spec, tuple(notes), tuple(not_enforced))


def _run_as(policy: Policy) -> RunAs:
    process = policy.process
    try:
        return resolve_run_as(process.run_as_user if process else None, process.run_as_group if process else None)
    except ValueError as exc:
        raise StockadeError(str(exc)) from None


def _landlock_mode_gaps(grants: list[PathGrant], state_dir: str) -> list[str]:
    gaps = []
    real_state = os.path.realpath(state_dir)
    for grant in grants:
        if is_within(real_state, os.path.realpath(grant.path)):
            gaps.append(f"the state directory is reachable through {grant.path} (no mount namespace to hide it)")
            break
    # Landlock rights add up along a path and there is no read-only bind in this mode, so a
    # read_only path below a read_write one is writable: say so (an error under hard_requirement)
    # instead of letting the policy look enforced.
    writable = [(g.path, os.path.realpath(g.path)) for g in grants if g.writable]
    for grant in grants:
        if grant.writable:
            continue
        real = os.path.realpath(grant.path)
        parent = next((path for path, rw in writable if is_within(real, rw) and real != rw), None)
        if parent is not None:
            gaps.append(f"read_only {grant.path} is writable: it lies under read_write {parent} "
                        "(Landlock rights add up; no mount namespace to make it read-only)")
    return gaps


def _refuse_readable_key_files(grants: list[PathGrant], hidden: tuple[str, ...]) -> None:
    """Landlock-only mode has no mount namespace to cover an inference key file with: one under
    a granted path would be readable by the command, which defeats the point of the router (the
    key never enters the sandbox). Refused in every compatibility mode, not reported."""
    for path in hidden:
        real = os.path.realpath(path)
        reachable = next((g.path for g in grants if is_within(real, os.path.realpath(g.path))), None)
        if reachable is not None:
            raise StockadeError(
                f"the inference key file {path} would be readable inside the sandbox (through "
                f"{reachable}): --isolation landlock has no mount namespace to hide it",
                hint="move the key file outside the policy's filesystem paths, or give the route "
                     "its key with --api-key-env (api_key_env in a routes file)")


def socket_candidates(env: Mapping[str, str], uid: int) -> tuple[str, ...]:
    """Unix socket paths to hide: the environment's, the well-known ones, /proc/net/unix's."""
    found = [p.format(uid=uid) for p in WELL_KNOWN_SOCKETS]
    if env.get("SSH_AUTH_SOCK"):
        found.append(env["SSH_AUTH_SOCK"])
    for part in env.get("DBUS_SESSION_BUS_ADDRESS", "").split(";"):
        for kv in part.partition(":")[2].split(","):
            key, _, value = kv.partition("=")
            if key == "path" and value:
                found.append(value)
    if env.get("XDG_RUNTIME_DIR"):
        found += [f"{env['XDG_RUNTIME_DIR']}/{n}" for n in ("bus", "docker.sock", "podman/podman.sock")]
    found += listening_unix_sockets()
    return tuple(dict.fromkeys(p for p in found if p.startswith("/")))


def listening_unix_sockets(path: str = "/proc/net/unix") -> list[str]:
    """Named Unix sockets bound in this network namespace (the host's, seen by the supervisor)."""
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return []
    paths = []
    for line in lines:
        fields = line.split(None, 7)
        if len(fields) == 8 and fields[7].startswith(b"/"):
            paths.append(os.fsdecode(fields[7]))
    return paths
