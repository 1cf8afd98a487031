"""Landlock: the rights plan (pure) and the ruleset built by init before it forks the command.

Every filesystem right the kernel's ABI knows is handled. read_only = execute, read file, read
dir; read_write = everything handled. Non-directories only get file rights (the kernel refuses
directory rights on them), so /dev/null and friends work in hard_requirement mode. From ABI 6
signals and abstract Unix sockets are scoped to the sandbox. TCP is restricted only in
`--isolation landlock` mode (connect only to the proxy port); in the namespace mode the network
namespace already has nothing but lo, and the agent's own localhost servers must work.

Paths are opened (O_PATH) by init while it is still privileged, inside the sandbox's view.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import types
from collections.abc import Iterator

from .channel import SetupError
from .paths import PathGrant, path_error_reason
from .record import Record

# Rights bits (linux/landlock.h), mirrored so the plan is pure and testable.
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
TRUNCATE, IOCTL_DEV = 1 << 14, 1 << 15
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
READ_ONLY = EXECUTE | READ_FILE | READ_DIR
CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX, SCOPE_SIGNAL = 1 << 0, 1 << 1

# The highest ABI each filesystem right appeared in (a subset of landlockpy's table, as data).
_FS_ABI = ((1, (1 << 13) - 1), (2, 1 << 13), (3, TRUNCATE), (5, IOCTL_DEV), (9, 1 << 16))

# Entries the sandbox needs to work at all, in the namespace mode (all private to the sandbox).
IMPLICIT_NAMESPACE = (
    PathGrant("/proc", False, "implicit"),
    *(PathGrant(f"/dev/{n}", True, "implicit") for n in ("null", "zero", "full", "random", "urandom", "tty")),
    PathGrant("/dev/pts", True, "implicit"),
    PathGrant("/dev/ptmx", True, "implicit"),
    PathGrant("/dev/shm", True, "implicit"),
    PathGrant("/run/stockade", False, "implicit"),
)
# In the landlock-only mode /dev/pts and /dev/shm are the host's: not granted implicitly.
IMPLICIT_LANDLOCK_ONLY = (
    PathGrant("/proc", False, "implicit"),
    *(PathGrant(f"/dev/{n}", True, "implicit") for n in ("null", "zero", "full", "random", "urandom", "tty")),
)


class Rights(Record):
    abi: int
    handled_fs: int
    read_only: int
    read_write: int
    scoped: int
    handled_net: int

    def for_path(self, writable: bool, is_dir: bool) -> int:
        rights = self.read_write if writable else self.read_only
        return rights if is_dir else rights & FILE_RIGHTS


def rights_for_abi(abi: int, *, restrict_tcp: bool = False) -> Rights:
    handled = 0
    for min_abi, bits in _FS_ABI:
        if abi >= min_abi:
            handled |= bits
    scoped = SCOPE_ABSTRACT_UNIX | SCOPE_SIGNAL if abi >= 6 else 0
    net = CONNECT_TCP if restrict_tcp and abi >= 4 else 0
    return Rights(abi, handled, READ_ONLY & handled, handled, scoped, net)


def preload() -> None:
    """Import landlockpy and bind it to libc now, before pivot_root hides the library paths.

    landlockpy 0.2.0 (pinned) resolves libc lazily through ctypes.util.find_library, which runs
    `ldconfig -p` (slow) and cannot work once the mount view is in place: hand it libc by soname.
    """
    import ctypes

    from .libc import soname_lookup

    with soname_lookup(), _without_submodule("landlockpy", "testing"):
        from landlockpy import _syscall

    if _syscall._libc is None:
        lib = ctypes.CDLL("libc.so.6", use_errno=True)
        lib.syscall.restype = ctypes.c_long
        lib.prctl.restype = ctypes.c_int
        _syscall._libc = lib


@contextlib.contextmanager
def _without_submodule(package: str, name: str) -> Iterator[None]:
    """While `package` is imported, its eagerly imported submodule `name` is an empty placeholder,
    removed afterwards (a later `import package.name` loads the real one).

    landlockpy's `testing` (probe helpers for test suites, which we do not use) imports
    dataclasses, inspect and pathlib: ~15 ms of the launcher's critical path on a small machine.
    """
    from ..standin import stand_in

    qualified = f"{package}.{name}"
    if package in sys.modules or qualified in sys.modules:
        yield
        return
    with stand_in(qualified, types.ModuleType(qualified, "placeholder (isolation/landlock.py)")):
        yield


def probe_abi() -> tuple[int, str]:
    """(ABI, "") when Landlock works, else (0, why not), as OpenShell's probe words it."""
    from landlockpy import _syscall

    try:
        return _syscall.abi_version(), ""
    except OSError as exc:
        reason = {
            errno.ENOSYS: "not implemented by this kernel",
            errno.EOPNOTSUPP: "not enabled at boot (add landlock to the lsm= kernel parameter)",
            errno.EPERM: "blocked (a container's seccomp profile)",
        }.get(exc.errno or 0, f"unavailable ({os.strerror(exc.errno or 0)})")
        return 0, reason


class LandlockSetup:
    """The prepared ruleset (None when Landlock is not applied) and what went into it."""

    __slots__ = ("abi", "unavailable", "rules", "skipped", "scoped", "tcp_port", "ruleset")

    def __init__(self, abi: int, unavailable: str = "", scoped: bool = False, ruleset: object | None = None) -> None:
        self.abi = abi
        self.unavailable = unavailable
        self.rules: list[str] = []
        self.skipped: list[tuple[str, str]] = []
        self.scoped = scoped
        self.tcp_port: int | None = None
        self.ruleset = ruleset

    def restrict(self) -> None:
        if self.ruleset is not None:
            self.ruleset.restrict(no_new_privs=True)  # type: ignore[attr-defined]


def prepare(grants: list[PathGrant], *, hard: bool, tcp_connect_port: int | None = None) -> LandlockSetup:
    abi, why = probe_abi()
    if tcp_connect_port is not None and abi < 4:
        raise SetupError("landlock", f"--isolation landlock needs Landlock ABI 4 or newer for TCP rules "
                         f"(this kernel: {why or f'ABI {abi}'})")
    if abi == 0:
        if hard:
            raise SetupError("landlock", f"Landlock unavailable in hard_requirement mode: {why}")
        return LandlockSetup(abi=0, unavailable=why)
    from landlockpy import AccessFS, AccessNet, Ruleset, Scope

    rights = rights_for_abi(abi, restrict_tcp=tcp_connect_port is not None)
    ruleset = Ruleset(handled_fs=AccessFS(rights.handled_fs), handled_net=AccessNet(rights.handled_net),
                      scoped=Scope(rights.scoped), best_effort=False)
    setup = LandlockSetup(abi=abi, scoped=bool(rights.scoped), ruleset=ruleset)
    for grant in grants:
        try:
            is_dir = stat.S_ISDIR(os.stat(grant.path).st_mode)
            ruleset.allow_path(grant.path, AccessFS(rights.for_path(grant.writable, is_dir)))
        except OSError as exc:
            reason = path_error_reason(exc.errno or 0)
            if hard:
                raise SetupError("landlock", f"Landlock path unavailable in hard_requirement mode: "
                                 f"{grant.path} ({reason}): {exc.strerror}", exc.errno or 0) from None
            setup.skipped.append((grant.path, reason))
            continue
        setup.rules.append(grant.path)
    if tcp_connect_port is not None:
        ruleset.allow_port(tcp_connect_port, AccessNet.CONNECT_TCP)
        setup.tcp_port = tcp_connect_port
    return setup
