"""The escape suite: what a command inside a sandbox must not be able to do.

Each test runs rootless (stockade as nobody) and as root (root mode, command as nobody). Where
a denial could have another cause (a missing capability answers EPERM too), a control run of
the same probe outside the sandbox, as nobody, shows that the sandbox is what refuses it.
"""

from __future__ import annotations

import errno
import json
import os
import pty
import select
import signal
import socket
import subprocess
import time
import uuid

import pytest

from stockade.isolation.seccomp import DENYLIST, LOW32, load_pyseccomp
from tests.sandbox.conftest import SANDBOX_PYTHON, as_nobody, compile_c
from tests.sandbox.probes import INT80_C, SUID_C, SYSCALL_PROBE, UNIX_CONNECT, WRITE_PROBE
from tests.support.netns import NOBODY_GID, NOBODY_UID

pytestmark = pytest.mark.sandbox


def _nr(name: str) -> int:
    sc = load_pyseccomp()
    nr = sc.resolve_syscall(sc.Arch.NATIVE, name)
    return nr if nr >= 0 else 467  # open_tree_attr (newer than libseccomp 2.5)


def _syscall_probes() -> tuple[list, dict[str, int]]:
    """(label, number, args) for every table entry (and its high-bits variant), with the errno."""
    probes, expected = [], {}
    for block in DENYLIST:
        args = [0] * 6
        for test in block.tests:
            args[test.index] = test.value if test.op == "masked_eq" else test.value + 1
        if block.syscall == "clone":
            args[0] |= signal.SIGCHLD  # a fork-like clone: a child, if it were allowed, exits at once
        label = f"{block.syscall}:{','.join(hex(t.value) for t in block.tests)}"
        if block.syscall == "execveat":
            probes.append((label, "execveat", []))
        elif block.syscall == "ioctl":
            probes.append((label, "tiocsti", [_nr("ioctl"), args[1]]))
        else:
            probes.append((label, _nr(block.syscall), args))
        expected[label] = block.errno
        high = [a | (1 << 32) if any(t.index == i and t.op == "masked_eq" and t.mask == LOW32
                                     for t in block.tests) else a for i, a in enumerate(args)]
        if high != args and block.syscall != "ioctl":
            probes.append((label + ":high-bits", _nr(block.syscall), high))
            expected[label + ":high-bits"] = block.errno
    if os.uname().machine == "x86_64":
        probes.append(("x32:getpid", 0x40000000 | 39, []))
        expected["x32:getpid"] = errno.EPERM
    return probes, expected


def _run_probe(sandbox, script: str, arg: object, **kwargs) -> dict:
    path = sandbox.work / f"probe-{uuid.uuid4().hex[:8]}.py"  # the workdir is in every policy here
    path.write_text(script)
    result = sandbox.run([SANDBOX_PYTHON, str(path), json.dumps(arg)], **kwargs)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_every_blocked_syscall_returns_its_errno(sandbox):
    probes, expected = _syscall_probes()
    inside = _run_probe(sandbox, SYSCALL_PROBE, probes)
    wrong = {k: (errno.errorcode.get(v, v), errno.errorcode[expected[k]]) for k, v in inside.items()
             if v != expected[k]}
    assert not wrong, f"(got, expected): {wrong}"
    # Control: outside the sandbox, as the same user, these calls are not refused that way.
    path = sandbox.space / "control.py"
    path.write_text(SYSCALL_PROBE)
    path.chmod(0o644)
    outside = json.loads(subprocess.run(as_nobody([SANDBOX_PYTHON, str(path), json.dumps(probes)]),
                                        capture_output=True, text=True, check=True, cwd="/").stdout)
    proven = {k for k in expected if outside[k] != expected[k]}
    for name in ("memfd_create", "ptrace", "unshare", "clone", "clone3", "seccomp", "prctl", "execveat",
                 "keyctl", "add_key", "x32:getpid"):
        assert any(k.startswith(name) for k in proven), f"{name}: the control run was refused too"


def test_lifting_memfd_create_lets_only_that_call_through(sandbox):
    """`process.seccomp.allow: [memfd_create]` (JIT runtimes) opens that one call; every other
    block of the denylist stays."""
    probes, expected = _syscall_probes()
    policy = _policy(sandbox, extra="process:\n  seccomp:\n    allow: [memfd_create]")
    inside = _run_probe(sandbox, SYSCALL_PROBE, probes, policy=policy)
    memfd = [k for k in inside if k.startswith("memfd_create")]
    # The probe passes a NULL name: EFAULT is the kernel's answer, so seccomp let the call in.
    assert memfd and all(inside[k] == errno.EFAULT for k in memfd), inside
    wrong = {k: errno.errorcode.get(v, v) for k, v in inside.items()
             if not k.startswith("memfd_create") and v != expected[k]}
    assert not wrong, wrong


def test_foreign_architecture_syscalls_are_refused(sandbox, gcc):
    if os.uname().machine != "x86_64":
        pytest.skip("int $0x80 (i386 syscalls) exists on x86_64 only")
    prog = compile_c(gcc, INT80_C, sandbox.space / "int80")
    outside = subprocess.run(as_nobody([str(prog)]), capture_output=True, text=True)
    if outside.returncode != 0:
        pytest.skip("this kernel has no i386 emulation")
    assert int(outside.stdout) > 0  # getpid works outside
    inside = sandbox.run([str(prog)], policy=_policy(sandbox, read_only=[str(sandbox.space)]))
    assert inside.returncode == 0, inside.stderr
    assert int(inside.stdout) == -errno.EPERM


def _policy(sandbox, *, read_only=(), read_write=(), include_workdir=True, extra="") -> str:
    ro = ["/usr", "/bin", "/lib", "/lib64", "/etc", "/proc", "/dev/urandom", *read_only]
    rw = ["/tmp", "/dev/null", *read_write]
    lines = ["version: 1", "filesystem_policy:", f"  include_workdir: {str(include_workdir).lower()}",
             "  read_only:", *[f"    - {p}" for p in ro], "  read_write:", *[f"    - {p}" for p in rw],
             "landlock:", "  compatibility: best_effort", extra]
    return "\n".join(lines) + "\n"


def test_writes_outside_read_write_are_refused(sandbox):
    ro_dir = sandbox.space / "ro"
    ro_dir.mkdir()
    os.chown(ro_dir, NOBODY_UID, NOBODY_GID)  # nobody may write there: only the sandbox refuses
    policy = _policy(sandbox, read_only=[str(ro_dir)], include_workdir=True)
    targets = ["/usr/x", "/etc/x", "/x", "/run/x", f"{ro_dir}/x", "/dev/shm/../x", f"{sandbox.work}/ok",
               "/tmp/ok"]
    result = _run_probe(sandbox, WRITE_PROBE, targets, policy=policy)
    # Read-only binds answer EROFS before Landlock is asked; where the mount is writable (the
    # private /run), Landlock answers EACCES.
    assert result["/run/x"] == "EACCES"
    for path in ("/usr/x", "/etc/x", "/x", f"{ro_dir}/x", "/dev/shm/../x"):
        assert result[path] in ("EROFS", "EACCES"), (path, result[path])
    assert result[f"{sandbox.work}/ok"] == "written" and result["/tmp/ok"] == "written"
    assert not (ro_dir / "x").exists()


def test_unlisted_tmp_is_refused_by_landlock(sandbox):
    policy = _policy(sandbox).replace("    - /tmp\n", "")
    result = _run_probe(sandbox, WRITE_PROBE, ["/tmp/x"], policy=policy)
    assert result["/tmp/x"] == "EACCES"


def test_direct_tcp_and_udp_connections_fail(sandbox):
    code = (
        "import errno, socket\n"
        "for fam, addr in ((socket.AF_INET, ('1.1.1.1', 443)), (socket.AF_INET, ('10.0.0.1', 53)),\n"
        "                  (socket.AF_INET6, ('2001:db8::1', 443, 0, 0))):\n"
        "    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):\n"
        "        s = socket.socket(fam, kind)\n"
        "        try:\n"
        "            s.connect(addr); print('CONNECTED', addr)\n"
        "        except OSError as e:\n"
        "            print(errno.errorcode[e.errno])\n"
        "s = socket.create_connection(('127.0.0.1', 3128), timeout=10)\n"
        "s.sendall(b'CONNECT example.com:443 HTTP/1.1\\r\\nHost: example.com:443\\r\\n\\r\\n')\n"
        "print(s.recv(12).decode())\n"
    )
    result = sandbox.python(code)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert lines[:6] == ["ENETUNREACH"] * 6
    assert lines[6:] == ["HTTP/1.1", "403"]  # the only way out is the proxy


def test_host_processes_are_invisible(sandbox):
    code = (
        "import os\n"
        "pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        f"print(pids, os.path.exists('/proc/{os.getpid()}'))\n"
        "print(open('/proc/1/status').read().split('PPid:')[1].split()[0])\n"
    )
    result = sandbox.python(code)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    pids, test_visible = first.rsplit(" ", 1)
    assert test_visible == "False"
    assert max(json.loads(pids)) < 20  # init, the command, its children: nothing else
    assert second == "0"  # PID 1's parent is outside: the sandbox is the whole world


def test_state_directory_is_unreachable(sandbox):
    # The policy shows the workspace, and with it the state directory: it must be hidden.
    policy = _policy(sandbox, read_only=[str(sandbox.space)])
    code = (
        "import os\n"
        f"try:\n    print(sorted(os.listdir({str(sandbox.state / 'stockade')!r})))\n"
        "except OSError as e:\n    print(type(e).__name__)\n"
    )
    result = sandbox.run([SANDBOX_PYTHON, "-c", code], policy=policy, args=())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in ("[]", "PermissionError")
    assert "state dir hidden" in result.stderr
    assert any(sandbox.state.iterdir())  # the host side does have content there


def _listen_unix(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    os.chmod(path, 0o777)
    s.listen(8)
    return s


def test_unix_sockets_outside_the_policy_cannot_be_reached(sandbox):
    tag = uuid.uuid4().hex[:8]
    host_tmp = f"/tmp/stockade-sock-{tag}"
    os.mkdir(host_tmp)
    os.chmod(host_tmp, 0o755)
    home = sandbox.space / "home"
    (sandbox.work / "sub").mkdir()
    home.mkdir()
    paths = [f"{host_tmp}/agent.sock", str(home / "dev.sock"), str(sandbox.work / "sub" / "app.sock")]
    abstract = f"@stockade-test-{tag}"
    listeners = [_listen_unix(p) for p in paths]
    a = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    a.bind("\0" + abstract[1:])
    a.listen(8)
    listeners.append(a)
    try:
        control = sandbox.work / "unix.py"
        control.write_text(UNIX_CONNECT)
        control.chmod(0o644)
        outside = json.loads(subprocess.run(as_nobody([SANDBOX_PYTHON, str(control), json.dumps(paths + [abstract])]),
                                            capture_output=True, text=True, check=True).stdout)
        assert set(outside.values()) == {"connected"}  # reachable by this user outside the sandbox
        policy = _policy(sandbox, read_only=[str(home)])
        result = sandbox.run([SANDBOX_PYTHON, str(control), json.dumps(paths + [abstract])], policy=policy,
                             args=())
        assert result.returncode == 0, result.stderr
        inside = json.loads(result.stdout)
        assert inside[paths[0]] == "ENOENT"  # the host's /tmp is not the sandbox's
        # Hidden under an empty read-only file: connect() needs write access to a socket inode.
        assert inside[paths[1]] in ("EACCES", "ECONNREFUSED") and inside[paths[2]] in ("EACCES", "ECONNREFUSED")
        assert inside[abstract] == "ECONNREFUSED"  # another network namespace
        assert "hid 2 unix sockets" in result.stderr
    finally:
        for s in listeners:
            s.close()
        for p in paths:
            os.unlink(p)
        os.rmdir(host_tmp)


def test_unix_sockets_in_the_workdir_are_hidden_by_the_launchers_early_survey(sandbox):
    """With the workdir as the view's first walked tree, the launcher's survey (made while the
    supervisor loads the policy, isolation/sockscan.py) is what finds these sockets: they are
    bound and closed, so the kernel's list of sockets (the other source) does not name them,
    as it would not name a live one of another network namespace (a container's)."""
    paths = [str(sandbox.work / "app.sock"), str(sandbox.work / "a" / "b" / "deep.sock")]
    (sandbox.work / "a" / "b").mkdir(parents=True)
    for path in paths:
        _listen_unix(path).close()  # the socket inode stays
    control = sandbox.space / "zz-unix.py"  # sorts after work/: the workdir is the first root
    control.write_text(UNIX_CONNECT)
    control.chmod(0o644)
    policy = _policy(sandbox, read_only=[str(control)])
    result = sandbox.run([SANDBOX_PYTHON, str(control), json.dumps(paths)], policy=policy, args=())
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout).values()) <= {"EACCES", "ECONNREFUSED"}, result.stdout
    assert "hid 2 unix sockets" in result.stderr, result.stderr


def _pty_run(argv: list[str], env: dict, cwd, timeout: float = 30) -> tuple[int, bytes]:
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(cwd)
        os.execvpe(argv[0], argv, env)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), out
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out


def test_tiocsti_is_refused_on_the_users_terminal(sandbox):
    code = (
        "import ctypes, errno, fcntl, termios, os\n"
        "try:\n    fcntl.ioctl(0, termios.TIOCSTI, b'x'); print('INJECTED')\n"
        "except OSError as e:\n    print('plain', errno.errorcode[e.errno])\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "r = libc.ioctl(0, ctypes.c_ulong(termios.TIOCSTI | (1 << 32)), ctypes.c_char_p(b'x'))\n"
        "print('high-bits', errno.errorcode.get(ctypes.get_errno()) if r == -1 else 'INJECTED')\n"
        "print('isatty', os.isatty(0))\n"
    )
    code_rc, out = _pty_run(sandbox.command([SANDBOX_PYTHON, "-c", code], args=("-q",)), sandbox.env, sandbox.work)
    text = out.decode(errors="replace")
    assert code_rc == 0, text
    assert "isatty True" in text
    assert "plain EPERM" in text and "high-bits EPERM" in text and "INJECTED" not in text


def test_no_stray_file_descriptor_is_inherited(sandbox):
    r, w = os.pipe()  # handed to stockade: must not reach the command
    try:
        code = (
            "import os\n"
            "fds = []\n"
            "for fd in os.listdir('/proc/self/fd'):\n"
            "    try:\n        os.readlink('/proc/self/fd/' + fd)\n"
            "    except FileNotFoundError:\n        continue  # the listing's own descriptor, closed since\n"
            "    fds.append(int(fd))\n"
            "print(sorted(fds))\n"
        )
        result = sandbox.run([SANDBOX_PYTHON, "-c", code], pass_fds=(r, w))
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "[0, 1, 2]"
    finally:
        os.close(r)
        os.close(w)


def test_the_supervisor_cannot_be_signalled_or_ptraced(sandbox):
    code = (
        "import ctypes, errno, os, signal, time\n"
        "while not os.path.exists('sup.pid'):\n    time.sleep(0.02)\n"
        "time.sleep(0.05)\n"
        "sup = int(open('sup.pid').read())\n"
        "def attempt(what, fn):\n"
        "    try:\n        fn(); print(what, 'ok')\n"
        "    except OSError as e:\n        print(what, errno.errorcode[e.errno])\n"
        "attempt('kill-supervisor', lambda: os.kill(sup, signal.SIGKILL))\n"
        "attempt('kill-init', lambda: os.kill(1, signal.SIGKILL))\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "r = libc.ptrace(16, 1, 0, 0)  # PTRACE_ATTACH to init, a fork of the supervisor\n"
        "print('ptrace-init', errno.errorcode[ctypes.get_errno()] if r == -1 else 'ok')\n"
        "attempt('kill-all', lambda: os.kill(-1, signal.SIGKILL))\n"
        "print('alive')\n"
    )
    proc = sandbox.popen([SANDBOX_PYTHON, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    (sandbox.work / "sup.pid").write_text(str(proc.pid))  # the supervisor (setpriv execs stockade)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    assert lines["kill-supervisor"] == "ESRCH"  # not even visible from inside
    assert lines["kill-init"] == "EPERM"  # Landlock scopes signals (ABI >= 6)
    assert lines["ptrace-init"] == "EPERM"
    assert "alive" in out


def test_init_a_fork_of_the_supervisor_cannot_be_read(sandbox):
    code = (
        "import errno\n"
        "for name in ('environ', 'mem', 'maps', 'fd/0'):\n"
        "    try:\n"
        "        with open('/proc/1/' + name, 'rb') as f:\n"
        "            f.read(1); print(name, 'READ')\n"
        "    except OSError as e:\n"
        "        print(name, errno.errorcode[e.errno])\n"
    )
    result = sandbox.python(code)
    assert result.returncode == 0, result.stderr
    assert "READ" not in result.stdout
    assert len(result.stdout.splitlines()) == 4


def test_setuid_binaries_grant_nothing(sandbox, gcc):
    suid_dir = sandbox.space / "suid"
    suid_dir.mkdir()
    prog = compile_c(gcc, SUID_C, suid_dir / "whoami")
    os.chown(prog, 0, 0)
    os.chmod(prog, 0o4755)
    outside = subprocess.run(as_nobody([str(prog)]), capture_output=True, text=True, check=True)
    assert outside.stdout.split() == [str(NOBODY_UID), "0"]  # setuid works on this filesystem
    result = sandbox.run([str(prog)], policy=_policy(sandbox, read_only=[str(suid_dir)]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(NOBODY_UID), str(NOBODY_UID)]


def _pids_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def _sleepers(marker: str) -> list[int]:
    found = []
    for pid in _pids_with(marker):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "sleep":
                    found.append(pid)
        except OSError:
            continue
    return found


def test_the_supervisors_death_kills_the_sandbox(sandbox):
    marker = f"{1000 + int(uuid.uuid4().int % 1000)}.{uuid.uuid4().int % 10**6}"
    proc = sandbox.popen(["sleep", marker], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not _sleepers(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _sleepers(marker), "the sandboxed sleep never started"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while _pids_with(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _pids_with(marker) == [], "processes survived the supervisor"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
