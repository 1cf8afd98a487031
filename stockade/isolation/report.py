"""The one-line startup report: what is enforced, and loudly, what is not (pure text)."""

from __future__ import annotations

from typing import Any

from ..records import Struct
from .spec import LANDLOCK_ONLY, SandboxSpec

_SHOWN = 3  # how many paths of a list the line spells out


class Report(Struct, frozen=True):
    name: str
    isolation: str
    rootless: bool
    run_as: str  # "uid 1000" (rootless) or the user's name (root mode)
    namespaces: tuple[str, ...]
    landlock_abi: int
    landlock_unavailable: str
    landlock_rules: int
    landlock_implicit: tuple[str, ...]
    landlock_skipped: tuple[tuple[str, str], ...]
    landlock_scoped: bool
    landlock_tcp_port: int | None
    seccomp_rules: int
    proxy: str
    policy_source: str
    hidden_sockets: tuple[str, ...] = ()
    scan_exhausted: str = ""
    state_dir_hidden: bool = False
    notes: tuple[str, ...] = ()
    not_enforced: tuple[str, ...] = ()


def _paths(items: list[str] | tuple[str, ...]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def implicit_text(paths: tuple[str, ...]) -> str:
    """`/proc, /dev/{null,zero}, /run/stockade`: the implicit entries, grouped by directory."""
    groups: dict[str, list[str]] = {}
    for path in paths:
        head, _, tail = path.rpartition("/")
        groups.setdefault(head if head in ("/dev",) else path, []).append(tail if head == "/dev" else "")
    parts = []
    for head, tails in groups.items():
        names = [t for t in tails if t]
        parts.append(f"{head}/{{{','.join(names)}}}" if len(names) > 1 else (f"{head}/{names[0]}" if names else head))
    return ", ".join(parts)


def _landlock(r: Report) -> str:
    if r.landlock_abi == 0:
        return f"landlock NOT ENFORCED ({r.landlock_unavailable})"
    text = f"landlock ABI {r.landlock_abi}: {r.landlock_rules} rules"
    if r.landlock_implicit:
        text += f" (implicit: {implicit_text(r.landlock_implicit)})"
    if r.landlock_scoped:
        text += ", signals and abstract sockets scoped"
    if r.landlock_tcp_port is not None:
        text += f", TCP connect only to port {r.landlock_tcp_port}"
    if r.landlock_skipped:
        text += "; skipped " + _paths([f"{p} ({why})" for p, why in r.landlock_skipped])
    return text


def weaker_mode_text(abi: int, port: int | None) -> str:
    """What `--isolation landlock` gives up, said plainly."""
    lost = ["no pid, mount, network or IPC isolation: host processes are visible",
            "named Unix sockets on the host (tmux, ssh-agent, docker) stay reachable" if abi < 9
            else "named Unix sockets limited to read_write paths",
            "/tmp and /run are the host's",
            "background processes of the command can outlive a stockade killed by SIGKILL",
            f"TCP to port {port} on any address is allowed (Landlock rules match ports, not hosts)"]
    if abi < 10:
        lost.append("UDP is not restricted (Landlock ABI < 10)")
    return "WEAKER MODE (--isolation landlock): " + "; ".join(lost)


def format_report(r: Report) -> str:
    if r.isolation == LANDLOCK_ONLY:
        mode = f"{'rootless' if r.rootless else 'root'} as {r.run_as}, landlock-only"
    else:
        mode = f"{'rootless' if r.rootless else 'root'} as {r.run_as}, namespaces {','.join(r.namespaces)}"
    parts = [f"stockade: sandbox {r.name}", mode, _landlock(r), f"seccomp {r.seccomp_rules} rules",
             f"proxy {r.proxy}", f"policy {r.policy_source}"]
    if r.hidden_sockets:
        parts.append(f"hid {len(r.hidden_sockets)} unix sockets ({_paths(r.hidden_sockets)})")
    if r.scan_exhausted:
        parts.append(f"socket scan budget ran out in {r.scan_exhausted}")
    if r.state_dir_hidden:
        parts.append("state dir hidden")
    parts += list(r.notes)
    if r.not_enforced:
        parts.append("NOT ENFORCED: " + "; ".join(r.not_enforced))
    return " | ".join(parts)


def build_report(spec: SandboxSpec, notes: tuple[str, ...], not_enforced: tuple[str, ...],
                 facts: dict[str, Any], source: str, proxy: str) -> Report:
    """The report from the spec, the supervisor's notes and what init found (`facts`)."""
    not_enforced = list(not_enforced)
    abi = int(facts.get("landlock_abi", 0))
    if abi == 0:
        not_enforced.append(f"Landlock filesystem rules ({facts.get('landlock_unavailable')})"
                            + ("; the mount view still limits what is visible" if spec.plan else ""))
    notes = list(notes)
    if spec.isolation == LANDLOCK_ONLY:
        notes.insert(0, weaker_mode_text(abi, facts.get("landlock_tcp_port")))
    if facts.get("hidden_files"):
        notes.append(f"hid {len(facts['hidden_files'])} inference key file(s)")
    if facts.get("detached"):
        notes.append("hidden (could not be made read-only): " + ", ".join(facts["detached"]))
    skipped = dict((p, why) for p, why in (spec.plan.skipped if spec.plan else ()))
    for path, why in facts.get("landlock_skipped", []):
        skipped.setdefault(path, why)  # the plan's reason (why it is not in the view) comes first
    implicit = tuple(g.path for g in spec.landlock_grants if g.origin == "implicit")
    return Report(
        name=spec.name, isolation=spec.isolation, rootless=spec.run_as is None,
        run_as=spec.run_as.user if spec.run_as else f"uid {spec.uid}",
        namespaces=spec.namespaces, landlock_abi=abi,
        landlock_unavailable=str(facts.get("landlock_unavailable") or ""),
        landlock_rules=len(facts.get("landlock_rules", [])), landlock_implicit=implicit,
        landlock_skipped=tuple(skipped.items()), landlock_scoped=bool(facts.get("landlock_scoped")),
        landlock_tcp_port=facts.get("landlock_tcp_port"), seccomp_rules=int(facts.get("seccomp_rules", 0)),
        proxy=proxy, policy_source=source, hidden_sockets=tuple(facts.get("hidden_sockets", [])),
        scan_exhausted=str(facts.get("scan_exhausted") or ""),
        state_dir_hidden=bool(facts.get("state_dir_hidden")), notes=tuple(notes),
        not_enforced=tuple(not_enforced),
    )
