"""The few libc calls the sandbox needs that the standard library does not wrap (Python 3.11).

Loaded once, by soname, before any namespace or mount change: after pivot_root the library
search paths may be gone, so nothing here may look a library up lazily.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import types
from collections.abc import Iterator

from ..standin import stand_in

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long
for _name in ("mount", "umount2", "unshare", "setns", "prctl", "capset"):
    getattr(_libc, _name).restype = ctypes.c_int

# Namespace flags (linux/sched.h).
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# Mount flags (linux/mount.h).
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 0x2

# prctl options (linux/prctl.h).
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

CLOSE_RANGE_CLOEXEC = 1 << 2

# Syscalls glibc does not wrap (or wraps too recently), by architecture.
_SYSCALLS = {
    "x86_64": {"pivot_root": 155, "close_range": 436},
    "aarch64": {"pivot_root": 41, "close_range": 436},
}


def _nr(name: str) -> int:
    machine = os.uname().machine
    table = _SYSCALLS.get(machine)
    if table is None:
        raise OSError(0, f"unsupported architecture {machine!r} (x86_64 and aarch64 are)")
    return table[name]


def _check(ret: int, what: str, path: str | None = None) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return ret


def _b(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    ret = _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data))
    _check(ret, f"mount {fstype or source or ''} on {target}", target)


def umount2(target: str, flags: int) -> None:
    _check(_libc.umount2(_b(target), flags), f"umount {target}", target)


def pivot_root(new_root: str, put_old: str) -> None:
    ret = _libc.syscall(ctypes.c_long(_nr("pivot_root")), _b(new_root), _b(put_old))
    _check(ret, f"pivot_root {new_root}", new_root)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    ret = _libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(0), ctypes.c_ulong(0))
    return _check(ret, f"prctl({option})")


def close_range_cloexec(first: int) -> None:
    """Mark every descriptor >= first close-on-exec (Linux 5.11); falls back to /proc/self/fd."""
    ret = _libc.syscall(ctypes.c_long(_nr("close_range")), ctypes.c_uint(first), ctypes.c_uint(0xFFFFFFFF),
                        ctypes.c_uint(CLOSE_RANGE_CLOEXEC))
    if ret == 0:
        return
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd >= first:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the fd of the listdir itself, already closed


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def clear_capabilities() -> None:
    """Empty the effective, permitted and inheritable sets of the calling thread."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), ctypes.byref(data)), "capset")


SONAMES = {"c": "libc.so.6", "seccomp": "libseccomp.so.2"}


@contextlib.contextmanager
def soname_lookup() -> Iterator[None]:
    """While importing pyseccomp and landlockpy: `ctypes.util.find_library` answers the usual
    sonames without importing subprocess or running `ldconfig -p` (tens of milliseconds here).
    When a soname does not load, the real module is left in place and does the lookup."""
    try:
        for soname in SONAMES.values():
            ctypes.CDLL(soname)
    except OSError:
        yield
        return
    stub = types.ModuleType("ctypes.util")
    stub.find_library = SONAMES.get  # type: ignore[attr-defined]
    with stand_in("ctypes.util", stub):
        yield
