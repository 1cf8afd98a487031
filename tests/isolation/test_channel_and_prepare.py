"""The control channel framing, the status records, and deciding the spec from a policy."""

from __future__ import annotations

import os
import socket

import pytest

from stockade.errors import StockadeError
from stockade.isolation import channel
from stockade.isolation.channel import SetupError, parse_failures, report_failure
from stockade.isolation.prepare import (
    Request, grants_from_policy, listening_unix_sockets, prepare, socket_candidates,
)
from stockade.isolation.privileges import resolve_run_as
from stockade.policy.model import (
    Compatibility, FilesystemPolicy, LandlockPolicy, Policy, ProcessPolicy,
)


def _policy(read_only=("/usr",), read_write=(), include_workdir=True, hard=False, process=None) -> Policy:
    return Policy(
        version=1,
        filesystem=FilesystemPolicy(include_workdir, tuple(read_only), tuple(read_write)),
        landlock=LandlockPolicy(Compatibility.HARD_REQUIREMENT if hard else Compatibility.BEST_EFFORT),
        process=process, network_policies={},
    )


def test_messages_carry_data_a_blob_and_descriptors():
    a, b = socket.socketpair()
    r, w = os.pipe()
    with a, b:
        channel.send(a, "hello", {"n": 1}, fds=(r,), blob=b"blob")
        channel.send(a, "big", blob=b"y" * 200000)
        msg = channel.recv(b)
        assert (msg.kind, msg.data, msg.blob, len(msg.fds)) == ("hello", {"n": 1}, b"blob", 1)
        os.write(w, b"!")
        assert os.read(msg.fds[0], 1) == b"!"
        os.close(msg.fds[0])
        big = channel.recv(b)
        assert big.kind == "big" and big.blob == b"y" * 200000
        a.close()
        assert channel.recv(b) is None
    os.close(r)
    os.close(w)


def test_a_peer_that_died_with_our_message_unread_reads_as_the_end():
    """The supervisor kills init (say, its services failed) before init read "start": the
    kernel resets the connection, and the supervisor's loop must see an end, not a crash."""
    a, b = socket.socketpair()
    with a, b:
        channel.send(a, "start", blob=b"x" * 1000)
        b.close()  # closed with the message unread: the kernel resets a's end
        assert channel.recv(a) is None


def test_status_records_round_trip():
    r, w = os.pipe()
    report_failure(w, SetupError("exec", "cannot run 'x': No such file or directory", 2))
    os.close(w)
    (err,) = parse_failures(os.read(r, 65536))
    os.close(r)
    assert (err.layer, err.errno, err.message) == ("exec", 2, "cannot run 'x': No such file or directory")


def test_grants_include_the_workdir_only_when_asked():
    assert [g.path for g in grants_from_policy(_policy(), "/w")] == ["/usr", "/w"]
    assert [g.path for g in grants_from_policy(_policy(include_workdir=False), "/w")] == ["/usr"]


def test_socket_candidates_come_from_the_environment_and_proc_net_unix(tmp_path):
    unix = tmp_path / "unix"
    unix.write_text(
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 2001 /run/user/1000/bus\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 2002 @/tmp/.X11-unix/X0\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 2003\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 2004 /home/u/my sock\n"
    )
    assert listening_unix_sockets(str(unix)) == ["/run/user/1000/bus", "/home/u/my sock"]
    found = socket_candidates({"SSH_AUTH_SOCK": "/tmp/ssh-x/agent.1",
                               "DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/7/bus,guid=1"}, 7)
    assert "/tmp/ssh-x/agent.1" in found and "/run/user/7/bus" in found and "/var/run/docker.sock" in found


def test_hard_requirement_refuses_a_missing_path_before_anything_starts(tmp_path):
    req = Request(argv=("true",), policy=_policy(read_only=("/usr", "/nonexistent/x"), hard=True), name="t")
    with pytest.raises(StockadeError, match=r"hard_requirement.*/nonexistent/x \(path does not exist\)"):
        prepare(req, state_dir=str(tmp_path))


def test_best_effort_plans_around_a_missing_path(tmp_path):
    req = Request(argv=("true",), policy=_policy(read_only=("/usr", "/nonexistent/x")), name="t",
                  workdir=str(tmp_path))
    prepared = prepare(req, state_dir=str(tmp_path / "state"), env={"PATH": "/usr/bin"})
    spec = prepared.spec
    assert spec.plan is not None and spec.plan.skipped == (("/nonexistent/x", "path does not exist"),)
    assert spec.cwd == os.path.realpath(tmp_path)
    assert spec.env["STOCKADE_SANDBOX"] == "t"
    assert "/run/stockade" in {g.path for g in spec.landlock_grants}


@pytest.mark.skipif(os.geteuid() != 0, reason="the run-as user is resolved in root mode only")
def test_run_as_defaults_to_nobody_and_never_root():
    assert resolve_run_as(None, None).user == "nobody"
    with pytest.raises(ValueError, match="not found"):
        resolve_run_as("__nonexistent_test_user_42__", None)
    with pytest.raises(ValueError, match="not found"):
        resolve_run_as("nobody", "__nonexistent_test_group_42__")
    with pytest.raises(ValueError, match="never runs as root"):
        resolve_run_as("root", None)
    with pytest.raises(StockadeError, match="not found"):
        prepare(Request(argv=("true",), name="t",
                        policy=_policy(process=ProcessPolicy(run_as_user="__nonexistent_test_user_42__"))),
                state_dir="/tmp")


def test_the_workdir_must_exist_and_never_makes_root_writable(tmp_path):
    with pytest.raises(StockadeError, match="not a directory"):
        prepare(Request(argv=("true",), policy=_policy(), name="t", workdir=str(tmp_path / "nope")),
                state_dir=str(tmp_path))
    with pytest.raises(StockadeError, match="refusing to make / writable"):
        prepare(Request(argv=("true",), policy=_policy(), name="t", workdir="/"), state_dir=str(tmp_path))
