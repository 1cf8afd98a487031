"""Executes the mount plan inside the new mount namespace (run by init, PID 1 of the sandbox).

bubblewrap's technique: everything rprivate; a tmpfs base with newroot/ and oldroot/; pivot
into the base so the host tree sits at /oldroot; bind what the plan lists from /oldroot into
/newroot; hide Unix sockets, inference key files and the state directory; detach /oldroot;
pivot into /newroot.
The root stays writable until `seal_view` (after the CA files are written), then read-only.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

from . import libc
from .mountplan import DEV_ENTRIES, Bind, MountPlan, Private, Symlink
from .paths import host_inspect, is_within, resolve
from .sockscan import ScanBudget, Survey, is_socket, survey

BASE = "/tmp"  # any existing directory: the tmpfs mounted on it becomes the temporary root
NEWROOT = "/newroot"
OLDROOT = "/oldroot"
EMPTY_FILE = "/empty"  # in the base tmpfs: bound read-only over each hidden socket
STOCKADE_RUN = "/run/stockade"

# statvfs flags that a bind remount must keep when they are locked (user namespaces).
_KEPT_FLAGS = (
    (os.ST_NOSUID, libc.MS_NOSUID), (os.ST_NODEV, libc.MS_NODEV), (os.ST_NOEXEC, libc.MS_NOEXEC),
    (os.ST_NOATIME, libc.MS_NOATIME), (os.ST_NODIRATIME, libc.MS_NODIRATIME),
    (os.ST_RELATIME, libc.MS_RELATIME),
)


class ViewFacts:
    """What building the view found, for the startup report."""

    __slots__ = ("hidden_sockets", "scan_exhausted", "state_dir_hidden", "hidden_files", "detached")

    def __init__(self) -> None:
        self.hidden_sockets: list[str] = []
        self.scan_exhausted = ""  # the tree where the socket scan budget ran out
        self.state_dir_hidden = False
        self.hidden_files: list[str] = []  # covered inference key files
        self.detached: list[str] = []  # submounts that could not be made read-only


def build_view(plan: MountPlan, *, state_dir: str, socket_candidates: Iterable[str],
               budget: ScanBudget = ScanBudget(), hidden_files: Iterable[str] = (),
               early: Survey | None = None) -> ViewFacts:
    """`early`: the launcher's survey of a tree (sockscan.py), used for that tree's walk when it
    is that walk (`_stands_for`)."""
    facts = ViewFacts()
    libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
    libc.mount("tmpfs", BASE, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "mode=0755")
    os.chdir(BASE)
    os.mkdir("newroot", 0o755)
    libc.mount("newroot", "newroot", None, libc.MS_BIND | libc.MS_REC | libc.MS_SILENT)
    os.mkdir("oldroot", 0o755)
    libc.pivot_root(BASE, BASE + OLDROOT)
    os.chdir("/")
    os.close(os.open(EMPTY_FILE, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o444))
    for step in plan.steps:
        if isinstance(step, Private):
            _private(step)
        elif isinstance(step, Bind):
            _bind(step, facts)
        elif isinstance(step, Symlink):
            _symlink(step)
    _hide_sockets(plan, socket_candidates, budget, facts, early)
    _hide_files(hidden_files, facts)
    facts.state_dir_hidden = _hide_state_dir(state_dir)
    libc.umount2(OLDROOT, libc.MNT_DETACH)
    os.chdir(NEWROOT)
    libc.pivot_root(".", ".")  # the base now sits on top of the new root: detach it
    libc.umount2(".", libc.MNT_DETACH)
    os.chdir("/")
    return facts


def write_run_files(files: dict[str, bytes]) -> None:
    """Write the sandbox's /run/stockade files (CA, bundle) and make the directory read-only."""
    for name, data in files.items():
        fd = os.open(os.path.join(STOCKADE_RUN, name), os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o444)
        try:
            os.write(fd, data) if len(data) < 65536 else _write_all(fd, data)
        finally:
            os.close(fd)
    libc.mount(STOCKADE_RUN, STOCKADE_RUN, None, libc.MS_BIND)
    _remount_readonly(STOCKADE_RUN)


def seal_view() -> None:
    """Make the tmpfs root and the minimal /dev read-only (the last step of the view)."""
    _remount_readonly("/dev")
    _remount_readonly("/")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _new(path: str) -> str:
    return NEWROOT + path if path != "/" else NEWROOT


def _ensure_dir(path: str) -> None:
    if not os.path.isdir(path):
        os.makedirs(path, 0o755, exist_ok=True)


def _ensure_file(path: str) -> None:
    if not os.path.lexists(path):
        _ensure_dir(os.path.dirname(path))
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o444))


def _private(step: Private) -> None:
    target = _new(step.path)
    _ensure_dir(target)
    if step.what == "proc":
        try:
            libc.mount("proc", target, "proc", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)
        except OSError as exc:
            raise OSError(exc.errno, f"mounting the sandbox's own /proc: {exc.strerror} (the kernel refuses "
                          "it where the host's /proc has covered paths, as in containers that mask "
                          "parts of /proc; `--isolation landlock` works there)") from None
    elif step.what == "dev":
        _minimal_dev(target)
    elif step.what == "tmp":
        libc.mount("tmpfs", target, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "mode=1777")
    else:  # run: a private tmpfs with stockade's own directory
        libc.mount("tmpfs", target, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "mode=0755")
        os.mkdir(target + "/stockade", 0o755)


def _minimal_dev(target: str) -> None:
    libc.mount("tmpfs", target, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC, "mode=0755")
    for name in DEV_ENTRIES:
        node = f"{target}/{name}"
        _ensure_file(node)
        libc.mount(f"{OLDROOT}/dev/{name}", node, None, libc.MS_BIND)
    os.mkdir(target + "/pts", 0o755)
    libc.mount("devpts", target + "/pts", "devpts", libc.MS_NOSUID | libc.MS_NOEXEC,
               "newinstance,ptmxmode=0666,mode=620")
    os.symlink("pts/ptmx", target + "/ptmx")
    os.mkdir(target + "/shm", 0o1777)
    libc.mount("tmpfs", target + "/shm", "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "mode=1777")
    os.symlink("/proc/self/fd", target + "/fd")
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", f"{target}/{name}")


def _bind(step: Bind, facts: ViewFacts) -> None:
    target = _new(step.path)
    if step.kind == "dir":
        _ensure_dir(target)
    else:
        _ensure_file(target)
    libc.mount(OLDROOT + step.path, target, None, libc.MS_BIND | libc.MS_REC)
    if not step.writable:
        _remount_readonly(target)
        for sub in _submounts(target):
            try:
                _remount_readonly(sub)
            except OSError:  # e.g. a locked special mount: hide it rather than leave it writable
                libc.umount2(sub, libc.MNT_DETACH)
                facts.detached.append(sub[len(NEWROOT):])


def _symlink(step: Symlink) -> None:
    link = _new(step.path)
    if os.path.lexists(link):  # already visible through a bound parent
        return
    _ensure_dir(os.path.dirname(link))
    os.symlink(step.target, link)


def _remount_readonly(path: str) -> None:
    flags = os.statvfs(path).f_flag
    kept = 0
    for st_flag, ms_flag in _KEPT_FLAGS:
        if flags & st_flag:
            kept |= ms_flag
    libc.mount(None, path, None, libc.MS_REMOUNT | libc.MS_BIND | libc.MS_RDONLY | kept)


def _submounts(target: str) -> list[str]:
    """Mount points strictly below `target`, parents first (from mountinfo, octal-unescaped)."""
    for source in (OLDROOT + "/proc/self/mountinfo", NEWROOT + "/proc/self/mountinfo"):
        try:
            with open(source, "rb") as f:
                lines = f.read().splitlines()
            break
        except OSError:
            continue
    else:
        raise OSError("cannot read mountinfo to make submounts read-only")
    points = []
    for line in lines:
        point = _unescape(line.split(b" ")[4])
        if point != target and is_within(point, target):
            points.append(point)
    return list(dict.fromkeys(points))


def _unescape(raw: bytes) -> str:
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x5C and i + 4 <= len(raw) and raw[i + 1:i + 4].isdigit():
            out.append(int(raw[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


def _hide(view_path: str, facts: ViewFacts) -> None:
    target = _new(view_path)
    libc.mount(EMPTY_FILE, target, None, libc.MS_BIND)
    _remount_readonly(target)
    facts.hidden_sockets.append(view_path)


def _hide_sockets(plan: MountPlan, candidates: Iterable[str], budget: ScanBudget,
                  facts: ViewFacts, early: Survey | None = None) -> None:
    """Hide every Unix socket the view exposes: known paths first, then a bounded walk.

    A socket the policy lists itself is an explicit grant and stays; one that merely lies
    below a granted directory leads to a host process outside the sandbox and is hidden.
    """
    inspect = host_inspect(NEWROOT)
    seen: set[str] = {b.path for b in plan.binds}
    roots = plan.scan_roots
    for candidate in candidates:
        if not candidate.startswith("/"):
            continue
        real = resolve(candidate, inspect).real
        if real not in seen and is_socket(_new(real)):
            seen.add(real)
            _hide(real, facts)
    remaining = budget.entries
    for root in roots:
        left = ScanBudget(remaining, budget.depth)
        scan = early if _stands_for(early, root, left) else survey(root, left, NEWROOT)
        for path in scan.sockets:
            if path not in seen and is_socket(_new(path)):  # (again: the survey is older)
                seen.add(path)
                _hide(path, facts)
        remaining -= scan.entries
        if remaining <= 0:
            facts.scan_exhausted = root
            break


def _stands_for(early: Survey | None, root: str, budget: ScanBudget) -> bool:
    """The launcher's survey is this walk, done before the spec came: the same tree and depth,
    and the same budget, or a smaller one that the survey did not reach (a walk cut shorter
    would have found less)."""
    return (early is not None and early.root == root and early.budget.depth == budget.depth
            and (early.budget.entries == budget.entries or early.entries < min(budget.entries, early.budget.entries)))


def _hide_files(paths: Iterable[str], facts: ViewFacts) -> None:
    """Cover files the view would otherwise show (real paths): an empty read-only file over a
    file, an empty read-only tmpfs over a directory. Paths outside the view need nothing."""
    for path in paths:
        target = _new(path)
        try:
            st = os.lstat(target)
        except OSError:
            continue  # not in the view
        if stat.S_ISDIR(st.st_mode):
            libc.mount("tmpfs", target, "tmpfs", libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC,
                       "size=4k,mode=000")
        else:
            libc.mount(EMPTY_FILE, target, None, libc.MS_BIND)
            _remount_readonly(target)
        facts.hidden_files.append(path)


def _hide_state_dir(state_dir: str) -> bool:
    target = _new(state_dir)
    if not os.path.isdir(target):
        return False
    libc.mount("tmpfs", target, "tmpfs", libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC,
               "size=4k,mode=000")
    return True
