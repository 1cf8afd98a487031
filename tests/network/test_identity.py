"""Binary identity: real processes, real sockets, the real procfs (no mocks)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade.network.identity import MAX_ANCESTORS, IdentityResolver
from stockade.network.procfs import (
    IdentityError,
    argv_paths,
    find_socket_inode,
    parse_ppid,
    strip_deleted,
    tcp_address_hex,
    tcp_lookup_keys,
)
from stockade.network.sockdiag import open_diag_socket
from stockade.network.tofu import BinaryHasher, sha256_fd

PYTHON = os.readlink("/proc/self/exe")  # the test interpreter, as the kernel names it
SH = os.path.realpath(shutil.which("sh") or "/bin/sh")
SLEEP = os.path.realpath(shutil.which("sleep") or "/bin/sleep")
CURL = shutil.which("curl")
HELLO_SHA256 = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"

# A client: connect, then (mode) hold the socket until stdin closes, exec a program that
# inherits it, share it with a child program, or share it with a forked copy of itself. Prints
# "ready" (and the pid of a second holder, if any) once the socket is in place.
CLIENT = textwrap.dedent("""
    import os, socket, subprocess, sys
    host, port, family, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    rest = sys.argv[5:]
    fam = socket.AF_INET6 if family == "6" else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.connect((host, port))
    if mode == "exec":
        os.set_inheritable(s.fileno(), True)
        print("ready", flush=True)
        os.execv(rest[0], rest)
    if mode == "share":
        child = subprocess.Popen(rest, pass_fds=[s.fileno()])
        print("ready", child.pid, flush=True)
    elif mode == "fork":
        pid = os.fork()
        if pid == 0:
            sys.stdin.read()
            os._exit(0)
        print("ready", pid, flush=True)
    else:
        print("ready", flush=True)
    sys.stdin.read()
""")


def sha256_of(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def proc_fd() -> Iterator[int]:
    fd = os.open("/proc", os.O_PATH | os.O_DIRECTORY)
    yield fd
    os.close(fd)


@pytest.fixture(params=["diag", "procfs"])
def resolver(request: pytest.FixtureRequest, proc_fd: int) -> IdentityResolver:
    """Both ways to find the socket: sock_diag (fast) and the procfs TCP tables."""
    diag = None if request.param == "diag" else False
    r = IdentityResolver(proc_fd, root_pid=os.getpid(), diag=diag)
    assert (r.diag is not None) == (request.param == "diag")
    return r


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(10)
    yield srv
    srv.close()


@contextlib.contextmanager
def spawn(argv: list[str], **kwargs: object) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, **kwargs  # type: ignore
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream:
                stream.close()


@contextlib.contextmanager
def client(srv: socket.socket, *exe: str, family: str = "4", host: str | None = None,
           prefix: tuple[str, ...] = ()) -> Iterator[tuple[subprocess.Popen[str], socket.socket,
                                                          tuple[str, int], tuple[str, int]]]:
    """A python client (optionally exec'ing `exe` with the socket) and our accepted end."""
    host = host or srv.getsockname()[0]
    mode = "exec" if exe else "hold"
    argv = [*prefix, sys.executable, "-c", CLIENT, host, str(srv.getsockname()[1]), family, mode,
            *exe]
    with spawn(argv) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        conn, peer = srv.accept()
        with conn:
            if exe:
                wait_for_exe(proc.pid, exe[0])
            yield proc, conn, peer[:2], conn.getsockname()[:2]


def wait_for_exe(pid: int, path: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/exe").startswith(path):
                return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} never exec'd {path}")


# --------------------------------------------------------------------------------------------
# sans-IO pieces


def test_sha256_of_hello_world(tmp_path: Path) -> None:
    path = tmp_path / "hello"
    path.write_bytes(b"hello world")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert sha256_fd(fd) == HELLO_SHA256
    finally:
        os.close(fd)


def test_sha256_of_a_file_larger_than_one_chunk(tmp_path: Path) -> None:
    data = os.urandom(200_000)
    (tmp_path / "big").write_bytes(data)
    fd = os.open(tmp_path / "big", os.O_RDONLY)
    try:
        assert sha256_fd(fd) == hashlib.sha256(data).hexdigest()
    finally:
        os.close(fd)


@pytest.mark.skipif(sys.byteorder != "little", reason="expected values are little-endian")
def test_procfs_address_spelling() -> None:
    assert tcp_address_hex("127.0.0.1", 3128) == "0100007F:0C38"
    assert tcp_address_hex("10.0.0.2", 443) == "0200000A:01BB"
    assert tcp_address_hex("::1", 80) == "00000000000000000000000001000000:0050"
    assert tcp_address_hex("::ffff:127.0.0.1", 1) == "0000000000000000FFFF00000100007F:0001"


def test_lookup_keys_cover_both_tables_for_ipv4() -> None:
    keys = tcp_lookup_keys(("127.0.0.1", 5000), ("127.0.0.1", 3128))
    assert [k[0] for k in keys] == ["tcp", "tcp6"]
    # An IPv4-mapped peer (dual-stack listener) gives the same rows.
    assert tcp_lookup_keys(("::ffff:127.0.0.1", 5000), ("::ffff:127.0.0.1", 3128)) == keys
    assert [k[0] for k in tcp_lookup_keys(("::1", 5000), ("::1", 3128))] == ["tcp6"]
    with pytest.raises(IdentityError) as err:
        tcp_lookup_keys(("::1", 5000), ("127.0.0.1", 3128))
    assert err.value.code == "bad_address"
    with pytest.raises(IdentityError) as err:
        tcp_lookup_keys(("localhost", 5000), ("127.0.0.1", 3128))
    assert err.value.code == "bad_address"


TABLE = (
    b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    b"timeout inode\n"
    b"   0: 0100007F:0C38 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0"
    b"        0 1111 1 0000000000000000 100 0 0 10 0\n"
    # the proxy's accepted end: local = server, remote = client
    b"   1: 0100007F:0C38 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0"
    b"        0 2222 1 0000000000000000 20 4 30 10 -1\n"
    # the client's end (what we look for)
    b"   2: 0100007F:9C40 0100007F:0C38 01 00000000:00000000 00:00000000 00000000  1000"
    b"        0 3333 1 0000000000000000 20 4 30 10 -1\n"
    # same client port to another server: must not match (full 4-tuple)
    b"   3: 0100007F:9C41 0200000A:01BB 01 00000000:00000000 00:00000000 00000000  1000"
    b"        0 4444 1 0000000000000000 20 4 30 10 -1\n"
    b"   4: 0100007F:9C42 0100007F:0C38 06 00000000:00000000 03:00000000 00000000     0"
    b"        0 0 3 0000000000000000\n"
)


def test_find_socket_inode_matches_the_full_four_tuple() -> None:
    assert find_socket_inode(TABLE, "0100007F:9C40", "0100007F:0C38") == 3333
    assert find_socket_inode(TABLE, "0100007F:0C38", "0100007F:9C40") == 2222
    assert find_socket_inode(TABLE, "0100007F:9C41", "0100007F:0C38") is None
    assert find_socket_inode(TABLE, "0100007F:9C42", "0100007F:0C38") is None  # TIME_WAIT
    assert find_socket_inode(TABLE, "0100007F:0C38", "00000000:0000") is None  # LISTEN


def test_small_parsers() -> None:
    assert parse_ppid(b"Name:\tsh\nUmask:\t0022\nState:\tS\nTgid:\t7\nNgid:\t0\nPid:\t7\n"
                      b"PPid:\t1\nTracerPid:\t0\n") == 1
    with pytest.raises(ValueError):
        parse_ppid(b"Name:\tsh\n")
    assert argv_paths(b"python3\0/tmp/x.py\0--flag\0/etc/conf\0") == ["/tmp/x.py", "/etc/conf"]
    assert strip_deleted("/tmp/a (deleted)", True) == ("/tmp/a", True)
    assert strip_deleted("/tmp/a (deleted)", False) == ("/tmp/a (deleted)", False)
    assert strip_deleted("/tmp/a", True) == ("/tmp/a", False)


# --------------------------------------------------------------------------------------------
# TOFU hasher (OpenShell cases 99/100)


def opener(path: Path):  # noqa: ANN201
    return lambda: os.open(path, os.O_RDONLY)


def test_tofu_first_use_then_cached(tmp_path: Path) -> None:
    path = tmp_path / "bin"
    path.write_bytes(b"hello world")
    hasher = BinaryHasher()
    assert hasher.verify(str(path), opener(path)) == HELLO_SHA256
    assert hasher.verify(str(path), opener(path)) == HELLO_SHA256
    assert hasher.hash_count == 1  # unchanged fingerprint: no rehash
    assert hasher.trusted(str(path)) == HELLO_SHA256


def test_tofu_touched_identical_content_rehashes_once(tmp_path: Path) -> None:
    path = tmp_path / "bin"
    path.write_bytes(b"hello world")
    hasher = BinaryHasher()
    hasher.verify(str(path), opener(path))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    assert hasher.verify(str(path), opener(path)) == HELLO_SHA256
    assert hasher.verify(str(path), opener(path)) == HELLO_SHA256
    assert hasher.hash_count == 2


def test_tofu_changed_content_stays_denied(tmp_path: Path) -> None:
    path = tmp_path / "bin"
    path.write_bytes(b"hello world")
    hasher = BinaryHasher()
    hasher.verify(str(path), opener(path))
    path.write_bytes(b"hello WORLD")
    for _ in range(3):
        with pytest.raises(IdentityError) as err:
            hasher.verify(str(path), opener(path))
        assert err.value.code == "binary_changed"
        assert "integrity violation" in err.value.message
    assert hasher.hash_count == 2  # the refused fingerprint is remembered, not rehashed
    assert hasher.trusted(str(path)) == HELLO_SHA256  # the trusted hash is never replaced
    path.write_bytes(b"hello world")  # restoring the content restores access
    assert hasher.verify(str(path), opener(path)) == HELLO_SHA256


def test_tofu_changed_content_with_restored_mtime_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "bin"
    path.write_bytes(b"hello world")
    st = path.stat()
    hasher = BinaryHasher()
    hasher.verify(str(path), opener(path))
    path.write_bytes(b"jello world")  # same length
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # ctime still moves
    with pytest.raises(IdentityError) as err:
        hasher.verify(str(path), opener(path))
    assert err.value.code == "binary_changed"


def test_tofu_unopenable_executable(tmp_path: Path) -> None:
    with pytest.raises(IdentityError) as err:
        BinaryHasher().verify(str(tmp_path / "missing"), opener(tmp_path / "missing"))
    assert err.value.code == "exe_unreadable"


# --------------------------------------------------------------------------------------------
# Real clients on the host (root_pid = this test process)


def test_python_client(resolver: IdentityResolver, listener: socket.socket) -> None:
    with client(listener) as (proc, _conn, peer, local):
        ident = resolver.resolve(peer, local)
    assert ident.pid == proc.pid
    assert ident.binary == PYTHON
    assert ident.sha256 == sha256_of(PYTHON)
    assert ident.ancestors == (PYTHON,)
    assert ident.ancestor_pids == (os.getpid(),)  # stops at root_pid, included
    assert ident.holders == (proc.pid,)
    assert not ident.deleted


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl_under_sh(resolver: IdentityResolver, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    script = f"{CURL} -s --max-time 20 http://127.0.0.1:{port}/ -o /dev/null; true"
    with spawn([SH, "-c", script]) as sh:
        conn, peer = listener.accept()
        with conn:
            ident = resolver.resolve(peer, conn.getsockname())
    assert ident.binary == os.path.realpath(CURL)  # type: ignore[arg-type]
    assert ident.ancestors == (SH, PYTHON)
    assert ident.ancestor_pids == (sh.pid, os.getpid())
    assert ident.sha256 == sha256_of(os.path.realpath(CURL))  # type: ignore[arg-type]


def test_ancestors_stop_at_root_pid(proc_fd: int, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    script = f"{sys.executable} -c '{CLIENT}' 127.0.0.1 {port} 4 hold; true"
    with spawn([SH, "-c", script]) as sh:
        assert sh.stdout is not None and sh.stdout.readline().strip() == "ready"
        conn, peer = listener.accept()
        with conn:
            local = conn.getsockname()
            # The direct parent as root: exactly one ancestor (OpenShell case 100).
            ident = IdentityResolver(proc_fd, root_pid=sh.pid).resolve(peer, local)
            assert ident.ancestors == (SH,)
            assert ident.ancestor_pids == (sh.pid,)
            full = IdentityResolver(proc_fd, root_pid=os.getpid()).resolve(peer, local)
            assert full.ancestors == (SH, PYTHON)


def test_a_trusted_root_is_neither_scanned_nor_an_ancestor(proc_fd: int, listener: socket.socket) -> None:
    """stockade's own init: non-dumpable (a rootless supervisor cannot read its fd table) and
    running stockade's interpreter, which must not become every process's granted ancestor."""
    port = listener.getsockname()[1]
    script = f"{sys.executable} -c '{CLIENT}' 127.0.0.1 {port} 4 hold; true"
    with spawn([SH, "-c", script]) as sh:
        assert sh.stdout is not None and sh.stdout.readline().strip() == "ready"
        conn, peer = listener.accept()
        with conn:
            local = conn.getsockname()
            ident = IdentityResolver(proc_fd, root_pid=sh.pid, trusted_root=True).resolve(peer, local)
            assert (ident.binary, ident.ancestors, ident.ancestor_pids) == (PYTHON, (), ())
    # A socket that only the root holds has no owner the policy could be asked about.
    own = socket.create_connection(listener.getsockname()[:2])
    conn, peer = listener.accept()
    with own, conn:
        local = conn.getsockname()
        assert IdentityResolver(proc_fd, root_pid=os.getpid()).resolve(peer, local).binary == PYTHON
        with pytest.raises(IdentityError) as err:
            IdentityResolver(proc_fd, root_pid=os.getpid(), trusted_root=True).resolve(peer, local)
        assert err.value.code == "no_owner"


def test_an_added_root_is_trusted_like_init_while_it_lives(proc_fd: int, listener: socket.socket) -> None:
    """A `stockade exec` process in the landlock-only mode: outside init's tree, its subtree is
    served once it is added, with the walk stopping below it, and only while it lives."""
    port = listener.getsockname()[1]
    script = f"{sys.executable} -c '{CLIENT}' 127.0.0.1 {port} 4 hold; true"
    init = subprocess.Popen([SLEEP, "60"])  # the sandbox's init: another tree
    try:
        with spawn([SH, "-c", script]) as sh:
            assert sh.stdout is not None and sh.stdout.readline().strip() == "ready"
            conn, peer = listener.accept()
            with conn:
                local = conn.getsockname()
                r = IdentityResolver(proc_fd, root_pid=init.pid, trusted_root=True)
                with pytest.raises(IdentityError) as err:
                    r.resolve(peer, local)
                assert err.value.code == "outside_root"
                assert not r.below_root(sh.pid)
                token = r.add_root(sh.pid, os.pidfd_open(sh.pid))
                ident = r.resolve(peer, local)
                assert (ident.binary, ident.ancestors, ident.ancestor_pids) == (PYTHON, (), ())
                assert r.is_root(sh.pid) and not r.below_root(sh.pid)  # a root runs outside
                assert r.below_root(ident.pid) and not r.below_root(os.getpid())
                r.drop_root(token)
                with pytest.raises(IdentityError) as err:
                    r.resolve(peer, local)
                assert err.value.code == "outside_root"
                # Added again, but from a process that is gone: its pid no longer counts.
                gone = subprocess.Popen(["true"])
                gone_fd = os.pidfd_open(gone.pid)
                gone.wait()
                r.add_root(sh.pid, gone_fd)
                assert not r.is_root(sh.pid) and r.root_count() == 1
                with pytest.raises(IdentityError) as err:
                    r.resolve(peer, local)
                assert err.value.code == "outside_root"
    finally:
        init.kill()
        init.wait()


def test_an_added_root_is_not_scanned_and_its_ancestors_do_not_count(proc_fd: int,
                                                                       listener: socket.socket) -> None:
    """The root never owns a socket (a socket only it holds has no owner), and what is above it
    (the user's shell, the terminal) is never an ancestor."""
    own = socket.create_connection(listener.getsockname()[:2])
    conn, peer = listener.accept()
    init = subprocess.Popen([SLEEP, "60"])
    try:
        with own, conn:
            local = conn.getsockname()
            r = IdentityResolver(proc_fd, root_pid=init.pid, trusted_root=True)
            with pytest.raises(IdentityError) as err:
                r.resolve(peer, local)
            assert err.value.code == "outside_root"  # us, outside init's tree
            r.add_root(os.getpid(), os.pidfd_open(os.getpid()))
            with pytest.raises(IdentityError) as err:
                r.resolve(peer, local)
            assert err.value.code == "no_owner"
        with client(listener) as (proc, _conn, cpeer, clocal):
            ident = r.resolve(cpeer, clocal)
            assert (ident.pid, ident.ancestors) == (proc.pid, ())
    finally:
        init.kill()
        init.wait()


def test_process_outside_the_root_tree_is_refused(proc_fd: int, listener: socket.socket) -> None:
    with client(listener) as (_proc, _conn, peer, local):
        other = subprocess.Popen([SLEEP, "30"])  # a sibling tree: not an ancestor of the client
        try:
            with pytest.raises(IdentityError) as err:
                IdentityResolver(proc_fd, root_pid=other.pid).resolve(peer, local)
        finally:
            other.kill()
            other.wait()
    assert err.value.code == "outside_root"


DEEP_CLIENT = """
import os, socket, sys
for _ in range(int(sys.argv[2])):  # each level forks the next and waits for it
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        os._exit(0)
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("depth", [MAX_ANCESTORS - 2, MAX_ANCESTORS + 6])
def test_a_chain_deeper_than_the_cap_is_refused(proc_fd: int, listener: socket.socket, depth: int) -> None:
    """Unwalked ancestors would leave descent from the root unproven (an attacker's way to look
    like the agent's tree on the host): past the cap, deny."""
    port = listener.getsockname()[1]
    with spawn([PYTHON, "-c", DEEP_CLIENT, str(port), str(depth)]) as top:
        assert top.stdout is not None and top.stdout.readline().strip() == "ready"
        conn, peer = listener.accept()
        with conn:
            resolver = IdentityResolver(proc_fd, root_pid=os.getpid())
            if depth < MAX_ANCESTORS:
                assert len(resolver.resolve(peer, conn.getsockname()).ancestors) == depth + 1
                return
            with pytest.raises(IdentityError) as err:
                resolver.resolve(peer, conn.getsockname())
    assert err.value.code == "too_deep"


def test_cmdline_paths_are_collected_for_logs(resolver: IdentityResolver,
                                              listener: socket.socket, tmp_path: Path) -> None:
    script = tmp_path / "agent.py"
    script.write_text(CLIENT)
    port = listener.getsockname()[1]
    with spawn([sys.executable, str(script), "127.0.0.1", str(port), "4", "hold"]) as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        conn, peer = listener.accept()
        with conn:
            ident = resolver.resolve(peer, conn.getsockname())
    assert str(script) in ident.cmdline_paths
    assert ident.binary not in ident.cmdline_paths


def test_ipv6_client(resolver: IdentityResolver) -> None:
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        srv.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    srv.listen(4)
    srv.settimeout(10)
    with srv, client(srv, family="6") as (proc, _conn, peer, local):
        assert peer[0] == "::1"
        ident = resolver.resolve(peer, local)
    assert (ident.pid, ident.binary) == (proc.pid, PYTHON)


def test_ipv4_client_on_a_dual_stack_listener(resolver: IdentityResolver) -> None:
    """The accepted peer is ::ffff:127.0.0.1 while the client's socket is plain AF_INET."""
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv.bind(("::", 0))
    srv.listen(4)
    srv.settimeout(10)
    with srv, client(srv, family="4", host="127.0.0.1") as (proc, _conn, peer, local):
        assert peer[0] == "::ffff:127.0.0.1"
        ident = resolver.resolve(peer, local)
    assert ident.pid == proc.pid


def test_ipv6_socket_connecting_to_a_mapped_ipv4_listener(resolver: IdentityResolver,
                                                          listener: socket.socket) -> None:
    """The client's row is in tcp6 with mapped addresses; the proxy sees plain IPv4."""
    with client(listener, family="6", host="::ffff:127.0.0.1") as (proc, _conn, peer, local):
        assert peer[0] == "127.0.0.1"
        ident = resolver.resolve(peer, local)
    assert ident.pid == proc.pid


def test_unknown_connection(resolver: IdentityResolver, listener: socket.socket) -> None:
    with pytest.raises(IdentityError) as err:
        resolver.resolve(("127.0.0.1", 1), listener.getsockname())
    assert err.value.code == "no_socket"


def test_socket_closed_by_its_owner(resolver: IdentityResolver, listener: socket.socket) -> None:
    with client(listener) as (proc, _conn, peer, local):
        proc.kill()
        proc.wait()
        with pytest.raises(IdentityError) as err:
            resolver.resolve(peer, local)
    assert err.value.code in ("no_socket", "no_owner")


# --------------------------------------------------------------------------------------------
# Shared sockets


def held_twice(srv: socket.socket, mode: str, *rest: str):  # noqa: ANN201
    port = srv.getsockname()[1]
    return spawn([sys.executable, "-c", CLIENT, "127.0.0.1", str(port), "4", mode, *rest])


def test_socket_shared_with_another_binary_is_ambiguous(resolver: IdentityResolver,
                                                        listener: socket.socket) -> None:
    with held_twice(listener, "share", SLEEP, "60") as proc:
        assert proc.stdout is not None
        word, child = proc.stdout.readline().split()
        wait_for_exe(int(child), SLEEP)
        conn, peer = listener.accept()
        with conn, pytest.raises(IdentityError) as err:
            resolver.resolve(peer, conn.getsockname())
        os.kill(int(child), 9)
    assert err.value.code == "ambiguous_owner"
    assert SLEEP in err.value.message and PYTHON in err.value.message


def test_socket_shared_after_fork_with_the_same_binary(resolver: IdentityResolver,
                                                       listener: socket.socket) -> None:
    with held_twice(listener, "fork") as proc:
        assert proc.stdout is not None
        word, child = proc.stdout.readline().split()
        conn, peer = listener.accept()
        with conn:
            ident = resolver.resolve(peer, conn.getsockname())
        os.kill(int(child), 9)
    assert set(ident.holders) == {proc.pid, int(child)}
    # The shallowest holder, with only the ancestors every holder has.
    assert ident.pid == proc.pid
    assert ident.ancestors == (PYTHON,)


SENDER = textwrap.dedent("""
    import os, socket, sys
    unix = socket.socket(fileno=int(sys.argv[3]))
    s = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
    socket.send_fds(unix, [b"x"], [s.fileno()])
    print("ready", flush=True)
    sys.stdin.read()
""")
RECEIVER = textwrap.dedent("""
    import socket, sys
    unix = socket.socket(fileno=int(sys.argv[1]))
    _, fds, _, _ = socket.recv_fds(unix, 1, 1)
    print("got", fds[0], flush=True)
    sys.stdin.read()
""")


def test_same_binary_in_two_subtrees_keeps_only_common_ancestors(
    resolver: IdentityResolver, listener: socket.socket
) -> None:
    """A python under sh passes its socket to a python outside sh: sh must not count."""
    a, b = socket.socketpair()
    with a, b, spawn([sys.executable, "-c", RECEIVER, str(b.fileno())],
                     pass_fds=[b.fileno()]) as receiver:
        port = listener.getsockname()[1]
        script = f"{sys.executable} -c '{SENDER}' x {port} {a.fileno()}; true"
        with spawn([SH, "-c", script], pass_fds=[a.fileno()]) as sh:
            assert sh.stdout is not None and sh.stdout.readline().strip() == "ready"
            assert receiver.stdout is not None
            assert receiver.stdout.readline().startswith("got")
            conn, peer = listener.accept()
            with conn:
                ident = resolver.resolve(peer, conn.getsockname())
    assert len(ident.holders) == 2
    assert ident.pid == receiver.pid  # the shallower holder
    assert ident.binary == PYTHON
    assert ident.ancestors == (PYTHON,)
    assert SH not in ident.ancestors


HIDDEN_THREAD = textwrap.dedent("""
    import ctypes, os, socket, subprocess, sys, threading
    libc = ctypes.CDLL(None, use_errno=True)
    CLONE_FILES = 0x400
    def hidden():
        # This thread gets a private fd table: /proc/<pid>/fd (the leader's) never shows it.
        assert libc.unshare(CLONE_FILES) == 0, ctypes.get_errno()
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
        child = subprocess.Popen([sys.argv[2], "60"], pass_fds=[s.fileno()])
        print(child.pid, flush=True)
        sys.stdin.read()
        child.kill()
    t = threading.Thread(target=hidden)
    t.start()
    t.join()
""")


def test_socket_hidden_in_a_private_thread_fd_table(proc_fd: int,
                                                    listener: socket.socket) -> None:
    """Without the thread scan the socket would pass for sleep's alone: a real bypass."""
    port = listener.getsockname()[1]
    with spawn([sys.executable, "-c", HIDDEN_THREAD, str(port), SLEEP]) as proc:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        wait_for_exe(child, SLEEP)
        conn, peer = listener.accept()
        with conn:
            local = conn.getsockname()
            blind = IdentityResolver(proc_fd, root_pid=os.getpid(), scan_threads=False)
            assert blind.resolve(peer, local).binary == SLEEP
            with pytest.raises(IdentityError) as err:
                IdentityResolver(proc_fd, root_pid=os.getpid()).resolve(peer, local)
    assert err.value.code == "ambiguous_owner"


# --------------------------------------------------------------------------------------------
# Replaced, touched and deleted binaries


@pytest.fixture
def own_sleep(tmp_path: Path) -> Path:
    """A private copy of sleep with 16 bytes of trailing data we can flip (ELF ignores it)."""
    path = tmp_path / "agent-bin"
    path.write_bytes(Path(SLEEP).read_bytes() + b"A" * 16)
    path.chmod(0o755)
    return path


def test_replaced_binary_is_denied(resolver: IdentityResolver, listener: socket.socket,
                                   own_sleep: Path) -> None:
    original = own_sleep.read_bytes()
    with client(listener, str(own_sleep), "60") as (_p, _c, peer, local):
        first = resolver.resolve(peer, local)
    assert first.binary == str(own_sleep)
    assert first.sha256 == hashlib.sha256(original).hexdigest()

    own_sleep.write_bytes(original[:-16] + b"B" * 16)  # overwritten in place
    with client(listener, str(own_sleep), "60") as (_p, _c, peer, local):
        with pytest.raises(IdentityError) as err:
            resolver.resolve(peer, local)
    assert err.value.code == "binary_changed"

    replacement = own_sleep.with_name("new")  # replaced by rename: a new inode
    replacement.write_bytes(original[:-16] + b"C" * 16)
    replacement.chmod(0o755)
    replacement.rename(own_sleep)
    with client(listener, str(own_sleep), "60") as (_p, _c, peer, local):
        with pytest.raises(IdentityError) as err:
            resolver.resolve(peer, local)
    assert err.value.code == "binary_changed"


def test_touched_identical_binary_is_allowed_with_one_rehash(
    resolver: IdentityResolver, listener: socket.socket, own_sleep: Path
) -> None:
    hasher = resolver.hasher
    with client(listener, str(own_sleep), "60") as (_p, _c, peer, local):
        resolver.resolve(peer, local)
        before = hasher.hash_count
        st = own_sleep.stat()
        os.utime(own_sleep, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
        resolver.resolve(peer, local)
        resolver.resolve(peer, local)
    assert hasher.hash_count == before + 1


def test_deleted_binary_is_hashed_through_the_process(
    resolver: IdentityResolver, listener: socket.socket, own_sleep: Path
) -> None:
    expected = sha256_of(own_sleep)
    with client(listener, str(own_sleep), "60") as (_p, _c, peer, local):
        own_sleep.unlink()
        ident = resolver.resolve(peer, local)
        assert (ident.binary, ident.deleted, ident.sha256) == (str(own_sleep), True, expected)
        # Another file now takes the path: the old process still proves its old content,
        # a process of the new file is refused.
        own_sleep.write_bytes(Path(SLEEP).read_bytes() + b"Z" * 16)
        own_sleep.chmod(0o755)
        assert resolver.resolve(peer, local).sha256 == expected
    with client(listener, str(own_sleep), "60") as (_p, _c, peer, local):
        with pytest.raises(IdentityError) as err:
            resolver.resolve(peer, local)
    assert err.value.code == "binary_changed"


def test_a_file_really_named_deleted_keeps_its_name(resolver: IdentityResolver,
                                                    listener: socket.socket,
                                                    own_sleep: Path) -> None:
    odd = own_sleep.with_name("agent-bin (deleted)")
    own_sleep.rename(odd)
    with client(listener, str(odd), "60") as (_p, _c, peer, local):
        ident = resolver.resolve(peer, local)
    assert (ident.binary, ident.deleted) == (str(odd), False)


# --------------------------------------------------------------------------------------------
# Sandbox shape: the pid namespace's own procfs, and a private network namespace


def needs_root() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("creating pid/net namespaces here needs root and unshare(1)")


def ns_init(unshare_pid: int) -> int:
    """The child that `unshare --fork` made: PID 1 of the new pid namespace."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.01)
    raise AssertionError("unshare did not fork")


def test_sandbox_procfs_pid_namespace(listener: socket.socket) -> None:
    """Resolved in sandbox pid terms; ancestors end at the sandbox's init, never at us."""
    needs_root()
    port = listener.getsockname()[1]
    script = f"{sys.executable} -c '{CLIENT}' 127.0.0.1 {port} 4 hold; true"
    argv = ["unshare", "--pid", "--fork", "--mount", "--mount-proc", SH, "-c", script]
    with spawn(argv) as unshare:
        assert unshare.stdout is not None and unshare.stdout.readline().strip() == "ready"
        init = ns_init(unshare.pid)
        sandbox_proc = os.open(f"/proc/{init}/root/proc", os.O_PATH | os.O_DIRECTORY)
        try:
            conn, peer = listener.accept()
            with conn:
                ident = IdentityResolver(sandbox_proc).resolve(peer, conn.getsockname())
        finally:
            os.close(sandbox_proc)
    assert ident.binary == PYTHON
    assert ident.pid == 2  # sandbox pids: sh is 1, the client 2
    assert ident.ancestors == (SH,)
    assert ident.ancestor_pids == (1,)


NETNS_CHILD = textwrap.dedent("""
    import socket, subprocess, sys
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    unix = socket.socket(fileno=int(sys.argv[1]))
    srv = socket.create_server(("127.0.0.1", 3128))
    diag = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 4)
    socket.send_fds(unix, [b"x"], [srv.fileno(), diag.fileno()])
    code = "import socket,sys; c = socket.create_connection(('127.0.0.1', 3128)); sys.stdin.read()"
    subprocess.run([sys.executable, "-c", code])
""")


def test_private_network_namespace_with_a_diag_socket_from_inside(proc_fd: int) -> None:
    """The launcher's shape: listener and sock_diag socket created inside, used outside."""
    needs_root()
    if shutil.which("ip") is None:
        pytest.skip("ip(8) is not installed")
    a, b = socket.socketpair()
    argv = ["unshare", "--net", sys.executable, "-c", NETNS_CHILD, str(b.fileno())]
    with a, b, spawn(argv, pass_fds=[b.fileno()]) as child:
        _, fds, _, _ = socket.recv_fds(a, 1, 2)
        srv = socket.socket(fileno=fds[0])
        diag = socket.socket(fileno=fds[1])
        srv.settimeout(10)
        conn, peer = srv.accept()
        with srv, diag, conn:
            local = conn.getsockname()
            # child.pid is unshare itself, which exec'd python: the client's parent.
            inside = IdentityResolver(proc_fd, root_pid=child.pid, diag=diag)
            via_procfs = IdentityResolver(proc_fd, root_pid=child.pid, diag=False)
            for resolver in (inside, via_procfs):
                ident = resolver.resolve(peer, local)
                assert ident.binary == PYTHON and ident.ancestor_pids == (child.pid,)
            # Our own diag socket answers for the host namespace, where this tuple is unknown.
            wrong = IdentityResolver(proc_fd, root_pid=child.pid, diag=open_diag_socket())
            with pytest.raises(IdentityError) as err:
                wrong.resolve(peer, local)
            assert err.value.code == "no_socket"
