"""`stockade exec NAME -- COMMAND`: a second command inside a running sandbox, under the same layers.

One sandbox per mode (rootless: stockade as nobody; root: the command drops to nobody) serves
the module; the tests that end a sandbox start their own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import STOCKADE
from tests.sandbox.conftest import SANDBOX_PYTHON, Sandbox, _workspace
from tests.sandbox.probes import WRITE_PROBE
from tests.sandbox.ptyio import PtySession

pytestmark = pytest.mark.sandbox

NAME = "exec-test"
RUN_ENV = {"STOCKADE_TEST_RUN_VARIABLE": "given-at-run"}  # the sandbox's environment has it
CALLER_ENV = {"STOCKADE_TEST_CALLER_VARIABLE": "leak"}  # the exec caller's must not reach the command


def _sandbox(request: pytest.FixtureRequest, mode: str) -> Sandbox:
    if os.geteuid() != 0:
        pytest.skip("the sandbox suites run as root (CI does): root mode, and nobody for rootless")
    space = _workspace()
    if mode == "rootless":
        env_ = request.getfixturevalue("rootless")
        return Sandbox(mode, env_.command([env_.stockade]), env_.env(XDG_STATE_HOME=str(space / "state")),
                       space, space / "work", space / "state")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["XDG_STATE_HOME"] = str(space / "state")
    return Sandbox(mode, list(STOCKADE), env, space, space / "work", space / "state")


def exec_(sb: Sandbox, argv: list[str], *, name: str = NAME, args: tuple[str, ...] = (), timeout: float = 60,
          env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run([*sb.prefix, "exec", *args, name, "--", *argv], cwd=sb.work,
                          env={**sb.env, **(env or {})}, timeout=timeout, **kwargs)


def _start(sb: Sandbox, name: str, main: str, args: tuple[str, ...] = ()) -> subprocess.Popen:
    """`stockade run --name NAME -- sh -c MAIN`, returned once `stockade exec` works in it."""
    proc = subprocess.Popen([*sb.prefix, "run", "-q", "--name", name, *args, "--", "sh", "-c", main],
                            cwd=sb.work, env={**sb.env, **RUN_ENV}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while True:
        probe = exec_(sb, ["true"], name=name, timeout=30)
        if probe.returncode == 0:
            return proc
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(f"the sandbox never accepted exec: {probe.stderr}\nrun: {proc.stderr.read()}")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module", params=["rootless", "root"])
def running(request) -> Iterator[Sandbox]:
    """A sandbox whose first command wrote /tmp/main-file and sleeps."""
    sb = _sandbox(request, request.param)
    proc = _start(sb, NAME, "echo from-main > /tmp/main-file; exec sleep 600")
    yield sb
    _stop(proc)
    shutil.rmtree(sb.space, ignore_errors=True)


def _probe(sb: Sandbox, code: str, *args: str, name: str = NAME) -> dict:
    path = sb.work / f"probe-{abs(hash(code))}.py"
    path.write_text(code)
    result = exec_(sb, [SANDBOX_PYTHON, str(path), *args], name=name, env=CALLER_ENV)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


IDENTITY = r'''
import json, os, socket
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
cmdlines = {}
for pid in pids:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdlines[pid] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        pass
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid(), "pids": pids,
                  "cmdlines": cmdlines, "hostname": socket.gethostname(), "cwd": os.getcwd()}))
'''


def test_exec_runs_as_the_sandboxs_user_in_its_pid_namespace(running):
    out = _probe(running, IDENTITY)
    assert (out["uid"], out["gid"]) == (65534, 65534)
    assert out["hostname"] == NAME and out["cwd"] == str(running.work)
    cmdlines = {int(k): v for k, v in out["cmdlines"].items()}
    assert "stockade" in cmdlines[1]  # the sandbox's init is PID 1
    assert any(c == "sleep 600" for c in cmdlines.values())  # the first command is visible
    # Host processes are not: only the sandbox's few, and not this test runner.
    assert len(out["pids"]) < 10 and out["pid"] < 100
    assert not any("pytest" in c for c in cmdlines.values())


def test_exec_has_the_sandboxs_files_and_landlock(running):
    targets = [f"{running.work}/exec-ok", "/tmp/exec-ok", "/usr/x", "/etc/x", "/x", "/run/x"]
    out = _probe(running, WRITE_PROBE, json.dumps(targets))
    assert out[f"{running.work}/exec-ok"] == "written" and out["/tmp/exec-ok"] == "written"
    assert out["/run/x"] == "EACCES"  # a writable mount: Landlock refuses
    for path in ("/usr/x", "/etc/x", "/x"):  # read-only binds and root: EROFS before Landlock
        assert out[path] in ("EROFS", "EACCES"), (path, out[path])
    assert (running.work / "exec-ok").read_text() == "x"
    # The sandbox's private /tmp: what the first command wrote, not the host's.
    seen = exec_(running, ["cat", "/tmp/main-file", "/tmp/exec-ok"])
    assert seen.stdout == "from-main\nx" and not Path("/tmp/exec-ok").exists()


LAYERS = r'''
import errno, json, os
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
try:
    os.memfd_create("x")
    memfd = "allowed"
except OSError as e:
    memfd = errno.errorcode[e.errno]
fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
print(json.dumps({k: status[k].strip() for k in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")}
                 | {"memfd_create": memfd, "fds": fds}))
'''


def test_exec_has_seccomp_no_capabilities_no_new_privs_and_no_stray_descriptor(running):
    path = running.work / "probe-layers.py"
    path.write_text(LAYERS)
    with open(__file__, "rb") as stray:  # handed to stockade exec: it must not reach the command
        os.set_inheritable(stray.fileno(), True)
        result = exec_(running, [SANDBOX_PYTHON, str(path)], pass_fds=(stray.fileno(),))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    for cap in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        assert int(out[cap], 16) == 0, (cap, out[cap])
    assert out["NoNewPrivs"] == "1" and out["Seccomp"] == "2"
    assert out["memfd_create"] == "EPERM"  # a blocked syscall
    assert out["fds"] == [0, 1, 2, 3]  # 3: the listing's own directory


NETWORK = r'''
import errno, json, os, socket, urllib.parse
out = {"env": {k: os.environ.get(k) for k in ("STOCKADE_SANDBOX", "HTTPS_PROXY", "SSL_CERT_FILE",
                                                "STOCKADE_TEST_RUN_VARIABLE", "STOCKADE_TEST_CALLER_VARIABLE")}}
s = socket.socket()
try:
    s.connect(("10.0.0.1", 80))
    out["direct"] = "connected"
except OSError as e:
    out["direct"] = errno.errorcode[e.errno]
proxy = urllib.parse.urlsplit(os.environ["HTTP_PROXY"])
s = socket.create_connection((proxy.hostname, proxy.port), timeout=10)
s.sendall(b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
head, _, body = s.makefile("rb").read().partition(b"\r\n\r\n")
out["proxy"] = head.split(b"\r\n")[0].decode()
out["denial"] = {k: json.loads(body).get(k) for k in ("error", "binary")}
out["ca_bundle"] = os.path.exists(os.environ["SSL_CERT_FILE"])
print(json.dumps(out))
'''


def test_exec_reaches_only_the_sandboxs_proxy_with_the_sandboxs_environment(running):
    out = _probe(running, NETWORK)
    assert out["direct"] == "ENETUNREACH"
    # The proxy answers, knows which binary asked (in the sandbox's /proc), and denies: no rule.
    assert out["proxy"] == "HTTP/1.1 403 Forbidden"
    assert out["denial"]["error"] == "policy_denied" and out["denial"]["binary"].startswith("/usr/bin/python3")
    assert out["env"] == {"STOCKADE_SANDBOX": NAME, "HTTPS_PROXY": "http://127.0.0.1:3128",
                          "SSL_CERT_FILE": "/run/stockade/ca-bundle.pem",
                          "STOCKADE_TEST_RUN_VARIABLE": "given-at-run", "STOCKADE_TEST_CALLER_VARIABLE": None}
    assert out["ca_bundle"] is True


@pytest.mark.parametrize("argv, code", [
    (["true"], 0),
    (["sh", "-c", "exit 7"], 7),
    (["no-such-command-here"], 127),
    (["sh", "-c", "kill -KILL $$"], 137),
])
def test_the_commands_status_is_stockade_execs(running, argv, code):
    result = exec_(running, argv)
    assert result.returncode == code, result.stderr
    if code == 127:
        assert "cannot run 'no-such-command-here': No such file or directory" in result.stderr


def test_workdir_is_a_directory_inside_the_sandbox(running):
    assert exec_(running, ["pwd"], args=("--workdir", "/tmp")).stdout == "/tmp\n"
    missing = exec_(running, ["pwd"], args=("--workdir", "/no/such/dir"))
    assert missing.returncode == 125
    assert "(workdir): cannot enter /no/such/dir" in missing.stderr


def test_a_sandbox_that_is_not_running_is_125_with_a_hint(running):
    result = exec_(running, ["true"], name="no-such-sandbox")
    assert result.returncode == 125
    assert result.stderr.startswith("stockade: no running sandbox named 'no-such-sandbox'")
    assert "stockade list" in result.stderr


def test_ctrl_c_reaches_only_the_command(running):
    code = "import time; print('ready', flush=True); time.sleep(60)"
    session = PtySession([*running.prefix, "exec", NAME, "--", SANDBOX_PYTHON, "-c", code], running.env, running.work)
    try:
        session.expect(b"ready")
        time.sleep(0.2)
        session.send(b"\x03")
        assert session.wait() == 130  # the command's SIGINT, reported by stockade exec
        assert b"stockade:" not in session.transcript
    finally:
        session.close()
    assert exec_(running, ["true"]).returncode == 0  # the sandbox did not see it


@pytest.mark.parametrize("mode", ["rootless", "root"])
@pytest.mark.parametrize("isolation", ["namespaces", "landlock"])
def test_the_execd_command_dies_with_the_sandbox(request, mode, isolation):
    sb = _sandbox(request, mode)
    try:
        stop = sb.work / "stop"
        main = proc = None
        main = _start(sb, "exec-ends", f"while [ ! -e {stop} ]; do sleep 0.1; done", args=("--isolation", isolation))
        started = sb.work / "exec-started"
        proc = subprocess.Popen([*sb.prefix, "exec", "exec-ends", "--", "sh", "-c",
                                 f"touch {started}; sleep 602 & exec sleep 601"],
                                cwd=sb.work, env=sb.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists() and proc.poll() is None
        stop.touch()  # the first command ends, and the sandbox with it
        assert main.wait(timeout=20) == 0
        assert proc.wait(timeout=20) == 137
        assert "stockade: sandbox exec-ends ended, and the command with it" in proc.stderr.read()
        # Nothing was left behind (in the landlock-only mode, stockade exec kills it).
        left = subprocess.run(["pgrep", "-u", "65534", "-f", "^sleep 60[12]$"], capture_output=True, text=True)
        assert left.stdout == ""
        out = exec_(sb, ["true"], name="exec-ends")
        assert out.returncode == 125 and "no running sandbox" in out.stderr
    finally:
        for p in (proc, main):
            if p is not None:
                _stop(p)
        shutil.rmtree(sb.space, ignore_errors=True)


def test_landlock_mode_exec_is_confined_to_the_proxy_port(request):
    """--isolation landlock: nothing to join, the same Landlock (TCP to the proxy port only) and seccomp."""
    sb = _sandbox(request, "root")
    main = _start(sb, "exec-landlock", "exec sleep 600", args=("--isolation", "landlock"))
    try:
        code = (
            "import errno, json, os, socket, urllib.parse\n"
            "out = {}\n"
            "for name, port in (('proxy', urllib.parse.urlsplit(os.environ['HTTP_PROXY']).port), ('other', 9)):\n"
            "    s = socket.socket()\n"
            "    try:\n"
            "        s.connect(('127.0.0.1', port)); out[name] = 'connected'\n"
            "    except OSError as e:\n"
            "        out[name] = errno.errorcode[e.errno]\n"
            "try:\n"
            "    open('/usr/x', 'w'); out['usr'] = 'written'\n"
            "except OSError as e:\n"
            "    out['usr'] = errno.errorcode[e.errno]\n"
            "out['uid'] = os.getuid()\n"
            "s = socket.create_connection(('127.0.0.1', urllib.parse.urlsplit(os.environ['HTTP_PROXY']).port))\n"
            "s.sendall(b'GET http://example.com/ HTTP/1.1\\r\\nHost: example.com\\r\\nConnection: close\\r\\n\\r\\n')\n"
            "out['answer'] = json.loads(s.makefile('rb').read().split(b'\\r\\n\\r\\n', 1)[1])['reason_code']\n"
            "print(json.dumps(out))\n"
        )
        out = _probe(sb, code, name="exec-landlock")
        # Not below the sandbox's init, but registered (exec_register): the policy decides, and the
        # default policy has no egress.
        assert out == {"proxy": "connected", "other": "EACCES", "usr": "EACCES", "uid": 65534,
                       "answer": "no_policies"}
        status = exec_(sb, ["sh", "-c", "exit 7"], name="exec-landlock")
        assert status.returncode == 7
        assert status.stderr == ""
    finally:
        _stop(main)
        shutil.rmtree(sb.space, ignore_errors=True)
