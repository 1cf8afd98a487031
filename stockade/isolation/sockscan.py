"""Finding the Unix sockets of a tree: a bounded walk, read through a path prefix (init reads
the view at /newroot; the launcher's early survey reads the host's tree as it is).

Landlock below ABI 9 does not stop connect() on a named Unix socket, so the view hides every
socket below a granted tree (mounts.py). The walk is bounded: `ScanBudget.entries` entries over
all the roots of a plan, `depth` levels below each; system trees and the private roots are not
walked (a socket bound there is still found through the kernel's list, prepare.py).

Walking a project directory is 10-15 ms of a start on a small machine. The launcher surveys the
workdir (usually one of the trees the view walks) while the supervisor loads the policy, and
init uses that survey for the same tree when it is the same walk (same depth, and a budget it
did not reach), only done earlier. Init checks again that each path is a socket before hiding it.
"""

from __future__ import annotations

import os
import stat

from .mountplan import PRIVATE_ROOTS, SYSTEM_ROOTS
from .record import Record


class ScanBudget(Record):
    entries: int = 5000
    depth: int = 6


class Survey(Record):
    """The sockets found below `root` (paths as the sandbox sees them) and the entries spent;
    `entries == budget.entries` when the budget ran out."""

    root: str
    budget: ScanBudget
    sockets: tuple[str, ...]
    entries: int


def survey(root: str, budget: ScanBudget = ScanBudget(), prefix: str = "") -> Survey:
    """Walk the tree at `prefix + root` within `budget`."""
    found: list[str] = []
    left = _walk(prefix, root, 0, budget.entries, budget.depth, found)
    return Survey(root, budget, tuple(found), budget.entries - left)


def is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


def _walk(prefix: str, path: str, level: int, remaining: int, max_depth: int, found: list[str]) -> int:
    if level > max_depth or remaining <= 0:
        return remaining
    try:
        it = os.scandir(prefix + path if path != "/" else (prefix or "/"))
    except OSError:
        return remaining
    subdirs = []
    with it:
        for entry in it:
            remaining -= 1
            if remaining <= 0:
                return 0
            child = path.rstrip("/") + "/" + entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not _pruned(child):
                        subdirs.append(child)
                elif not entry.is_file(follow_symlinks=False) and not entry.is_symlink() and is_socket(entry.path):
                    found.append(child)
            except OSError:
                continue
    for sub in subdirs:
        remaining = _walk(prefix, sub, level + 1, remaining, max_depth, found)
        if remaining <= 0:
            return 0
    return remaining


def _pruned(path: str) -> bool:
    return path in PRIVATE_ROOTS or path in SYSTEM_ROOTS
