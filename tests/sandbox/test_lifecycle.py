"""Exit codes, signals, timeouts, the startup report and failures before the command starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.sandbox.conftest import SANDBOX_PYTHON

pytestmark = pytest.mark.sandbox


@pytest.mark.parametrize("argv, code", [
    (["true"], 0),
    (["sh", "-c", "exit 7"], 7),
    (["sh", "-c", "kill -KILL $$"], 137),
    (["sh", "-c", "kill -TERM $$"], 143),
])
def test_the_commands_status_is_stockades(sandbox, argv, code):
    assert sandbox.run(argv).returncode == code


def test_a_missing_command_is_127_and_a_non_executable_one_126(sandbox):
    missing = sandbox.run(["no-such-command-here"])
    assert missing.returncode == 127
    assert "cannot run 'no-such-command-here': No such file or directory" in missing.stderr
    (sandbox.work / "data.txt").write_text("not a program")
    not_exec = sandbox.run(["./data.txt"])
    assert not_exec.returncode == 126, not_exec.stderr
    assert "Permission denied" in not_exec.stderr


def test_timeout_stops_the_command_with_124(sandbox):
    start = time.monotonic()
    result = sandbox.run(["sleep", "30"], args=("-q", "--timeout", "1"))
    assert result.returncode == 124
    assert time.monotonic() - start < 10


def test_timeout_kills_a_command_that_ignores_sigterm(sandbox):
    result = sandbox.run(["sh", "-c", "trap '' TERM; sleep 30"], args=("-q", "--timeout", "0.5"))
    assert result.returncode == 124


def test_signals_to_stockade_reach_the_command(sandbox):
    """Every forwarded signal (INT, TERM, HUP, QUIT, USR1, USR2, WINCH) arrives, in order, as
    itself; the command's own exit code comes back."""
    forwarded = [signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGQUIT, signal.SIGWINCH,
                 signal.SIGINT]
    code = ("import signal, sys\n"
            f"wanted = {{{', '.join(f'signal.{s.name}' for s in forwarded)}, signal.SIGTERM}}\n"
            "signal.pthread_sigmask(signal.SIG_BLOCK, wanted)\n"
            "print('ready', flush=True)\n"
            "while True:\n"
            "    sig = signal.sigwait(wanted)\n"
            "    if sig == signal.SIGTERM:\n"
            "        sys.exit(42)\n"
            "    print(signal.Signals(sig).name, flush=True)\n")
    proc = sandbox.popen([SANDBOX_PYTHON, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        for sig in forwarded:
            proc.send_signal(sig)
            assert proc.stdout.readline().strip() == sig.name
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 42
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_bad_policy_fails_with_125_before_anything_starts(sandbox):
    result = sandbox.run(["true"], policy="version: 1\nfilesystem_policy: [not, a, mapping\n")
    assert result.returncode == 125
    assert "stockade:" in result.stderr and "policy" in result.stderr


def test_hard_requirement_with_a_missing_path_is_125(sandbox):
    policy = ("version: 1\nfilesystem_policy:\n  read_only: [/usr, /nonexistent/stockade/test/path]\n"
              "landlock:\n  compatibility: hard_requirement\n")
    result = sandbox.run(["true"], policy=policy)
    assert result.returncode == 125
    assert "hard_requirement" in result.stderr and "/nonexistent/stockade/test/path" in result.stderr
    assert "does not exist" in result.stderr


def test_best_effort_skips_a_missing_path_and_says_so(sandbox):
    policy = ("version: 1\nfilesystem_policy:\n  include_workdir: true\n"
              "  read_only: [/usr, /lib, /lib64, /bin, /etc, /nonexistent/stockade/test/path]\n")
    result = sandbox.run(["true"], policy=policy, args=())
    assert result.returncode == 0, result.stderr
    assert "skipped /nonexistent/stockade/test/path (path does not exist)" in result.stderr


def test_the_startup_report_says_what_is_enforced(sandbox):
    result = sandbox.run(["true"], args=("--name", "report-test"))
    assert result.returncode == 0, result.stderr
    line = result.stderr.strip().splitlines()[0]
    assert line.startswith("stockade: sandbox report-test | ")
    mode = "rootless as uid 65534" if sandbox.mode == "rootless" else "root as nobody"
    assert mode in line
    assert "namespaces " in line and "landlock ABI " in line and "seccomp " in line
    assert "proxy 127.0.0.1:3128" in line and "policy <default>" in line


def test_rootless_mode_reports_that_the_process_section_is_not_honoured(sandbox):
    policy = "version: 1\nfilesystem_policy:\n  read_only: [/usr, /lib, /lib64, /bin]\nprocess:\n  run_as_user: daemon\n"
    result = sandbox.run(["id", "-u"], policy=policy, args=())
    assert result.returncode == 0, result.stderr
    if sandbox.mode == "rootless":
        assert "process.run_as_user/run_as_group NOT APPLIED (rootless" in result.stderr
        assert result.stdout.strip() == "65534"
    else:
        assert result.stdout.strip() == str(__import__("pwd").getpwnam("daemon").pw_uid)


def test_root_mode_refuses_a_missing_run_as_user(sandbox):
    if sandbox.mode != "root":
        pytest.skip("run_as_user only applies in root mode")
    policy = "version: 1\nprocess:\n  run_as_user: stockadenosuchuser\n"
    result = sandbox.run(["true"], policy=policy)
    assert result.returncode == 125
    assert "stockadenosuchuser" in result.stderr and "not found" in result.stderr


def test_a_second_sandbox_with_the_same_name_is_refused(sandbox):
    first = sandbox.popen(["sh", "-c", "touch started; sleep 30"], args=("-q", "--name", "twin"),
                          stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not (sandbox.work / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None
        second = sandbox.run(["true"], args=("-q", "--name", "twin"))
        assert second.returncode == 125 and "already running" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=20)


def test_user_namespaces_unavailable_is_125_with_the_cause_and_the_fix(sandbox):
    if sandbox.mode != "rootless":
        pytest.skip("only rootless mode needs user namespaces")
    # Root makes a user namespace mapping uids 0-65535 to themselves (as newuidmap would), caps
    # user.max_user_namespaces at 0 inside it, and runs rootless stockade there as nobody.
    argv = sandbox.command(["true"])[sandbox.command(["true"]).index("--", 0) + 1:]  # drop setpriv
    result = subprocess.run([sys.executable, "-c", _userns_parent_script(), *argv], cwd=sandbox.work,
                            env=sandbox.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 125, result.stderr
    assert "max_user_namespaces" in result.stderr and "--isolation landlock" in result.stderr


def _userns_parent_script() -> str:
    return (
        "import ctypes, os, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "r, w = os.pipe()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.close(w)\n"
        "    if libc.unshare(0x10000000) != 0:\n"
        "        os._exit(99)\n"
        "    os.write(1, b'')\n"
        "    os.read(r, 1)\n"
        "    with open('/proc/sys/user/max_user_namespaces', 'w') as f:\n"
        "        f.write('0')\n"
        "    os.setgroups([])\n"
        "    os.setresgid(65534, 65534, 65534)\n"
        "    os.setresuid(65534, 65534, 65534)\n"
        "    os.execvp(sys.argv[1], sys.argv[1:])\n"
        "os.close(r)\n"
        "import time\n"
        "for _ in range(200):\n"
        "    if os.readlink(f'/proc/{pid}/ns/user') != os.readlink('/proc/self/ns/user'):\n"
        "        break\n"
        "    time.sleep(0.01)\n"
        "for name, text in (('uid_map', '0 0 65536'), ('setgroups', 'allow'), ('gid_map', '0 0 65536')):\n"
        "    with open(f'/proc/{pid}/{name}', 'w') as f:\n"
        "        f.write(text)\n"
        "os.write(w, b'x')\n"
        "_, status = os.waitpid(pid, 0)\n"
        "sys.exit(os.waitstatus_to_exitcode(status))\n"
    )


def test_no_sandbox_process_outlives_stockade(sandbox):
    marker = f"{int(time.time() * 1000) % 100000}.25"
    result = sandbox.run(["sh", "-c", f"sleep {marker} & sleep {marker} & echo started"])
    assert result.returncode == 0 and result.stdout.strip() == "started"
    time.sleep(0.2)
    survivors = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    survivors.append(entry)
        except OSError:
            continue
    assert survivors == []
