"""The legitimate-workload suite: real programs work inside the sandbox, rootless and as root."""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import shutil
import time
import zipfile

import pytest

from tests.sandbox.conftest import SANDBOX_PYTHON
from tests.sandbox.ptyio import PtySession

pytestmark = pytest.mark.sandbox


def test_python_threads_subprocess_and_multiprocessing(sandbox):
    code = (
        "import multiprocessing, subprocess, threading\n"
        "if __name__ == '__main__':\n"
        "    out = []\n"
        "    threads = [threading.Thread(target=out.append, args=(i,)) for i in range(8)]\n"
        "    [t.start() for t in threads]; [t.join() for t in threads]\n"
        "    print('threads', sorted(out) == list(range(8)))\n"
        "    print('subprocess', subprocess.run(['sh', '-c', 'echo $((6*7))'], capture_output=True,"
        " text=True).stdout.strip())\n"
        "    for method in ('fork', 'spawn'):\n"
        "        with multiprocessing.get_context(method).Pool(2) as pool:\n"
        "            print(method, pool.map(abs, [-1, -2, -3]))\n"
        "    q = multiprocessing.Queue(); q.put('queued'); print(q.get())\n"
    )
    path = sandbox.work / "work.py"
    path.write_text(code)
    result = sandbox.run([SANDBOX_PYTHON, str(path)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:5] == ["threads True", "subprocess 42", "fork [1, 2, 3]",
                                             "spawn [1, 2, 3]", "queued"]


def test_git_init_and_commit(sandbox):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    script = (
        "set -e; git init -q repo; cd repo; echo hello > README; git add README; "
        "git -c user.name=agent -c user.email=agent@example.com commit -qm first; "
        "git log --format=%s; git status --porcelain | wc -l"
    )
    result = sandbox.run(["sh", "-c", script])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["first", "0"]


def test_gcc_compile_and_run(sandbox, gcc):
    (sandbox.work / "hello.c").write_text('#include <stdio.h>\nint main(void){puts("compiled");return 3;}\n')
    result = sandbox.run(["sh", "-c", "gcc -O1 -o hello hello.c && ./hello"])
    assert result.returncode == 3, result.stderr
    assert result.stdout.strip() == "compiled"


def _wheel(directory) -> str:
    """A minimal pure-Python wheel built by hand (no network, no build backend)."""
    name = "stockade_demo-1.0-py3-none-any.whl"
    files = {
        "stockade_demo/__init__.py": b"VALUE = 42\n",
        "stockade_demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: stockade-demo\nVersion: 1.0\n",
        "stockade_demo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                                             b"Tag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append("stockade_demo-1.0.dist-info/RECORD,,")
    with zipfile.ZipFile(directory / name, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
        zf.writestr("stockade_demo-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    (directory / name).chmod(0o644)
    return name


def test_pip_installs_a_local_wheel_into_a_venv_in_the_workdir(sandbox):
    wheel = _wheel(sandbox.work)
    script = (
        f"set -e; {SANDBOX_PYTHON} -m venv venv; "
        f"venv/bin/pip install --quiet --no-index --no-cache-dir ./{wheel}; "
        "venv/bin/python -c 'import stockade_demo; print(stockade_demo.VALUE)'"
    )
    result = sandbox.run(["env", "PIP_DISABLE_PIP_VERSION_CHECK=1", "sh", "-c", script], timeout=180)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "42"


def test_node_runs(sandbox):
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed")
    code = (
        "const fs = require('fs'); const cp = require('child_process');"
        "fs.writeFileSync('from-node.txt', 'ok');"
        "console.log(fs.readFileSync('from-node.txt', 'utf8'), cp.execSync('echo child').toString().trim(),"
        " process.env.HTTPS_PROXY)"
    )
    result = sandbox.run([node, "-e", code])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok child http://127.0.0.1:3128"


def _running(argument: str, timeout: float = 20) -> None:
    """Wait until a process with `argument` in its command line runs (keys sent before would
    reach the shell's line editor instead of the job)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read().split(b"\0")[:2] == [b"sleep", argument.encode()]:
                        time.sleep(0.1)
                        return
            except OSError:
                continue
        time.sleep(0.05)
    raise AssertionError(f"sleep {argument} never started")


def test_interactive_bash_job_control_on_a_terminal(sandbox):
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    session = PtySession(sandbox.command(["bash", "--norc", "--noprofile", "-i"]), sandbox.env, sandbox.work)
    try:
        session.send(b"PS1='IN''NER> '\n")
        session.expect(b"INNER> ")
        session.send(b"sleep 100.1\n")
        _running("100.1")
        session.send(b"\x03")  # Ctrl-C: interrupts sleep, not bash
        session.expect(b"INNER> ")
        session.send(b"echo status=$?\n")
        assert b"status=130" in session.expect(b"INNER> ")
        session.send(b"sleep 100 &\n")
        session.expect(b"INNER> ")
        session.send(b"jobs\n")
        assert b"Running" in session.expect(b"INNER> ")
        session.send(b"kill %1; wait %1; echo killed=$?\n")
        assert b"killed=143" in session.expect(b"INNER> ")
        session.send(b"sleep 100.2\n")
        _running("100.2")
        session.send(b"\x1a")  # Ctrl-Z: bash inside stops its own job
        assert b"Stopped" in session.expect(b"INNER> ")
        session.send(b"kill -KILL %1; sleep 0.2; jobs; echo reaped\n")
        session.expect(b"reaped\r\n")
        session.send(b"exit 5\n")
        assert session.wait() == 5
    finally:
        session.close()


def test_ctrl_z_suspends_the_whole_sandbox_and_fg_resumes_it(sandbox):
    """The command stops: stockade gives the terminal back and stops too (like sudo)."""
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    session = PtySession(["bash", "--norc", "--noprofile", "-i"], sandbox.env, sandbox.work)
    try:
        session.send(b"PS1='OUT''ER> '\n")
        session.expect(b"OUTER> ")
        script = sandbox.work / "ticker.py"
        script.write_text("import time\ninput('ready> ')\nfor i in range(600):\n"
                          "    print('tick', i, flush=True)\n    time.sleep(0.1)\n")
        inner = shlex.join(sandbox.command([SANDBOX_PYTHON, str(script)]))
        session.send(inner.encode() + b"\n")
        session.expect(b"ready> ")
        session.send(b"\x1a")  # Ctrl-Z at the prompt: the command stops, then stockade does
        assert b"Stopped" in session.expect(b"OUTER> ")
        session.send(b"fg\n")
        session.send(b"go\n")  # the command reads the terminal again: it is in the foreground
        session.expect(b"tick 3")
        session.send(b"\x03")  # Ctrl-C reaches the command
        session.expect(b"OUTER> ")
        session.send(b"echo code=$?\n")
        assert b"code=130" in session.expect(b"OUTER> ")
        session.send(b"exit\n")
        session.wait()
    finally:
        session.close()
