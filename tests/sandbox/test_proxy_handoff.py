"""The contract with the proxy: `Services.serve` gets a listener inside the sandbox's network
namespace and an fd of the sandbox's /proc through which it can identify the connecting program."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sandbox.conftest import SANDBOX_PYTHON

pytestmark = pytest.mark.sandbox

# Runs stockade in-process with services that answer one connection after looking the
# caller up through the procfs fd (as the proxy's identity code will).
DRIVER = r'''
import json, os, sys, threading
import stockade.supervisor as sup

def start_services(sandbox, policy, spec, inputs):
    class Handle:  # the Services protocol
        error = None
        failure_fd = os.pipe()[0]
        def serve(self, ctx):
            threading.Thread(target=loop, args=(ctx,), daemon=True).start()
        def started(self, pid): pass
        def timed_out(self): pass
        def close(self, exit_code=None, status="exited"): pass
    return Handle()

def loop(ctx):
    conn, _ = ctx.listener.accept()
    pid = ctx.processes.agent_pid
    fd_dir = os.open(f"{pid}/fd", os.O_RDONLY | os.O_DIRECTORY, dir_fd=ctx.procfs)
    with open(os.open(f"{pid}/net/tcp", os.O_RDONLY, dir_fd=ctx.procfs)) as f:
        tcp = f.read()
    seen = {"pid": pid, "exe": os.readlink(f"{pid}/exe", dir_fd=ctx.procfs), "fds": len(os.listdir(fd_dir)),
            "port_in_tcp": ":0C38 " in tcp, "ca": ctx.ca.certificate_pem.startswith(b"-----BEGIN"),
            "init_pid": ctx.processes.init_pid > 0, "sandbox": ctx.sandbox,
            "diag": ctx.diag is not None}
    os.close(fd_dir)
    conn.sendall(json.dumps(seen).encode())
    conn.close()

sup.start_services = start_services
from stockade.cli import main
sys.argv = ["stockade", "run", "-q", "--name", "handoff", "--", *sys.argv[1:]]
main()
'''

CLIENT = ("import socket, sys\n"
          "s = socket.create_connection(('127.0.0.1', 3128), timeout=20)\n"
          "print(s.recv(4096).decode())\n")


def test_the_proxy_gets_the_listener_and_the_sandboxs_proc(sandbox):
    driver = sandbox.work / "driver.py"
    driver.write_text(DRIVER)
    if sandbox.mode == "rootless":  # the nobody venv's interpreter, through the same setpriv prefix
        python = str(Path(sandbox.prefix[-1]).with_name("python"))
        argv = [*sandbox.prefix[:-1], python, str(driver), SANDBOX_PYTHON, "-c", CLIENT]
    else:
        argv = [sys.executable, str(driver), SANDBOX_PYTHON, "-c", CLIENT]
    result = subprocess.run(argv, cwd=sandbox.work, env=sandbox.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["exe"].startswith("/usr/bin/python3") and seen["fds"] >= 4  # 0, 1, 2 and the socket
    assert seen["port_in_tcp"]  # 127.0.0.1:3128 (0x0C38) in the sandbox's own net/tcp
    assert seen["ca"] and seen["init_pid"] and seen["sandbox"] == "handoff"
    assert seen["diag"]  # the sock_diag socket of the sandbox's netns came with the listener
    assert seen["pid"] < 10  # sandbox terms
