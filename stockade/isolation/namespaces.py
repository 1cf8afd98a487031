"""Namespaces: unshare, the identity map, loopback, the proxy listener, and why userns fails.

Rootless: a new user namespace maps the invoking uid/gid to themselves (so the command is not
root inside), plus mount, pid, net, ipc, uts. Root: the same without the user namespace.
The new network namespace has only `lo`, brought up with two ioctls (no `ip` binary); the
proxy listener is created there, so a socket keeps that namespace while the supervisor serves
it from the host side.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
from collections.abc import Callable

from . import libc
from .channel import SetupError
from .spec import NAMESPACES_ROOT, NAMESPACES_ROOTLESS, PROXY_HOST, PROXY_PORT  # noqa: F401
_FLAGS = {"user": libc.CLONE_NEWUSER, "mnt": libc.CLONE_NEWNS, "pid": libc.CLONE_NEWPID,
          "net": libc.CLONE_NEWNET, "ipc": libc.CLONE_NEWIPC, "uts": libc.CLONE_NEWUTS}

SIOCGIFFLAGS, SIOCSIFFLAGS = 0x8913, 0x8914
IFF_UP = 0x1


def enter(names: tuple[str, ...], *, uid: int, gid: int) -> None:
    flags = 0
    for name in names:
        flags |= _FLAGS[name]
    try:
        libc.unshare(flags)
    except OSError as exc:
        layer = "userns" if "user" in names else "namespaces"
        raise SetupError(layer, f"unshare({'+'.join(names)}): {os.strerror(exc.errno or 0)}", exc.errno or 0) from None
    if "user" in names:
        _map_identity(uid, gid)


def _map_identity(uid: int, gid: int) -> None:
    """Map the invoking uid/gid to themselves; setgroups must be denied before the gid map."""
    try:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1\n"), ("gid_map", f"{gid} {gid} 1\n")):
            fd = os.open(f"/proc/self/{name}", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
    except OSError as exc:
        raise SetupError("userns", f"writing the user namespace's {name}: {exc.strerror}", exc.errno or 0) from None


def loopback_up() -> None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            req = struct.pack("16sh14x", b"lo", 0)
            flags = struct.unpack("16sh14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
            fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", flags | IFF_UP))
    except OSError as exc:
        raise SetupError("network", f"bringing up lo: {exc.strerror}", exc.errno or 0) from None


def proxy_listener(host: str = PROXY_HOST, port: int = PROXY_PORT) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(512)
    except OSError as exc:
        sock.close()
        raise SetupError("network", f"proxy listener on {host}:{port}: {exc.strerror}", exc.errno or 0) from None
    return sock


NETLINK_SOCK_DIAG = 4  # <linux/netlink.h>; stockade.network.identity speaks its protocol


def sock_diag_socket() -> socket.socket | None:
    """A sock_diag socket of the calling process's network namespace, for the proxy's identity
    lookups (microseconds instead of milliseconds for /proc/<pid>/net/tcp); None when the kernel
    refuses one, and the proxy reads the procfs tables instead."""
    try:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
    except OSError:
        return None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def userns_sysctls(read: Callable[[str], str | None] = _read) -> dict[str, str | None]:
    return {
        "kernel.unprivileged_userns_clone": read("/proc/sys/kernel/unprivileged_userns_clone"),
        "kernel.apparmor_restrict_unprivileged_userns": read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
        "user.max_user_namespaces": read("/proc/sys/user/max_user_namespaces"),
    }


def diagnose_userns(err: int, sysctls: dict[str, str | None]) -> tuple[str, str]:
    """(cause, fix) for a failed rootless namespace setup, from the errno and the sysctls."""
    fallback = "or run with `--isolation landlock` (weaker: no pid, mount or network isolation)"
    if sysctls.get("kernel.unprivileged_userns_clone") == "0":
        return ("unprivileged user namespaces are disabled (sysctl kernel.unprivileged_userns_clone=0)",
                f"`sudo sysctl -w kernel.unprivileged_userns_clone=1`, {fallback}")
    if sysctls.get("user.max_user_namespaces") == "0":
        return ("user namespaces are disabled (sysctl user.max_user_namespaces=0)",
                f"`sudo sysctl -w user.max_user_namespaces=15000`, {fallback}")
    if sysctls.get("kernel.apparmor_restrict_unprivileged_userns") == "1":
        return ("AppArmor restricts unprivileged user namespaces (Ubuntu 23.10+: "
                "kernel.apparmor_restrict_unprivileged_userns=1)",
                "allow it for stockade's interpreter with an AppArmor profile granting `userns`, or "
                f"`sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`, {fallback}")
    if err == errno.ENOSPC:
        return ("the limit on user namespaces is reached (user.max_user_namespaces)",
                f"raise `user.max_user_namespaces` or end other sandboxes, {fallback}")
    if err in (errno.EPERM, errno.EACCES, errno.ENOSYS):
        return ("user namespaces are refused here, most likely by a container's seccomp profile "
                "(Docker's default blocks them)",
                f"run the container with `--security-opt seccomp=unconfined` (or a profile allowing "
                f"unshare/clone with CLONE_NEWUSER), {fallback}")
    return (f"user namespaces are unavailable ({errno.errorcode.get(err, err)})", fallback)
