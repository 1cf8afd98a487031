"""Which process is behind a proxy connection: socket → owning processes → executable → SHA-256.

Every lookup is relative to a procfs directory fd (the sandbox's own /proc, sent by its init, so
pids are sandbox pids and PID 1 is the sandbox's init; or the host's /proc with the agent's pid as
root for the modes without a pid namespace). Processes are pinned by opening their /proc/<pid>
directory once: every later read goes through that fd, so a pid that exits and is reused in the
middle of a lookup cannot substitute another process's answers (the stale fd fails with ESRCH).

Decisions are made on the kernel's view only (exe magic link, fd table, PPid). argv is read for
logs only: it is chosen by the process and proves nothing.

Residual limits, inherent to procfs: the process that holds the socket *now* is identified, not
the one that wrote the bytes; a process that execs an allowed binary while keeping the socket, or
hands it to one and exits, is attributed to that binary (its ancestors still show where it came
from).
"""

from __future__ import annotations

import errno
import itertools
import os
import signal
import socket
import threading

from ..records import Struct
from .procfs import (
    IdentityError,
    argv_paths,
    find_socket_inode,
    parse_ppid,
    strip_deleted,
    tcp_lookup_keys,
)
from .sockdiag import SockDiag, open_diag_socket
from .tofu import BinaryHasher

MAX_ANCESTORS = 64
MAX_CMDLINE = 64 * 1024
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_O_FILE = os.O_RDONLY | os.O_CLOEXEC
# errnos that mean "this process is gone" (the pid dir fd is stale, or the pid vanished).
_GONE = frozenset({errno.ENOENT, errno.ESRCH})


class Identity(Struct, frozen=True):
    pid: int  # the socket owner, in the pids of the procfs we were given
    binary: str  # its executable, as the kernel resolved it (" (deleted)" stripped)
    ancestors: tuple[str, ...]  # executables of its parents, parent first, up to root_pid
    sha256: str  # TOFU-verified hash of `binary`
    ancestor_pids: tuple[int, ...] = ()
    ancestor_sha256: tuple[str, ...] = ()
    # argv entries that look like paths, of the owner and its ancestors: for logs only, never
    # for decisions (a process writes its own argv).
    cmdline_paths: tuple[str, ...] = ()
    holders: tuple[int, ...] = ()  # every pid holding the socket (all with the same binary)
    inode: int = 0
    deleted: bool = False  # the owner runs an executable that was unlinked since exec


def _read(name: str, dir_fd: int, limit: int = 1 << 24) -> bytes:
    fd = os.open(name, _O_FILE, dir_fd=dir_fd)
    try:
        chunks = []
        size = 0
        while size < limit:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _listdir(name: str, dir_fd: int) -> list[str]:
    fd = os.open(name, _O_DIR, dir_fd=dir_fd)  # getdents needs a real fd, not O_PATH
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


class _Proc(Struct):
    pid: int
    fd: int  # O_DIRECTORY fd of /proc/<pid>: pins this very process
    binary: str = ""
    sha256: str = ""
    deleted: bool = False


class IdentityResolver:
    """Maps an accepted proxy connection to the process, executable and ancestors behind it.

    `root_pid` is the top of the tree that counts: the sandbox's init (1) in its own pid
    namespace, or the agent's pid on the host. Ancestors are collected up to it and never beyond,
    so the supervisor is never an ancestor. On the host, a holder outside root_pid's tree is
    refused (`outside_root`).

    `diag`, a sock_diag socket created in the connection's network namespace, replaces the
    procfs TCP tables (milliseconds per lookup) with a hash lookup (microseconds). None: use our
    own when root_pid shares our network namespace (the host modes), else the procfs tables;
    False: always the procfs tables.
    `trusted_root`: root_pid is stockade's own init (the sandbox modes). It never holds a
    command's socket, so its fd table is not scanned (it is non-dumpable: a rootless supervisor
    could not read it, and every lookup would fail), and it is not an ancestor: it runs
    stockade's interpreter, so a policy granting that interpreter (/usr/bin/python3) would
    otherwise grant it to every process of the sandbox.
    `add_root` adds more trusted roots on the host: a `stockade exec` process (landlock-only
    mode), parent and subreaper of its command as init is of the sandbox's. Each is pinned by a
    pidfd and counts only while that process lives, so a reused pid is never taken for it.
    `scan_threads` also reads the fd tables of non-leader threads: a thread created without
    CLONE_FILES (or after unshare(CLONE_FILES)) has a private fd table that /proc/<pid>/fd does
    not show, and could otherwise hide a second owner of the socket. `skip_unreadable` skips
    processes whose fd table cannot be read (only sensible on the host as a non-root user; in a
    sandbox the supervisor can read every process, so an unreadable one is refused).
    """

    def __init__(
        self,
        proc_fd: int,
        *,
        root_pid: int = 1,
        hasher: BinaryHasher | None = None,
        diag: socket.socket | bool | None = None,
        scan_threads: bool = True,
        skip_unreadable: bool = False,
        trusted_root: bool = False,
    ) -> None:
        self.proc_fd = proc_fd
        self.root_pid = root_pid
        self.trusted_root = trusted_root
        if diag is None and self._same_netns():
            diag = open_diag_socket()
        self.diag = SockDiag(diag) if isinstance(diag, socket.socket) else None
        self.hasher = hasher if hasher is not None else BinaryHasher()
        self.scan_threads = scan_threads
        self.skip_unreadable = skip_unreadable
        # token -> (pid, pidfd) of the extra trusted roots; added and dropped on the proxy's loop
        # while lookups run on worker threads, hence the lock (a pidfd is never used once closed).
        self._roots: dict[int, tuple[int, int]] = {}
        self._roots_lock = threading.Lock()
        self._tokens = itertools.count(1)

    # -- extra trusted roots -------------------------------------------------------------------

    def add_root(self, pid: int, pidfd: int) -> int:
        """Trust `pid` as a root while the process behind `pidfd` lives; the resolver owns the
        pidfd from now on. Returns the token that drop_root takes."""
        with self._roots_lock:
            token = next(self._tokens)
            self._roots[token] = (pid, pidfd)
        return token

    def drop_root(self, token: int) -> None:
        with self._roots_lock:
            entry = self._roots.pop(token, None)
            if entry is not None:
                os.close(entry[1])

    def root_count(self) -> int:
        with self._roots_lock:
            return len(self._roots)

    def is_root(self, pid: int) -> bool:
        """Whether `pid` is a trusted root right now: init, or an extra root still alive (so
        the pid still names the pinned process, not a newcomer that reused it)."""
        if pid == self.root_pid and self.trusted_root:
            return True
        with self._roots_lock:
            return any(p == pid and pidfd_alive(fd) for p, fd in self._roots.values())

    def _extra_roots(self) -> set[int]:
        with self._roots_lock:
            return {p for p, fd in self._roots.values() if pidfd_alive(fd)}

    def below_root(self, pid: int) -> bool:
        """Whether host process `pid` descends from init or an extra root (it runs in the
        sandbox; a root itself does not). The chain is pinned as in `_ancestors`; a chain that
        changes while it is walked counts as below (callers refuse on True: fail closed)."""
        opened: list[_Proc] = []
        try:
            try:
                cur = _Proc(pid, os.open(str(pid), _O_DIR, dir_fd=self.proc_fd))
            except OSError:
                return True
            opened.append(cur)
            for _ in range(4096):  # pid_max bounds a real chain; this bounds a corrupt one
                ppid = self._ppid(cur)
                if ppid == 0 or ppid == cur.pid:
                    return False  # the top of the host's tree, without meeting a root
                if self.is_root(ppid):
                    return True
                cur = self._parent(cur, ppid, opened)
            return True
        except IdentityError:
            return True
        finally:
            for proc in opened:
                os.close(proc.fd)

    def resolve(self, client: tuple[str, int], server: tuple[str, int]) -> Identity:
        """Blocking (procfs reads, maybe a first-time hash): run it in a thread pool."""
        inode = self.socket_inode(client, server)
        opened: list[_Proc] = []
        try:
            holders = self._holders(inode, opened)
            if not holders:
                raise IdentityError("no_owner", f"no process holds socket {inode}")
            for proc in holders:
                self._read_exe(proc)
            binaries = {proc.binary for proc in holders}
            if len(binaries) > 1:
                owners = ", ".join(f"{p.pid}={p.binary}" for p in holders)
                raise IdentityError("ambiguous_owner",
                                    f"socket {inode} is shared by different binaries: {owners}")
            chains = [self._ancestors(proc, opened) for proc in holders]
            return self._identity(inode, holders, chains)
        finally:
            for proc in opened:
                os.close(proc.fd)

    def _same_netns(self) -> bool:
        try:
            theirs = os.stat(f"{self.root_pid}/ns/net", dir_fd=self.proc_fd)
            ours = os.stat("/proc/thread-self/ns/net")  # where a new socket would live
        except OSError:
            return False
        return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)

    # -- steps ---------------------------------------------------------------------------------

    def socket_inode(self, client: tuple[str, int], server: tuple[str, int]) -> int:
        """Inode of the client's socket, by the full 4-tuple in root_pid's network namespace."""
        inode = self.diag.inode(client, server) if self.diag is not None else None
        tables = [] if self.diag is not None else tcp_lookup_keys(client, server)
        for table, local, remote in tables:
            try:
                data = _read(f"{self.root_pid}/net/{table}", self.proc_fd)
            except FileNotFoundError:
                continue  # no IPv6 in this kernel
            except OSError as exc:
                raise IdentityError("proc_unreadable", f"/proc/{self.root_pid}/net/{table}: {exc}")
            inode = find_socket_inode(data, local, remote)
            if inode is not None:
                break
        if inode is None:
            raise IdentityError("no_socket", f"no live TCP connection {client[0]}:{client[1]} -> "
                                f"{server[0]}:{server[1]}")
        return inode

    def _holders(self, inode: int, opened: list[_Proc]) -> list[_Proc]:
        target = f"socket:[{inode}]"
        holders = []
        extra = self._extra_roots()
        skip = {str(p) for p in extra} | ({str(self.root_pid)} if self.trusted_root else set())
        for name in _listdir(".", self.proc_fd):
            # The scan goes by path (cheap); only a holder is pinned, then checked again through
            # its pinned fd, so a pid reused in between cannot stand in for the real holder.
            if not name.isdigit() or name in skip or not self._holds(self.proc_fd, f"{name}/", name, target):
                continue
            try:
                pfd = os.open(name, _O_DIR, dir_fd=self.proc_fd)
            except OSError as exc:
                if exc.errno in _GONE:
                    continue
                raise
            proc = _Proc(int(name), pfd)
            opened.append(proc)
            if self._holds(pfd, "", name, target):
                holders.append(proc)
        # A skipped root that exited meanwhile may have had its pid reused by a holder we skipped.
        if extra and not extra <= self._extra_roots():
            raise IdentityError("ancestor_changed", "an exec root exited during the lookup")
        return holders

    def _holds(self, dir_fd: int, prefix: str, pid: str, target: str) -> bool:
        """Whether the process at `prefix` (relative to dir_fd) has `target` in an fd table."""
        tables = [f"{prefix}fd"]
        if self.scan_threads:
            task = f"{prefix}task"
            try:
                # st_nlink of task/ is 2 + the thread count: list it only when there are others.
                if os.stat(task, dir_fd=dir_fd).st_nlink > 3:
                    tables += [f"{task}/{t}/fd" for t in _listdir(task, dir_fd) if t != pid]
            except OSError as exc:
                if exc.errno in _GONE:
                    return False
                # otherwise the fd table check below reports the unreadable process
        for table in tables:
            try:
                dfd = os.open(table, _O_DIR, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno in _GONE:
                    continue  # the process or thread exited
                if self.skip_unreadable:
                    return False
                raise IdentityError(
                    "proc_unreadable", f"cannot read the fd table of pid {pid}: {exc}"
                ) from exc
            try:
                for entry in os.listdir(dfd):
                    try:
                        if os.readlink(entry, dir_fd=dfd) == target:
                            return True
                    except OSError:
                        continue  # closed meanwhile
            finally:
                os.close(dfd)
        return False

    def _read_exe(self, proc: _Proc) -> None:
        try:
            link = os.readlink("exe", dir_fd=proc.fd)
            fd = os.open("exe", _O_FILE, dir_fd=proc.fd)
        except OSError as exc:
            raise IdentityError(
                "exe_unreadable", f"cannot read the executable of pid {proc.pid}: {exc.strerror}"
            ) from exc
        try:
            # Hash through the magic link, never by path: the path may now name another file.
            proc.binary, proc.deleted = strip_deleted(link, os.fstat(fd).st_nlink == 0)
            proc.sha256 = self.hasher.verify_fd(proc.binary, fd)
        except IdentityError as exc:
            if exc.pid is None:
                exc.pid = proc.pid  # which process runs the changed executable
            raise
        finally:
            os.close(fd)

    def _ppid(self, proc: _Proc) -> int:
        try:
            return parse_ppid(_read("status", proc.fd, 1 << 16))
        except (OSError, ValueError) as exc:
            raise IdentityError(
                "ancestor_changed", f"cannot read the parent of pid {proc.pid}: {exc}"
            ) from exc

    def _parent(self, cur: _Proc, ppid: int, opened: list[_Proc]) -> _Proc:
        try:
            pfd = os.open(str(ppid), _O_DIR, dir_fd=self.proc_fd)
        except OSError as exc:
            raise IdentityError("ancestor_changed", f"parent {ppid} of {cur.pid} is gone") from exc
        parent = _Proc(ppid, pfd)
        opened.append(parent)
        # If the parent died and its pid was reused before we opened it, `cur` has been
        # reparented by now: re-reading its PPid proves the fd we hold is the real parent.
        if self._ppid(cur) != ppid:
            raise IdentityError("ancestor_changed", f"pid {cur.pid} was reparented")
        return parent

    def _ancestors(self, proc: _Proc, opened: list[_Proc]) -> list[_Proc]:
        chain: list[_Proc] = []
        cur = proc
        seen = {proc.pid}
        while cur.pid != self.root_pid and len(chain) < MAX_ANCESTORS:
            ppid = self._ppid(cur)
            if ppid == 0 or ppid in seen:
                break  # the parent is outside this pid namespace (or a corrupt loop)
            # stockade's init or a `stockade exec` process: not the command's ancestor. An exec
            # root is checked alive *after* PPid was read, so the pid was its own at that time.
            if self.is_root(ppid):
                break
            if ppid == 1 and self.root_pid != 1:
                # Reached init without meeting root_pid: not the agent's tree (host modes).
                raise IdentityError(
                    "outside_root", f"pid {proc.pid} does not descend from pid {self.root_pid}"
                )
            parent = self._parent(cur, ppid, opened)
            self._read_exe(parent)
            chain.append(parent)
            seen.add(ppid)
            cur = parent
        if self.root_pid != 1 and cur.pid == 1:
            raise IdentityError("outside_root", f"pid 1 does not descend from {self.root_pid}")
        if len(chain) >= MAX_ANCESTORS and cur.pid != self.root_pid and not self._at_top(cur):
            # Unwalked ancestors: on the host, descent from the root is unproven; in a sandbox,
            # the chain would lack the ancestors that policies name. Either way, refuse.
            raise IdentityError("too_deep", f"pid {proc.pid} has more than {MAX_ANCESTORS} ancestors")
        return chain

    def _at_top(self, proc: _Proc) -> bool:
        """Whether `proc`'s parent ends the walk (a root, or outside this pid namespace)."""
        ppid = self._ppid(proc)
        return ppid == 0 or ppid == self.root_pid or self.is_root(ppid)

    def _identity(self, inode: int, holders: list[_Proc], chains: list[list[_Proc]]) -> Identity:
        # Same binary everywhere. Ancestors may still differ (an fd passed between subtrees):
        # keep the shortest chain, reduced to binaries that every holder descends from, so no
        # holder gains an ancestor-based grant another holder lacks.
        best = min(range(len(holders)), key=lambda i: len(chains[i]))
        common = set.intersection(*({p.binary for p in chain} for chain in chains))
        chain = [p for p in chains[best] if p.binary in common]
        owner = holders[best]
        return Identity(
            pid=owner.pid,
            binary=owner.binary,
            ancestors=tuple(p.binary for p in chain),
            sha256=owner.sha256,
            ancestor_pids=tuple(p.pid for p in chain),
            ancestor_sha256=tuple(p.sha256 for p in chain),
            cmdline_paths=self._cmdline_paths([owner, *chains[best]]),
            holders=tuple(p.pid for p in holders),
            inode=inode,
            deleted=owner.deleted,
        )

    def _cmdline_paths(self, procs: list[_Proc]) -> tuple[str, ...]:
        exclude = {p.binary for p in procs}
        paths: dict[str, None] = {}
        for proc in procs:
            try:
                cmdline = _read("cmdline", proc.fd, MAX_CMDLINE)
            except OSError:
                continue  # logs only
            for path in argv_paths(cmdline[:MAX_CMDLINE]):
                if path not in exclude:
                    paths.setdefault(path)
        return tuple(paths)


def pidfd_alive(pidfd: int) -> bool:
    """Whether the process behind a pidfd still runs (a zombie still holds its pid)."""
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, just not ours to signal
    return True
