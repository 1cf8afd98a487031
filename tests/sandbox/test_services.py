"""The services around a sandbox (proxy, store, control socket) under `stockade run`: the run is
registered and finished, and a sandbox whose services cannot start does not run unguarded."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

pytestmark = pytest.mark.sandbox


def test_the_run_is_registered_with_its_exit(sandbox):
    result = sandbox.run(["sh", "-c", "exit 3"], args=("-q", "--name", "reg"))
    assert result.returncode == 3, result.stderr
    listed = subprocess.run([*sandbox.prefix, "list", "--json"], env=sandbox.env, capture_output=True,
                            text=True, timeout=60)
    [run] = json.loads(listed.stdout)
    assert (run["name"], run["status"], run["exit_code"], run["policy_revision"]) == ("reg", "exited 3", 3, 1)


def test_the_run_ends_with_the_stores_connection_left_open_and_nothing_lost(sandbox):
    """`stockade run` ends without closing the store (no checkpoint: Store.leave_open, os._exit):
    the WAL stays, and what the run recorded is there for the next command."""
    result = sandbox.run(["sh", "-c", "echo out; echo err >&2"], args=("--name", "left-open"))
    assert result.returncode == 0 and result.stdout == "out\n", result
    assert result.stderr.startswith("stockade: sandbox left-open") and result.stderr.endswith("err\n")
    assert (sandbox.state / "stockade" / "stockade.db-wal").stat().st_size > 0
    listed = subprocess.run([*sandbox.prefix, "list", "--json"], env=sandbox.env, capture_output=True,
                            text=True, timeout=60)
    [run] = json.loads(listed.stdout)
    assert (run["name"], run["status"], run["policy_revision"]) == ("left-open", "exited 0", 1)
    logs = subprocess.run([*sandbox.prefix, "logs", "left-open", "--json"], env=sandbox.env, capture_output=True,
                          text=True, timeout=60)
    events = [json.loads(line) for line in logs.stdout.splitlines()]
    assert [e.get("message") for e in events if "policy" in e.get("message", "")] == ["policy loaded"]
    assert [e["activity_name"] for e in events if e["class_uid"] == 1007] == ["Launch", "Terminate"]


def test_services_that_cannot_start_end_the_sandbox_with_125(sandbox):
    if sandbox.mode == "root":
        pytest.skip("root writes a read-only store all the same")
    assert sandbox.run(["true"]).returncode == 0  # creates the store
    db = sandbox.state / "stockade" / "stockade.db"
    os.chmod(db, 0o444)  # readable (the routes are read before the start), not writable
    started = time.monotonic()
    result = sandbox.run(["sh", "-c", "sleep 30; echo unguarded"], timeout=60)
    assert result.returncode == 125, result.stderr
    assert time.monotonic() - started < 20 and "unguarded" not in result.stdout
    assert result.stderr.startswith("stockade: sandbox setup failed (services): "), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_timeout_is_recorded(sandbox):
    result = sandbox.run(["sleep", "30"], args=("-q", "--name", "slow", "--timeout", "0.5"))
    assert result.returncode == 124, result.stderr
    cli = lambda *a: subprocess.run([*sandbox.prefix, *a], env=sandbox.env, capture_output=True,  # noqa: E731
                                    text=True, timeout=60).stdout
    [run] = json.loads(cli("list", "--json"))
    assert (run["status"], run["exit_code"]) == ("timeout 124", 124)
    events = [json.loads(line) for line in cli("logs", "slow", "--json").splitlines()]
    process = [e["activity_name"] for e in events if e["class_uid"] == 1007]
    assert process == ["Launch", "Terminate", "Terminate"], process  # the timeout, then the exit


@pytest.mark.parametrize(("command", "code", "status"), [
    (["sh", "-c", "kill -TERM $$"], 143, "killed 143"),
    (["/nonexistent/command"], 127, "failed 127"),
])
def test_how_the_run_ended_is_recorded(sandbox, command, code, status):
    """The run's end as `stockade list` shows it, for a command killed by a signal and one that
    could not be started (the services record it while the sandbox is torn down)."""
    result = sandbox.run(command, args=("-q", "--name", "ending"))
    assert result.returncode == code, result.stderr
    listed = subprocess.run([*sandbox.prefix, "list", "--json"], env=sandbox.env, capture_output=True,
                            text=True, timeout=60)
    [run] = json.loads(listed.stdout)
    assert (run["status"], run["exit_code"]) == (status, code)


def test_the_command_keeps_the_open_file_limit_it_was_started_with(sandbox):
    """The proxy raises its process's soft open-file limit toward what 1,024 connections need;
    the command, forked before the proxy starts, keeps the limit stockade was started with."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    for args in ((), ("--isolation", "landlock")):
        result = sandbox.run(["sh", "-c", "ulimit -n"], args=args,
                             preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (300, hard)))
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "300", args
        assert "open-file limit" not in result.stderr  # raised within the hard limit: nothing to say


def test_a_hard_open_file_limit_too_low_for_the_proxy_is_in_the_report(sandbox):
    import resource

    result = sandbox.run(["sh", "-c", "ulimit -n"], args=(),
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512)))
    assert result.returncode == 0 and result.stdout.strip() == "512", result.stderr
    report = result.stderr.splitlines()[0]
    assert "the open-file limit (512" in report and "168 connections at once instead of 1024" in report
