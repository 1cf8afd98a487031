"""`--isolation landlock`: no namespaces; Landlock filesystem and TCP rules, said to be weaker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.sandbox.conftest import SANDBOX_PYTHON
from tests.support.netns import NOBODY_GID, NOBODY_UID

pytestmark = pytest.mark.sandbox

PROBE = r'''
import errno, json, os, socket, sys
out = {"uid": os.getuid()}
for path in sys.argv[1:]:
    try:
        open(path, "w").close(); out[path] = "written"
    except OSError as e:
        out[path] = errno.errorcode[e.errno]
port = int(os.environ["HTTPS_PROXY"].rsplit(":", 1)[1])
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.sendall(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
out["proxy"] = s.recv(12).decode()
try:
    socket.create_connection(("127.0.0.1", 1 if port != 1 else 2), timeout=5)
    out["other-port"] = "connected"
except OSError as e:
    out["other-port"] = errno.errorcode.get(e.errno, str(e.errno))
out["ca"] = open(os.environ["SSL_CERT_FILE"]).read().count("BEGIN CERTIFICATE") > 0
try:
    os.kill(os.getppid(), 0); out["signal-init"] = "ok"
except OSError as e:
    out["signal-init"] = errno.errorcode[e.errno]
print(json.dumps(out))
'''


def test_landlock_mode_confines_files_and_tcp_and_says_it_is_weaker(sandbox):
    ro_dir = sandbox.space / "ro"
    ro_dir.mkdir()
    os.chown(ro_dir, NOBODY_UID, NOBODY_GID)  # only Landlock stands between nobody and this dir
    policy = ("version: 1\nfilesystem_policy:\n  include_workdir: true\n"
              f"  read_only: [/usr, /bin, /lib, /lib64, /etc, {ro_dir}]\n  read_write: [/dev/null]\n")
    probe = sandbox.work / "probe.py"
    probe.write_text(PROBE)
    result = sandbox.run([SANDBOX_PYTHON, str(probe), f"{ro_dir}/x", "/usr/x", f"{sandbox.work}/ok"],
                         policy=policy, args=("--isolation", "landlock"))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["uid"] == NOBODY_UID
    assert out[f"{ro_dir}/x"] == "EACCES" and out["/usr/x"] == "EACCES"
    assert out[f"{sandbox.work}/ok"] == "written"
    assert out["proxy"] == "HTTP/1.1 403"
    assert out["other-port"] == "EACCES"  # Landlock: connect only to the proxy's port
    assert out["ca"] is True
    assert out["signal-init"] == "EPERM"  # signals scoped to the sandbox
    assert "landlock-only" in result.stderr and "WEAKER MODE (--isolation landlock)" in result.stderr
    assert "host processes are visible" in result.stderr


def test_landlock_mode_exit_codes_and_supervisor_death(sandbox):
    assert sandbox.run(["sh", "-c", "exit 9"], args=("-q", "--isolation", "landlock")).returncode == 9
    assert sandbox.run(["no-such-command"], args=("-q", "--isolation", "landlock")).returncode == 127
    marker = f"{int(time.time() * 1000) % 100000}.75"
    proc = sandbox.popen(["sleep", marker], args=("-q", "--isolation", "landlock"), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        def sleepers() -> list[str]:
            found = []
            for entry in os.listdir("/proc"):
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        if f.read().split(b"\0")[:2] == [b"sleep", marker.encode()]:
                            found.append(entry)
                except OSError:
                    continue
            return found
        deadline = time.monotonic() + 20
        while not sleepers() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sleepers()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while sleepers() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sleepers() == []  # PR_SET_PDEATHSIG on init and the command
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
