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
import hashlib
import ipaddress
import os
import socket
import struct
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

HASH_CHUNK = 64 * 1024
MAX_ANCESTORS = 64
MAX_CMDLINE = 64 * 1024
DELETED_SUFFIX = " (deleted)"

# Client-side TCP states in which the client still owns a live connection to us: ESTABLISHED,
# and FIN_WAIT1/2 for a client that half-closed after sending its request (`nc -N`, shutdown()).
_LIVE_STATES = frozenset({b"01", b"04", b"05"})
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_O_FILE = os.O_RDONLY | os.O_CLOEXEC
# errnos that mean "this process is gone" (the pid dir fd is stale, or the pid vanished).
_GONE = frozenset({errno.ENOENT, errno.ESRCH})

Fingerprint = tuple[int, int, int, int, int]  # size, mtime ns, ctime ns, dev, ino


class IdentityError(Exception):
    """Why a connection could not be attributed to a binary; every code means deny.

    Codes: bad_address, no_socket, no_owner, ambiguous_owner, proc_unreadable, exe_unreadable,
    binary_changed, binary_unstable, ancestor_changed, outside_root.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Identity:
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


# --------------------------------------------------------------------------------------------
# Hashing (TOFU)


def sha256_fd(fd: int) -> str:
    """SHA-256 (hex) of an open file, read from offset 0 in 64 KiB chunks."""
    digest = hashlib.sha256()
    buf = bytearray(HASH_CHUNK)
    view = memoryview(buf)
    offset = 0
    while True:
        n = os.preadv(fd, [buf], offset)
        if n == 0:
            return digest.hexdigest()
        digest.update(view[:n])
        offset += n


def fingerprint(st: os.stat_result) -> Fingerprint:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_dev, st.st_ino)


@dataclass
class _Entry:
    sha256: str  # the hash trusted on first use; never replaced
    good: deque[Fingerprint] = field(default_factory=lambda: deque(maxlen=8))
    bad: deque[Fingerprint] = field(default_factory=lambda: deque(maxlen=8))


class BinaryHasher:
    """Trust-on-first-use hashes per executable path, shared by the whole sandbox.

    The first hash seen for a path is trusted; afterwards a file whose content hashes differently
    is refused (`binary_changed`) and the entry is kept, so the path stays denied until its old
    content is restored. Metadata fingerprints (size, mtime, ctime, dev, ino: ctime cannot be
    forged by a process) avoid rehashing unchanged files; several good fingerprints are kept per
    path because an old process can keep running a replaced, identical binary. Known-bad
    fingerprints are remembered too, so a refused 100 MB binary is not rehashed on every connect.
    Thread-safe: the proxy resolves identities in a thread pool.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._path_locks: dict[str, threading.Lock] = {}
        self.hash_count = 0  # files hashed so far (statistics, tests)

    def verify(self, path: str, open_exe: Callable[[], int]) -> str:
        """Hash of the file `open_exe()` opens (the fd is closed here), checked against `path`."""
        try:
            fd = open_exe()
        except OSError as exc:
            raise IdentityError("exe_unreadable", f"cannot open {path}: {exc.strerror}") from exc
        try:
            return self.verify_fd(path, fd)
        finally:
            os.close(fd)

    def verify_fd(self, path: str, fd: int) -> str:
        fp = fingerprint(os.fstat(fd))
        cached = self._lookup(path, fp)
        if cached is not None:
            return cached
        with self._path_lock(path):  # one hash per path at a time, even with many connects
            cached = self._lookup(path, fp)
            if cached is not None:
                return cached
            digest = sha256_fd(fd)
            with self._lock:
                self.hash_count += 1
            if fingerprint(os.fstat(fd)) != fp:
                raise IdentityError("binary_unstable", f"{path} changed while it was hashed")
            with self._lock:
                entry = self._entries.get(path)
                if entry is None:
                    entry = self._entries[path] = _Entry(digest)
                if entry.sha256 == digest:
                    entry.good.append(fp)
                    return digest
                entry.bad.append(fp)
                trusted = entry.sha256
        raise IdentityError("binary_changed", f"binary integrity violation: {path} hash changed "
                            f"(trusted {trusted}, now {digest})")

    def trusted(self, path: str) -> str | None:
        """The hash trusted for `path`, if it has been seen."""
        with self._lock:
            entry = self._entries.get(path)
            return entry.sha256 if entry else None

    def _lookup(self, path: str, fp: Fingerprint) -> str | None:
        with self._lock:
            entry = self._entries.get(path)
            if entry is None or fp not in entry.bad:
                return entry.sha256 if entry is not None and fp in entry.good else None
        raise IdentityError("binary_changed", f"binary integrity violation: {path} differs "
                            f"from trusted {entry.sha256}")

    def _path_lock(self, path: str) -> threading.Lock:
        with self._lock:
            return self._path_locks.setdefault(path, threading.Lock())


# --------------------------------------------------------------------------------------------
# Sans-IO procfs parsing


def tcp_address_hex(host: str, port: int) -> str:
    """`/proc/net/tcp{,6}` spelling of an address: 32-bit words in host byte order, port BE."""
    packed = ipaddress.ip_address(host).packed
    words = "".join(
        f"{int.from_bytes(packed[i:i + 4], sys.byteorder):08X}" for i in range(0, len(packed), 4)
    )
    return f"{words}:{port:04X}"


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def connection_pair(client: tuple[str, int], server: tuple[str, int]) -> tuple[Address, Address]:
    """Both ends as IPv4 (IPv4-mapped IPv6 unwrapped) or both as IPv6; else bad_address."""
    try:
        c = ipaddress.ip_address(client[0].split("%", 1)[0])
        s = ipaddress.ip_address(server[0].split("%", 1)[0])
    except ValueError as exc:
        raise IdentityError("bad_address", f"not an IP address: {exc}") from exc
    c = c.ipv4_mapped or c if c.version == 6 else c
    s = s.ipv4_mapped or s if s.version == 6 else s
    if c.version != s.version:
        raise IdentityError("bad_address", f"{client[0]} and {server[0]} are not one connection")
    return c, s


def tcp_lookup_keys(
    client: tuple[str, int], server: tuple[str, int]
) -> list[tuple[str, str, str]]:
    """(table, local, remote) rows that could hold the *client's* end of the connection.

    The client's socket has the client address as local and the listener as remote. An IPv4
    connection appears in `tcp` if the client used an AF_INET socket, or in `tcp6` with
    IPv4-mapped addresses if it used AF_INET6; either end may be reported to us in either form.
    """
    c, s = connection_pair(client, server)
    cp, sp = client[1], server[1]
    if c.version == 4:
        return [
            ("tcp", tcp_address_hex(str(c), cp), tcp_address_hex(str(s), sp)),
            ("tcp6", tcp_address_hex(f"::ffff:{c}", cp), tcp_address_hex(f"::ffff:{s}", sp)),
        ]
    return [("tcp6", tcp_address_hex(str(c), cp), tcp_address_hex(str(s), sp))]


def find_socket_inode(table: bytes, local: str, remote: str) -> int | None:
    """Inode of the live row with exactly this local and remote address, if any."""
    needle = f": {local} {remote} ".encode()
    start = table.find(needle)
    while start >= 0:
        end = table.find(b"\n", start)
        fields = table[start:end if end >= 0 else len(table)].split()
        # fields: ":", local, remote, st, tx:rx, tr:when, retrnsmt, uid, timeout, inode, ...
        if len(fields) > 9 and fields[3] in _LIVE_STATES and fields[9].isdigit():
            inode = int(fields[9])
            if inode:
                return inode
        start = table.find(needle, start + 1)
    return None


def parse_ppid(status: bytes) -> int:
    marker = status.find(b"\nPPid:")
    if marker < 0:
        raise ValueError("no PPid line")
    end = status.find(b"\n", marker + 1)
    return int(status[marker + 6:end if end >= 0 else None])


def argv_paths(cmdline: bytes) -> list[str]:
    return [
        arg.decode(errors="replace") for arg in cmdline.split(b"\0") if arg.startswith(b"/")
    ]


def strip_deleted(link: str, unlinked: bool) -> tuple[str, bool]:
    """Strip the kernel's " (deleted)" mark, but only when the file really has no links left:
    a file literally named "curl (deleted)" must not pass for "curl"."""
    if unlinked and link.endswith(DELETED_SUFFIX):
        return link[: -len(DELETED_SUFFIX)], True
    return link, False


# --------------------------------------------------------------------------------------------
# sock_diag: an O(1) lookup of one socket by its 4-tuple
#
# Reading /proc/<pid>/net/tcp walks the whole TCP hash table, which a network namespace shares
# with the host unless net.ipv4.tcp_child_ehash_entries was set: 262144 buckets here, ~5 ms per
# read() and two reads per file. A NETLINK_SOCK_DIAG request for one exact 4-tuple is a single
# hash lookup (~20 us). It is unprivileged, but answers only for the network namespace the
# netlink socket was created in: the launcher creates it inside the sandbox (open_diag_socket)
# and hands it over with the listener, exactly like the listener itself.

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
_NLMSG_ERROR = 2
_NLM_F_REQUEST = 1
_INET_DIAG_NOCOOKIE = 0xFFFFFFFF
_NLMSGHDR = struct.Struct("=IHHII")
# inet_diag_req_v2: family, protocol, ext, pad, states; inet_diag_sockid: sport, dport (BE),
# src[16], dst[16], if, cookie[2]
_DIAG_REQ = struct.Struct("=BBBxIHH16s16sIII")
# inet_diag_msg: family, state, timer, retrans, sockid (48 bytes), expires, rqueue, wqueue, uid,
# inode
_DIAG_MSG = struct.Struct("=BBBB48xIIIII")
_LIVE_STATE_CODES = frozenset({1, 4, 5})  # ESTABLISHED, FIN_WAIT1, FIN_WAIT2


def open_diag_socket() -> socket.socket:
    """A sock_diag socket for the network namespace of the calling process (create it inside)."""
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                         NETLINK_SOCK_DIAG)


def diag_request(seq: int, client: tuple[str, int], server: tuple[str, int]) -> bytes:
    """SOCK_DIAG_BY_FAMILY for the socket whose local end is `client` and remote is `server`.
    An IPv4 lookup also finds AF_INET6 sockets that use IPv4-mapped addresses."""
    c, s = connection_pair(client, server)
    family = socket.AF_INET if c.version == 4 else socket.AF_INET6
    src, dst = c.packed.ljust(16, b"\0"), s.packed.ljust(16, b"\0")
    body = _DIAG_REQ.pack(family, socket.IPPROTO_TCP, 0, 0xFFFFFFFF, socket.htons(client[1]),
                          socket.htons(server[1]), src, dst, 0, _INET_DIAG_NOCOOKIE,
                          _INET_DIAG_NOCOOKIE)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST,
                          seq, 0) + body


def diag_reply(data: bytes, seq: int) -> tuple[int, int] | None | bool:
    """(state, inode) from a reply to `seq`; None when the socket does not exist; False when the
    datagram answers another request (a late reply to a timed-out one)."""
    length, kind, _flags, rseq, _pid = _NLMSGHDR.unpack_from(data)
    if rseq != seq:
        return False
    if kind == _NLMSG_ERROR:
        (code,) = struct.unpack_from("=i", data, _NLMSGHDR.size)
        if code in (-errno.ENOENT, 0):
            return None
        raise IdentityError("proc_unreadable", f"sock_diag: {os.strerror(-code)}")
    if kind != SOCK_DIAG_BY_FAMILY or length < _NLMSGHDR.size + _DIAG_MSG.size:
        raise IdentityError("proc_unreadable", f"sock_diag: unexpected reply type {kind}")
    _fam, state, _t, _r, _exp, _rq, _wq, _uid, inode = _DIAG_MSG.unpack_from(data, _NLMSGHDR.size)
    return state, inode


class SockDiag:
    """A thread-safe exact-socket lookup over one sock_diag socket (one network namespace)."""

    def __init__(self, sock: socket.socket, timeout: float = 2.0) -> None:
        self._sock = sock
        self._sock.settimeout(timeout)
        self._lock = threading.Lock()
        self._seq = 0

    def inode(self, client: tuple[str, int], server: tuple[str, int]) -> int | None:
        with self._lock:
            self._seq = (self._seq + 1) & 0xFFFFFFFF
            seq = self._seq
            try:
                self._sock.send(diag_request(seq, client, server))
                while True:
                    reply = diag_reply(self._sock.recv(65536), seq)
                    if reply is not False:
                        break
            except OSError as exc:
                raise IdentityError("proc_unreadable", f"sock_diag: {exc}") from exc
        if reply is None:
            return None
        state, inode = reply  # type: ignore[misc]
        return inode if state in _LIVE_STATE_CODES and inode else None


# --------------------------------------------------------------------------------------------
# The resolver (procfs I/O)


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


@dataclass
class _Proc:
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
        skip = str(self.root_pid) if self.trusted_root else None
        for name in _listdir(".", self.proc_fd):
            # The scan goes by path (cheap); only a holder is pinned, then checked again through
            # its pinned fd, so a pid reused in between cannot stand in for the real holder.
            if not name.isdigit() or name == skip or not self._holds(self.proc_fd, f"{name}/", name, target):
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
        finally:
            os.close(fd)

    def _ppid(self, proc: _Proc) -> int:
        try:
            return parse_ppid(_read("status", proc.fd, 1 << 16))
        except (OSError, ValueError) as exc:
            raise IdentityError(
                "ancestor_changed", f"cannot read the parent of pid {proc.pid}: {exc}"
            ) from exc

    def _ancestors(self, proc: _Proc, opened: list[_Proc]) -> list[_Proc]:
        chain: list[_Proc] = []
        cur = proc
        seen = {proc.pid}
        while cur.pid != self.root_pid and len(chain) < MAX_ANCESTORS:
            ppid = self._ppid(cur)
            if ppid == 0 or ppid in seen:
                break  # the parent is outside this pid namespace (or a corrupt loop)
            if ppid == 1 and self.root_pid != 1:
                # Reached init without meeting root_pid: not the agent's tree (host modes).
                raise IdentityError(
                    "outside_root", f"pid {proc.pid} does not descend from pid {self.root_pid}"
                )
            if ppid == self.root_pid and self.trusted_root:
                break  # stockade's init: not the command's ancestor
            try:
                pfd = os.open(str(ppid), _O_DIR, dir_fd=self.proc_fd)
            except OSError as exc:
                raise IdentityError("ancestor_changed", f"parent {ppid} of {cur.pid} is gone") \
                    from exc
            parent = _Proc(ppid, pfd)
            opened.append(parent)
            # If the parent died and its pid was reused before we opened it, `cur` has been
            # reparented by now: re-reading its PPid proves the fd we hold is the real parent.
            if self._ppid(cur) != ppid:
                raise IdentityError("ancestor_changed", f"pid {cur.pid} was reparented")
            self._read_exe(parent)
            chain.append(parent)
            seen.add(ppid)
            cur = parent
        if self.root_pid != 1 and cur.pid == 1:
            raise IdentityError("outside_root", f"pid 1 does not descend from {self.root_pid}")
        return chain

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
