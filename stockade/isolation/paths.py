"""Policy paths as the sandbox sees them: grants, symlink resolution, and failure reasons.

Pure functions over an `inspect` callback (lstat + readlink on the host), so the mount plan and
the Landlock plan can be computed and tested without touching the filesystem.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Callable

from .record import Record

# Reason strings of OpenShell's path-error classifier (reference/process.md §3.4).
_REASONS = {
    errno.ENOENT: "path does not exist",
    errno.EACCES: "permission denied",
    errno.ELOOP: "too many symlink levels",
    errno.ENAMETOOLONG: "path name too long",
    errno.ENOTDIR: "path component is not a directory",
}
MAX_SYMLINK_HOPS = 40


def path_error_reason(err: int) -> str:
    return _REASONS.get(err, "unexpected error")


class PathGrant(Record):
    """One path the sandbox may use: from the policy, the workdir, or stockade itself."""

    path: str
    writable: bool
    origin: str = "policy"  # "policy" | "workdir" | "implicit"


class Entry(Record):
    """What lstat says about one path: kind is dir, file, other, symlink, or missing."""

    kind: str
    target: str = ""  # the symlink's text when kind == "symlink"
    error: int = 0  # errno when the path could not be inspected (kind == "missing")


Inspect = Callable[[str], Entry]


class Resolved(Record):
    """A grant's path resolved on the host: the real path and the symlinks crossed to reach it."""

    real: str
    kind: str  # dir | file | other | missing
    links: tuple[tuple[str, str], ...]  # (symlink path, its text), in the order crossed
    error: int = 0


def host_inspect(root: str = "") -> Inspect:
    """An Inspect over the real filesystem, optionally below `root` (e.g. the old root)."""

    def inspect(path: str) -> Entry:
        full = root + path if root else path
        try:
            st = os.lstat(full)
        except OSError as exc:
            return Entry("missing", error=exc.errno or errno.EIO)
        if stat.S_ISLNK(st.st_mode):
            try:
                return Entry("symlink", target=os.readlink(full))
            except OSError as exc:
                return Entry("missing", error=exc.errno or errno.EIO)
        if stat.S_ISDIR(st.st_mode):
            return Entry("dir")
        if stat.S_ISREG(st.st_mode):
            return Entry("file")
        return Entry("other")

    return inspect


def normalize(path: str) -> str:
    """Lexical normalisation of an absolute path ('.' and '//' removed, no trailing slash)."""
    norm = posixpath.normpath(path)
    return "/" if norm in ("/", "//") else norm


def resolve(path: str, inspect: Inspect) -> Resolved:
    """Follow symlinks component by component, as the kernel would, recording each link."""
    pending = normalize(path)
    links: list[tuple[str, str]] = []
    hops = 0
    while True:
        current, kind = "/", "dir"
        parts = [p for p in pending.split("/") if p]
        for i, part in enumerate(parts):
            candidate = posixpath.join(current, part)
            entry = inspect(candidate)
            if entry.kind == "symlink":
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    return Resolved(pending, "missing", tuple(links), errno.ELOOP)
                links.append((candidate, entry.target))
                # `current` has no symlinks left, so lexical '..' in the target is exact.
                pending = normalize(posixpath.join(current, entry.target, *parts[i + 1:]))
                break
            if entry.kind == "missing":
                return Resolved(pending, "missing", tuple(links), entry.error or errno.ENOENT)
            if entry.kind != "dir" and i < len(parts) - 1:
                return Resolved(pending, "missing", tuple(links), errno.ENOTDIR)
            current, kind = candidate, entry.kind
        else:
            return Resolved(current, kind, tuple(links))


def is_within(path: str, root: str) -> bool:
    """True when `path` is `root` or below it (both normalised, absolute)."""
    return path == root or root == "/" or path.startswith(root.rstrip("/") + "/")


def depth(path: str) -> int:
    return 0 if path == "/" else path.count("/")


def planted_links(grants: list[PathGrant] | tuple[PathGrant, ...], inspect: Inspect,
                  private: tuple[str, ...] = ()) -> dict[str, str]:
    """Grants that reach their target through a symlink inside a writable grant and out of it:
    {policy path: why}. An earlier sandbox (or this one's agent, for the next run) may have
    planted that link to point a later policy path at `~/.ssh`; following it would mount or
    grant what the policy never named. Links inside `private` roots (the sandbox's own /tmp
    and /run) never persist on the host, so they are not suspect."""
    roots = []
    for grant in grants:
        if grant.writable:
            real = resolve(grant.path, inspect).real
            if not any(is_within(real, p) for p in private):
                roots.append(real)
    suspect: dict[str, str] = {}
    for grant in grants:
        res = resolve(grant.path, inspect)
        for link, target in res.links:
            root = next((r for r in roots if is_within(link, r) and link != r), None)
            if root is not None and not is_within(res.real, root):
                suspect[grant.path] = (f"reached through the symlink {link} -> {target}, which lies in "
                                       f"the writable {root} and points outside it (a sandbox could "
                                       "have planted it); list the real path in the policy instead")
                break
    return suspect
