"""sock_diag: an O(1) lookup of one TCP socket by its 4-tuple.

Reading /proc/<pid>/net/tcp walks the whole TCP hash table, which a network namespace shares
with the host unless net.ipv4.tcp_child_ehash_entries was set: 262144 buckets here, ~5 ms per
read() and two reads per file. A NETLINK_SOCK_DIAG request for one exact 4-tuple is a single
hash lookup (~20 us). It is unprivileged, but answers only for the network namespace the
netlink socket was created in: the launcher creates it inside the sandbox (open_diag_socket)
and hands it over with the listener, exactly like the listener itself.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading

from .procfs import IdentityError, connection_pair

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
