"""The seccomp denylist: the table is complete, and the compiled filter says exactly the table."""

from __future__ import annotations

import errno
import re
import tempfile

import pytest

from stockade.isolation.seccomp import (
    DENYLIST, LIFTABLE, LOW32, build_filter, effective_denylist, load_pyseccomp,
)

# OpenShell's 21 unconditional blocks (reference/process.md §2.2).
OPENSHELL_UNCONDITIONAL = {
    "memfd_create", "ptrace", "bpf", "process_vm_readv", "process_vm_writev", "pidfd_open",
    "pidfd_getfd", "pidfd_send_signal", "io_uring_setup", "mount", "fsopen", "fsconfig", "fsmount",
    "fspick", "move_mount", "open_tree", "setns", "umount2", "pivot_root", "userfaultfd",
    "perf_event_open",
}
# What OpenShell misses (and its prelude list), all unconditional here.
OURS_UNCONDITIONAL = {
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "mount_setattr",
    "open_tree_attr", "io_uring_enter", "io_uring_register", "keyctl", "add_key", "request_key",
    "open_by_handle_at",
}
CONDITIONAL = {"execveat", "unshare", "clone", "seccomp", "socket", "prctl", "ioctl"}


def test_every_entry_has_a_reason_and_an_errno():
    for block in DENYLIST:
        assert block.reason.strip(), block
        expected = errno.ENOSYS if block.syscall == "clone3" else errno.EPERM
        assert block.errno == expected, block


def test_the_table_holds_openshells_list_and_what_it_misses():
    unconditional = {b.syscall for b in DENYLIST if not b.tests and b.syscall != "clone3"}
    assert unconditional == OPENSHELL_UNCONDITIONAL | OURS_UNCONDITIONAL
    assert {b.syscall for b in DENYLIST if b.tests} == CONDITIONAL
    assert [b for b in DENYLIST if b.syscall == "clone3"][0].tests == ()


def test_socket_families_and_ioctls_are_all_there():
    socket_domains = {t.value for b in DENYLIST if b.syscall == "socket" for t in b.tests if t.index == 0}
    assert socket_domains == {16, 17, 31, 40}  # NETLINK (non-route), PACKET, BLUETOOTH, VSOCK
    ioctls = {t.value for b in DENYLIST if b.syscall == "ioctl" for t in b.tests}
    assert ioctls == {0x5412, 0x541C}  # TIOCSTI, TIOCLINUX


def test_int_arguments_compare_only_the_low_32_bits():
    # The kernel truncates int arguments: a 64-bit compare could be passed with high bits set.
    for block in DENYLIST:
        for test in block.tests:
            if test.op == "masked_eq":
                assert test.mask <= LOW32, block
            else:  # "ne" on the full 64 bits blocks more, never less (fails closed)
                assert test.op == "ne", block


def test_only_memfd_create_can_be_lifted():
    lifted = effective_denylist(frozenset({"memfd_create"}))
    assert "memfd_create" not in {b.syscall for b in lifted}
    assert len(lifted) == len(DENYLIST) - 1
    assert LIFTABLE == {"memfd_create"}
    with pytest.raises(ValueError, match="ptrace"):
        effective_denylist(frozenset({"ptrace"}))


def _pfc_rules(flt) -> dict[int, set[int]]:
    """syscall number -> the errnos its rules answer, from libseccomp's pseudo filter code."""
    with tempfile.TemporaryFile("w+") as f:
        flt.export_pfc(f)
        f.seek(0)
        text = f.read()
    rules: dict[int, set[int]] = {}
    current = None
    for line in (raw.strip() for raw in text.splitlines()):
        m = re.match(r'# filter for syscall "[^"]*" \((\d+)\)', line)
        if m:
            current = int(m.group(1))
            rules[current] = set()
        elif line.startswith("# default action"):
            current = None
        elif current is not None and (m := re.match(r"action ERRNO\((\d+)\);", line)):
            rules[current].add(int(m.group(1)))
    assert "# invalid architecture action\naction ERRNO(1);" in text  # x32 and foreign arches
    return rules


def test_the_compiled_filter_lists_exactly_the_tables_syscalls():
    """Fails when the filter and the table disagree (the program itself is run below)."""
    sc = load_pyseccomp()
    expected: dict[int, set[int]] = {}
    for block in DENYLIST:
        nr = sc.resolve_syscall(sc.Arch.NATIVE, block.syscall)
        expected.setdefault(nr if nr >= 0 else 467, set()).add(block.errno)  # 467: open_tree_attr
    assert _pfc_rules(build_filter(DENYLIST)) == expected


def test_lifting_memfd_create_removes_it_from_the_filter():
    sc = load_pyseccomp()
    rules = _pfc_rules(build_filter(effective_denylist(frozenset({"memfd_create"}))))
    assert sc.resolve_syscall(sc.Arch.NATIVE, "memfd_create") not in rules


# -- the compiled program, run on synthetic syscalls (what the kernel would answer) ------------

import os  # noqa: E402

from tests.isolation import bpf  # noqa: E402

NATIVE = {"x86_64": bpf.AUDIT_ARCH_X86_64, "aarch64": bpf.AUDIT_ARCH_AARCH64}.get(os.uname().machine)


@pytest.fixture(scope="module")
def program():
    if NATIVE is None:
        pytest.skip(f"no audit arch constant for {os.uname().machine}")
    flt = build_filter(DENYLIST)
    with tempfile.TemporaryFile() as f:
        flt.export_bpf(f)
        f.seek(0)
        return bpf.parse(f.read())


def _answer(program, name: str, *args: int, arch: int | None = None) -> int:
    sc = load_pyseccomp()
    nr = name if isinstance(name, int) else sc.resolve_syscall(sc.Arch.NATIVE, name)
    if nr < 0:
        nr = 467
    return bpf.run(program, bpf.seccomp_data(nr, arch or NATIVE, args))


def _satisfying_args(block) -> tuple[int, ...]:
    args = [0] * 6
    for test in block.tests:
        args[test.index] = test.value if test.op == "masked_eq" else test.value + 1
    return tuple(args)


def test_every_table_entry_answers_its_errno(program):
    for block in DENYLIST:
        assert _answer(program, block.syscall, *_satisfying_args(block)) == bpf.RET_ERRNO | block.errno, block


def test_high_bits_do_not_bypass_int_argument_tests(program):
    high = 1 << 32
    for block in DENYLIST:
        args = list(_satisfying_args(block))
        for test in block.tests:
            if test.op == "masked_eq" and test.mask == LOW32:
                args[test.index] |= high
        assert _answer(program, block.syscall, *args) == bpf.RET_ERRNO | block.errno, block


def test_conditional_entries_allow_the_harmless_cases(program):
    allow = bpf.RET_ALLOW
    assert _answer(program, "socket", 2, 1, 0) == allow  # AF_INET
    assert _answer(program, "socket", 1, 1, 0) == allow  # AF_UNIX
    assert _answer(program, "socket", 16, 3, 0) == allow  # AF_NETLINK, NETLINK_ROUTE
    assert _answer(program, "socket", 16, 3, 9) == bpf.RET_ERRNO | errno.EPERM  # NETLINK_AUDIT
    assert _answer(program, "ioctl", 0, 0x5413) == allow  # TIOCGWINSZ
    assert _answer(program, "clone", 0x01200011) == allow  # fork's flags
    assert _answer(program, "unshare", 0x00020000) == allow  # CLONE_NEWNS alone (fails on caps)
    assert _answer(program, "execveat", 3, 0, 0, 0, 0) == allow  # by path
    assert _answer(program, "seccomp", 2) == allow  # SECCOMP_GET_ACTION_AVAIL
    assert _answer(program, "prctl", 38) == allow  # PR_SET_NO_NEW_PRIVS
    for name in ("read", "write", "openat", "execve", "mmap", "connect"):
        assert _answer(program, name) == allow, name


def test_x32_and_foreign_architectures_get_eperm(program):
    if NATIVE != bpf.AUDIT_ARCH_X86_64:
        pytest.skip("x32 exists on x86_64 only")
    assert _answer(program, 0x40000000 | 39) == bpf.RET_ERRNO | errno.EPERM  # x32 getpid
    assert _answer(program, 20, arch=bpf.AUDIT_ARCH_I386) == bpf.RET_ERRNO | errno.EPERM  # i386 getpid
