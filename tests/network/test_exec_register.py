"""`exec_register` (landlock-only mode): a real control socket, a real resolver and real
processes. Only the caller's own live child is accepted, the caller then counts as a root until
that child exits, and a process of the sandbox (below init, or below a registered root) cannot
use the control socket at all."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stockade.control import ControlError, ControlServer, call
from stockade.events.types import ListRecorder
from stockade.network.identity import IdentityResolver
from stockade.services.exec_info import ExecRoots

from ..support.threadloop import ThreadLoop

SLEEP = os.path.realpath(shutil.which("sleep") or "/bin/sleep")

# Once stdin says so, connects to the control socket and asks to register its own child (a
# sleep): prints the reply.
REGISTER = textwrap.dedent("""
    import json, socket, subprocess, sys
    sys.stdin.readline()
    child = subprocess.Popen([sys.argv[2], "60"])
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(sys.argv[1])
    try:
        s.sendall(json.dumps({"op": "exec_register", "pid": child.pid}).encode() + b"\\n")
    except OSError:
        pass  # refused before it read anything: the reply is already there
    print(s.makefile("rb").readline().decode().strip(), flush=True)
    child.kill()
""")


@dataclass
class Served:
    path: Path
    resolver: IdentityResolver
    init: subprocess.Popen[bytes]
    recorder: ListRecorder


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A landlock-only sandbox's control socket: init is a sleep (another tree than ours)."""
    proc_fd = os.open("/proc", os.O_PATH | os.O_DIRECTORY)
    init = subprocess.Popen([SLEEP, "60"])
    resolver = IdentityResolver(proc_fd, root_pid=init.pid, trusted_root=True)
    roots = ExecRoots(resolver)
    recorder = ListRecorder()
    loop = ThreadLoop()
    server = ControlServer(tmp_path / "control.sock", {"exec_register": roots.register}, sandbox="sb",
                           recorder=recorder, vet_peer=roots.refuse_sandboxed)
    loop.run(server.start())
    try:
        yield Served(tmp_path / "control.sock", resolver, init, recorder)
    finally:
        loop.run(server.close())
        loop.stop()
        init.kill()
        init.wait()
        os.close(proc_fd)


def _wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# A `stockade exec` stand-in: forks a command (a sleep), registers it, reports, then lives until
# stdin closes (the command's leftovers stay its children meanwhile, as with stockade exec).
CALLER = textwrap.dedent("""
    import json, socket, subprocess, sys
    child = subprocess.Popen([sys.argv[2], "60"])
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    s.sendall(json.dumps({"op": "exec_register", "pid": child.pid}).encode() + b"\\n")
    print(child.pid, s.makefile("rb").readline().decode().strip(), flush=True)
    sys.stdin.read()
    child.kill()
""")


def test_a_child_of_the_caller_makes_the_caller_a_root_until_the_caller_exits(served: Served) -> None:
    caller = subprocess.Popen([sys.executable, "-c", CALLER, str(served.path), SLEEP], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert caller.stdout is not None
        pid, reply = caller.stdout.readline().split(" ", 1)
        reply = json.loads(reply)
        assert reply["ok"] and reply["pid"] == int(pid) and reply["root_pid"] == caller.pid
        assert served.resolver.is_root(caller.pid) and served.resolver.root_count() == 1
        assert served.resolver.below_root(int(pid))  # served now, as a sandbox process is
        os.kill(int(pid), signal.SIGKILL)  # the command ends; what it left behind is still the caller's
        time.sleep(0.2)
        assert served.resolver.root_count() == 1 and served.resolver.is_root(caller.pid)
    finally:
        caller.communicate("", timeout=30)
    assert _wait_for(lambda: served.resolver.root_count() == 0), "the exited caller's root was kept"
    assert not served.resolver.is_root(caller.pid)


def test_a_pid_that_is_not_the_callers_child_is_refused(served: Served) -> None:
    grand = subprocess.Popen(["sh", "-c", f"{SLEEP} 60 & echo $!; wait"], stdout=subprocess.PIPE, text=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    try:
        assert grand.stdout is not None
        grandchild = int(grand.stdout.readline())
        for pid, why in ((grandchild, "not a child of the caller"), (1, "not a child of the caller"),
                         (os.getpid(), "not a child of the caller"), (gone.pid, "no such process"),
                         (-5, "not a child of the caller")):
            with pytest.raises(ControlError) as err:
                call(served.path, "exec_register", pid=pid)
            assert err.value.error == "refused" and why in err.value.detail, (pid, err.value.detail)
        assert served.resolver.root_count() == 0
    finally:
        grand.kill()
        grand.wait()


def test_a_process_of_the_sandbox_cannot_use_the_control_socket(served: Served, tmp_path: Path) -> None:
    """Same uid, same namespaces (the landlock-only mode): refused because it runs below init,
    or below a registered root (an exec'd command registering more of the host)."""
    # Below a registered root: our child, registered, is the process that asks.
    asker = subprocess.Popen([sys.executable, "-c", REGISTER, str(served.path), SLEEP], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    call(served.path, "exec_register", pid=asker.pid)  # registered before it asks (stdin)
    out, _ = asker.communicate("go\n", timeout=30)
    reply = json.loads(out)
    assert reply["ok"] is False and reply["error"] == "peer_refused", reply
    assert "runs in the sandbox" in reply["detail"]
    assert served.resolver.root_count() <= 1  # ours only (or none: the asker has exited)
    # Below init: a sandbox with a shell as its init, whose child asks.
    served_init = served.resolver.root_pid
    shell = subprocess.Popen(["sh", "-c", f"{sys.executable} -c '{REGISTER}' {served.path} {SLEEP}"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        served.resolver.root_pid = shell.pid
        out, _ = shell.communicate("go\n", timeout=30)
    finally:
        served.resolver.root_pid = served_init
    reply = json.loads(out)
    assert reply["ok"] is False and reply["error"] == "peer_refused" and "runs in the sandbox" in reply["detail"]
    assert [e.kind for e in served.recorder.events] == ["control_peer_refused"] * 2


# Sets no_new_privs (as every sandboxed process has), then asks the control socket for a ping.
NNP_ASKER = textwrap.dedent("""
    import ctypes, socket, sys
    assert ctypes.CDLL(None).prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    try:
        s.sendall(b'{"op": "ping"}\\n')
    except OSError:
        pass
    print(s.makefile("rb").readline().decode().strip(), flush=True)
""")


def test_an_orphaned_sandbox_process_is_refused_by_its_no_new_privs(served: Served) -> None:
    """Out of every tree (e.g. a `stockade exec` was SIGKILLed and its leftovers reparented),
    a sandboxed process still carries no_new_privs, which it cannot drop: refused."""
    out = subprocess.run([sys.executable, "-c", NNP_ASKER, str(served.path)], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    reply = json.loads(out)
    assert reply["ok"] is False and reply["error"] == "peer_refused" and "no_new_privs" in reply["detail"]
    assert call(served.path, "ping")["ok"]  # we (no no_new_privs, outside every tree) are served
