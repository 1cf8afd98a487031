"""When the supervisor records the run's end early: as soon as init says the command exited,
while the kernel tears the sandbox down, and only when that end is settled (supervisor.py
`_command_exited`). The end-to-end records are checked in tests/sandbox/test_services.py."""

from __future__ import annotations

import os
import signal

import pytest

from stockade.isolation.channel import SetupError, report_failure
from stockade.supervisor import RunOptions, Supervisor


class Services:
    """Stands in for the running services: what the supervisor asks them to record."""

    def __init__(self) -> None:
        self.closed: list[tuple[int | None, str]] = []

    def close(self, exit_code: int | None = None, status: str = "exited") -> None:
        self.closed.append((exit_code, status))


def _failure_record(error: SetupError) -> bytes:
    read_fd, write_fd = os.pipe()
    report_failure(write_fd, error)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        return f.read()


def _exited(data: dict[str, object], *, status_done: bool = True, status_data: bytes = b"",
            timed_out: bool = False, interrupted: int = 0,
            failures: tuple[SetupError, ...] = ()) -> list[tuple[int | None, str]]:
    supervisor = Supervisor(RunOptions(argv=("true",)))
    supervisor.status_data, supervisor.timed_out, supervisor.interrupted = status_data, timed_out, interrupted
    supervisor.failures = list(failures)
    services = Services()
    supervisor._command_exited(data, status_done, services)  # type: ignore[arg-type]
    return services.closed


@pytest.mark.parametrize(("code", "recorded"), [
    (0, (0, "exited")), (3, (3, "exited")), (143, (143, "killed")),
])
def test_a_settled_end_is_recorded_at_once(code, recorded):
    assert _exited({"code": code}) == [recorded]


def test_a_timeout_is_recorded_as_the_timeout():
    assert _exited({"code": 128 + signal.SIGTERM}, timed_out=True) == [(124, "timeout")]


@pytest.mark.parametrize("case", [
    {"status_done": False},  # the command's exec failure may still be on its way
    {"status_data": _failure_record(SetupError("exec", "cannot run 'x': No such file", 2))},
    {"interrupted": signal.SIGINT},
    {"failures": (SetupError("services", "the store is read-only"),)},  # the sandbox was killed
])
def test_an_unsettled_end_waits_for_the_launcher(case):
    assert _exited({"code": 127}, **case) == []


@pytest.mark.parametrize("data", [{}, {"code": "0"}, {"code": True}, {"code": None}, [0], None])
def test_a_malformed_message_records_nothing(data):
    assert _exited(data) == []


@pytest.mark.parametrize("launcher", [True, False])
def test_ready_waits_for_the_launchers_message_that_init_may_overtake(launcher):
    """The launcher sends the listener and init's pid after forking init, and init sends /proc
    and "ready" on the same channel: under load init's messages can come first (seen as an
    AssertionError traceback, exit 1). The supervisor waits for every part."""
    import socket

    from stockade.isolation import channel

    ours, theirs = socket.socketpair()
    listener, wake_r = socket.socket(), os.pipe()[0]
    try:
        channel.send(theirs, "procfs", fds=(os.open("/proc", os.O_PATH | os.O_DIRECTORY),))
        channel.send(theirs, "ready", {"landlock_abi": 1})
        if launcher:
            channel.send(theirs, "launcher", {"init_pid": 4242}, fds=(listener.fileno(),))
        setup = Supervisor(RunOptions(argv=("true",)))._await_ready(ours, -1, wake_r, launcher=launcher)
        assert setup is not None and setup.facts == {"landlock_abi": 1} and setup.procfs is not None
        assert (setup.init_pid, setup.listener is not None) == ((4242, True) if launcher else (None, False))
    finally:
        for sock in (ours, theirs, listener):
            sock.close()
