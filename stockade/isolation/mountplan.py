"""The mount plan: which host paths the sandbox sees, and where (pure; executed by mounts.py).

The view starts from an empty tmpfs root; only the policy's paths (and the workdir) are bound
in from the host, at the same location, read-only or read-write. Symlinked components (Debian's
/lib -> usr/lib) are replicated and their real targets bound. /proc is the sandbox's own; /dev is
a minimal private one; /tmp and /run are private tmpfs because the host's hold other programs'
sockets (tmux, ssh-agent, X11, dbus, docker): policy paths below them are bound on top.

Steps are ordered parents before children, so a read-write child of a read-only parent works.
"""

from __future__ import annotations

from .paths import Inspect, PathGrant, depth, is_within, path_error_reason, planted_links, resolve
from .record import Record

# Paths the sandbox gets fresh instead of from the host.
PRIVATE_ROOTS = {"/proc": "proc", "/dev": "dev", "/tmp": "tmp", "/run": "run"}
# What the minimal /dev holds (everything else under /dev is bound from the host on request).
DEV_ENTRIES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_PRIVATE = frozenset(
    [f"/dev/{name}" for name in DEV_ENTRIES]
    + ["/dev/pts", "/dev/ptmx", "/dev/shm", "/dev/fd", "/dev/stdin", "/dev/stdout", "/dev/stderr"]
)
# Bound paths not walked for Unix sockets: system trees that do not hold user sockets (/opt holds
# static packages, FHS; the default policy grants it, and walking it cost ~20 ms of every start
# here). A socket a host process listens on in any of them is hidden all the same: the kernel's
# list of listening sockets names it (prepare.socket_candidates).
SYSTEM_ROOTS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/boot", "/opt",
                "/proc", "/sys", "/dev")


class Private(Record):
    """A fresh filesystem at `path`: proc, the minimal dev, or a private tmpfs (tmp, run)."""

    path: str
    what: str


class Bind(Record):
    """Bind the host's `path` (a real path, no symlinks) at the same place in the view."""

    path: str
    writable: bool
    kind: str  # dir | file | other
    grants: tuple[str, ...]  # the policy paths that asked for it


class Symlink(Record):
    path: str
    target: str


Step = Private | Bind | Symlink


class MountPlan(Record):
    steps: tuple[Step, ...]
    skipped: tuple[tuple[str, str], ...]  # (policy path, reason): missing or unreadable
    notes: tuple[str, ...]  # what the user should know (a private /tmp, ...)
    scan_roots: tuple[str, ...]  # bound trees to scan for Unix sockets

    @property
    def binds(self) -> tuple[Bind, ...]:
        return tuple(s for s in self.steps if isinstance(s, Bind))


def _absorbed(real: str) -> str | None:
    """Why a real path needs no bind (the view provides its own), or None."""
    if is_within(real, "/proc"):
        return "proc"
    if real in ("/tmp", "/run"):
        return "private"
    if real == "/dev" or any(is_within(real, p) for p in DEV_PRIVATE):
        return "dev"
    return None


def plan_mounts(grants: list[PathGrant] | tuple[PathGrant, ...], inspect: Inspect) -> MountPlan:
    binds: dict[str, Bind] = {}
    links: dict[str, str] = {}
    skipped: list[tuple[str, str]] = []
    notes: list[str] = []
    planted = planted_links(grants, inspect, private=("/tmp", "/run"))
    for grant in grants:
        if grant.path in planted:
            skipped.append((grant.path, planted[grant.path]))
            continue
        res = resolve(grant.path, inspect)
        if res.kind == "missing":
            skipped.append((grant.path, path_error_reason(res.error)))
            continue
        for link, target in res.links:
            links.setdefault(link, target)
        why = _absorbed(res.real)
        if why == "private":
            notes.append(f"{res.real} is private to the sandbox: the host's {res.real} holds other "
                         "programs' sockets (tmux, ssh-agent, X11, dbus, docker)")
            continue
        if why == "dev" and res.real == "/dev":
            notes.append("/dev is a minimal private /dev, not the host's")
        if why:
            continue
        old = binds.get(res.real)
        if old is None:
            binds[res.real] = Bind(res.real, grant.writable, res.kind, (grant.path,))
        else:  # listed twice (or through a symlink): rights add up, as in Landlock
            binds[res.real] = Bind(res.real, old.writable or grant.writable, old.kind,
                                   old.grants + (grant.path,))
    steps: list[tuple[int, int, Step]] = []
    steps += [(depth(p), 0, Private(p, w)) for p, w in PRIVATE_ROOTS.items()]
    steps += [(depth(b.path), 1, b) for b in binds.values() if not _covered(b, binds)]
    steps += [(depth(p), 2, Symlink(p, t)) for p, t in links.items()]
    steps.sort(key=lambda item: (item[0], item[1]))  # stable: policy order within a depth
    return MountPlan(
        steps=tuple(step for _, _, step in steps),
        skipped=tuple(skipped),
        notes=tuple(dict.fromkeys(notes)),
        scan_roots=scan_roots_of(list(binds)),
    )


def _covered(bind: Bind, binds: dict[str, Bind]) -> bool:
    """A directory whose nearest bound ancestor has the same access needs no bind of its own:
    that ancestor's recursive bind shows the same host tree (e.g. /usr/bin, reached through the
    /bin link, under /usr). Files and other nodes keep theirs: a listed socket is a grant."""
    if bind.kind != "dir":
        return False
    ancestors = [b for p, b in binds.items() if p != bind.path and is_within(bind.path, p)]
    nearest = max(ancestors, key=lambda b: depth(b.path), default=None)
    return nearest is not None and nearest.writable == bind.writable


def scan_roots_of(paths: list[str]) -> tuple[str, ...]:
    """The trees of `paths` the socket walk covers: not system or nested ones, sorted."""
    candidates = sorted(p for p in paths if not any(is_within(p, s) for s in SYSTEM_ROOTS))
    roots: list[str] = []
    for path in candidates:
        if not any(is_within(path, r) for r in roots):
            roots.append(path)
    return tuple(roots)
