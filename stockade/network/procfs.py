"""The kernel's view of a proxy connection, parsed (sans-IO): procfs TCP tables, process status
and argv, the " (deleted)" mark; and `IdentityError`, why a connection could not be attributed.
"""

from __future__ import annotations

import ipaddress
import sys

DELETED_SUFFIX = " (deleted)"

# Client-side TCP states in which the client still owns a live connection to us: ESTABLISHED,
# and FIN_WAIT1/2 for a client that half-closed after sending its request (`nc -N`, shutdown()).
_LIVE_STATES = frozenset({b"01", b"04", b"05"})


class IdentityError(Exception):
    """Why a connection could not be attributed to a binary; every code means deny.

    Codes: bad_address, no_socket, no_owner, ambiguous_owner, proc_unreadable, exe_unreadable,
    binary_changed, binary_unstable, ancestor_changed, outside_root, too_deep.
    """

    def __init__(self, code: str, message: str, *, binary: str | None = None,
                 trusted: str | None = None, observed: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        # For binary_changed: the executable, the hash trusted on first use and the one seen now
        # (None when a known-bad file is refused from the cache without hashing it again), and
        # the pid running it (set by the resolver): what the detection finding records.
        self.binary = binary
        self.trusted = trusted
        self.observed = observed
        self.pid: int | None = None


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
