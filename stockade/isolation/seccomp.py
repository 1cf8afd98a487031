"""The seccomp denylist: one table, one reason per entry, compiled by libseccomp (default allow).

OpenShell's complete list (reference/process.md §2.2-2.5 and §9) plus what it misses. Every
argument test compares the low 32 bits where the kernel reads an `int`/`unsigned int`: the
kernel truncates such arguments, so a full 64-bit compare would let a caller slip past with
high bits set. Foreign architectures and the x32 ABI get EPERM (the bad-arch action), which a
test can observe, instead of killing the caller.

The table is pure data; `build_filter` turns it into a libseccomp filter in the parent, so the
child only calls `load()` (libseccomp must be resolved before Landlock or pivot_root).
"""

from __future__ import annotations

import errno
from types import ModuleType

from .record import Record

LOW32 = 0xFFFFFFFF

# Constants the tests below compare against (uapi headers).
AT_EMPTY_PATH = 0x1000
CLONE_NEWUSER = 0x10000000
SECCOMP_SET_MODE_FILTER = 1
PR_SET_SECCOMP = 22
AF_NETLINK, AF_PACKET, AF_BLUETOOTH, AF_VSOCK = 16, 17, 31, 40
NETLINK_ROUTE = 0
TIOCSTI, TIOCLINUX = 0x5412, 0x541C

# Syscalls newer than libseccomp 2.5 knows, by number (the same on x86_64 and aarch64).
_NEW_SYSCALLS = {"open_tree_attr": 467}

# Syscalls a policy may lift with `process.seccomp.allow`.
LIFTABLE = frozenset({"memfd_create"})


class ArgTest(Record):
    """One argument comparison; all tests of a Block must hold (AND)."""

    index: int
    op: str  # "masked_eq": (arg & mask) == value; "ne": arg != value (64-bit, fails closed)
    value: int
    mask: int = LOW32


class Block(Record):
    syscall: str
    reason: str
    tests: tuple[ArgTest, ...] = ()
    errno: int = errno.EPERM


def _eq(index: int, value: int) -> ArgTest:
    return ArgTest(index, "masked_eq", value)


def _bit(index: int, bit: int) -> ArgTest:
    return ArgTest(index, "masked_eq", bit, mask=bit)


DENYLIST: tuple[Block, ...] = (
    # OpenShell's unconditional blocks (§2.2).
    Block("memfd_create", "fileless executables sidestep Landlock's execute rules"),
    Block("ptrace", "inspecting or injecting into other processes"),
    Block("bpf", "loading BPF programs"),
    Block("process_vm_readv", "reading another process's memory"),
    Block("process_vm_writev", "writing another process's memory"),
    Block("pidfd_open", "process handles that outlive pid checks"),
    Block("pidfd_getfd", "stealing another process's file descriptors"),
    Block("pidfd_send_signal", "signalling through a pidfd"),
    Block("io_uring_setup", "io_uring bypasses seccomp for the operations it queues"),
    Block("mount", "changing the mount view"),
    Block("fsopen", "new mount API"),
    Block("fsconfig", "new mount API"),
    Block("fsmount", "new mount API"),
    Block("fspick", "new mount API"),
    Block("move_mount", "new mount API"),
    Block("open_tree", "new mount API: cloning mounts"),
    Block("setns", "entering other namespaces"),
    Block("umount2", "uncovering hidden paths"),
    Block("pivot_root", "changing the root"),
    Block("userfaultfd", "a classic kernel-exploit primitive"),
    Block("perf_event_open", "side channels and a large attack surface"),
    # OpenShell's conditional blocks (§2.3, §2.4, §9).
    Block("execveat", "fd-only exec (AT_EMPTY_PATH) runs files Landlock never saw by path",
          (_bit(4, AT_EMPTY_PATH),)),
    Block("unshare", "new user namespaces regain capabilities", (_bit(0, CLONE_NEWUSER),)),
    Block("clone", "new user namespaces regain capabilities", (_bit(0, CLONE_NEWUSER),)),
    Block("clone3", "flags sit behind a pointer BPF cannot read; ENOSYS makes glibc fall back to clone",
          errno=errno.ENOSYS),
    Block("seccomp", "stacking filters (a filter could hide our denials from later checks)",
          (_eq(0, SECCOMP_SET_MODE_FILTER),)),
    Block("socket", "raw link-layer access", (_eq(0, AF_PACKET),)),
    Block("socket", "bluetooth sockets", (_eq(0, AF_BLUETOOTH),)),
    Block("socket", "vsock reaches the hypervisor and other VMs", (_eq(0, AF_VSOCK),)),
    Block("socket", "netlink other than NETLINK_ROUTE (audit, uevents, netfilter...)",
          (_eq(0, AF_NETLINK), ArgTest(2, "ne", NETLINK_ROUTE))),
    # Supervisor-prelude list (§9): module loading and kexec.
    Block("init_module", "loading kernel modules"),
    Block("finit_module", "loading kernel modules"),
    Block("delete_module", "unloading kernel modules"),
    Block("kexec_load", "replacing the kernel"),
    Block("kexec_file_load", "replacing the kernel"),
    # What OpenShell misses.
    Block("prctl", "PR_SET_SECCOMP is the other door to stacking filters", (_eq(0, PR_SET_SECCOMP),)),
    Block("mount_setattr", "new mount API: changing mount flags"),
    Block("open_tree_attr", "new mount API (6.15): open_tree with mount_setattr"),
    Block("io_uring_enter", "io_uring (an inherited ring would bypass seccomp)"),
    Block("io_uring_register", "io_uring (an inherited ring would bypass seccomp)"),
    Block("keyctl", "kernel keyrings are shared beyond the sandbox"),
    Block("add_key", "kernel keyrings are shared beyond the sandbox"),
    Block("request_key", "kernel keyrings are shared beyond the sandbox"),
    Block("ioctl", "TIOCSTI types into the user's terminal", (_eq(1, TIOCSTI),)),
    Block("ioctl", "TIOCLINUX can also push input into a virtual console", (_eq(1, TIOCLINUX),)),
    Block("open_by_handle_at", "opens files by handle, bypassing path checks (shocker)"),
)


def effective_denylist(allow: frozenset[str] = frozenset()) -> tuple[Block, ...]:
    """The table minus what the policy lifted (only LIFTABLE syscalls may be lifted)."""
    unknown = set(allow) - LIFTABLE
    if unknown:
        raise ValueError(f"process.seccomp.allow may only list {sorted(LIFTABLE)}, not {sorted(unknown)}")
    return tuple(b for b in DENYLIST if b.syscall not in allow)


def load_pyseccomp() -> ModuleType:
    """Import pyseccomp with libc and libseccomp resolved by soname (see libc.soname_lookup):
    its import-time find_library would run `ldconfig -p`, and fail after pivot_root."""
    from .libc import soname_lookup

    with soname_lookup():
        try:
            import pyseccomp
        except RuntimeError as exc:  # "Unable to find libseccomp"
            raise OSError(errno.ENOENT, f"{exc} (install libseccomp2)") from None
    return pyseccomp


def _syscall_number(sc: ModuleType, name: str) -> int | str:
    if sc.resolve_syscall(sc.Arch.NATIVE, name) >= 0:
        return name
    if name in _NEW_SYSCALLS:
        return _NEW_SYSCALLS[name]
    raise OSError(errno.ENOSYS, f"libseccomp does not know the syscall {name!r}")


def build_filter(blocks: tuple[Block, ...]):  # -> pyseccomp.SyscallFilter
    """Compile the denylist: default allow, each entry answers its errno, bad arch gets EPERM."""
    sc = load_pyseccomp()
    flt = sc.SyscallFilter(sc.ALLOW)
    flt.set_attr(sc.Attr.ACT_BADARCH, sc.ERRNO(errno.EPERM))
    for block in blocks:
        args = [
            sc.Arg(t.index, sc.MASKED_EQ, t.mask, t.value) if t.op == "masked_eq"
            else sc.Arg(t.index, sc.NE, t.value)
            for t in block.tests
        ]
        flt.add_rule(sc.ERRNO(block.errno), _syscall_number(sc, block.syscall), *args)
    return flt
