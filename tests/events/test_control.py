"""The control socket: protocol round trips, malformed input, mode 0600, and peers refused when
they run in another namespace (a sandbox) or as another uid."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile

import pytest

from stockade.control import (
    OPS,
    ControlClient,
    ControlError,
    ControlServer,
    acall,
    call,
    namespaces,
    parse_request,
    peer_problem,
)
from stockade.errors import StockadeError
from stockade.events.types import ListRecorder

from ..support.threadloop import ThreadLoop as Loop


class Supervisor:
    """Handlers with state, to show malformed requests never lose it."""

    def __init__(self) -> None:
        self.policy = "version: 1\n"
        self.revision = 1
        self.approved: list[int] = []

    def status(self) -> dict:
        return {"revision": self.revision, "state": "running"}

    async def policy_set(self, yaml_text: str, source: str = "?", wait: bool = False) -> dict:
        await asyncio.sleep(0)
        if "static" in yaml_text:
            raise ControlError("static_change", "filesystem_policy changed", data={"differences": ["a", "b"]})
        self.policy, self.revision = yaml_text, self.revision + 1
        return {"revision": self.revision, "source": source}

    def policy_show(self, revision: int | None = None) -> dict:
        return {"yaml_text": self.policy, "revision": revision or self.revision}

    def rules_approve(self, id: int) -> dict:  # noqa: A002 - the protocol's name
        if id == 13:
            raise StockadeError("proposal 13 is already rejected")
        if id == 99:
            raise RuntimeError("bug in a handler")
        if id == 7:
            raise ControlError("not_found", "no proposal 7", hint="`stockade rules` lists them")
        if id == 8:
            raise StockadeError("proposal 8 is stale", hint="run `stockade rules` again")
        self.approved.append(id)
        return {"id": id}

    def handlers(self) -> dict:
        return {"status": self.status, "policy_set": self.policy_set, "policy_show": self.policy_show,
                "rules_approve": self.rules_approve}


@pytest.fixture()
def served(tmp_path):
    loop = Loop()
    sup = Supervisor()
    recorder = ListRecorder()
    path = tmp_path / "control.sock"
    server = ControlServer(path, sup.handlers(), sandbox="sb", recorder=recorder)
    loop.run(server.start())
    yield path, sup, server, recorder
    loop.run(server.close())
    loop.stop()


def test_ops_round_trip_on_one_connection(served):
    path, sup, _, _ = served
    with ControlClient(path) as c:
        assert c.call("ping") == {"ok": True, "pid": os.getpid(), "sandbox": "sb"}
        assert c.call("status") == {"ok": True, "revision": 1, "state": "running"}
        assert c.call("policy_set", yaml_text="version: 1\n# x\n", source="cli")["revision"] == 2
        assert c.call("policy_show")["yaml_text"] == "version: 1\n# x\n"
        assert c.call("policy_show", revision=1)["revision"] == 1
        assert c.call("rules_approve", id=4) == {"ok": True, "id": 4}
    assert sup.approved == [4]
    assert call(path, "status")["revision"] == 2
    assert asyncio.run(acall(path, "status"))["revision"] == 2


def test_handler_errors_become_error_replies_and_the_server_carries_on(served):
    path, sup, _, _ = served
    with ControlClient(path) as c:
        with pytest.raises(ControlError) as info:
            c.call("policy_set", yaml_text="static change")
        assert (info.value.error, info.value.detail, info.value.data) == (
            "static_change", "filesystem_policy changed", {"differences": ["a", "b"]})
        with pytest.raises(ControlError, match="already rejected") as info:
            c.call("rules_approve", id=13)
        assert info.value.error == "failed"
        with pytest.raises(ControlError, match="bug in a handler") as info:
            c.call("rules_approve", id=99)
        assert info.value.error == "internal"
        with pytest.raises(ControlError) as info:
            c.call("exec_info")  # declared op, no handler in this supervisor
        assert info.value.error == "unsupported"
        assert c.call("status")["revision"] == 1
    assert sup.policy == "version: 1\n" and sup.approved == []


def test_hints_reach_the_client_apart_from_the_detail(served):
    path, _, _, _ = served
    with pytest.raises(ControlError) as info:
        call(path, "rules_approve", id=7)
    assert (info.value.error, info.value.detail, info.value.hint) == ("not_found", "no proposal 7",
                                                                      "`stockade rules` lists them")
    assert info.value.data == {}
    with pytest.raises(ControlError) as info:
        call(path, "rules_approve", id=8)
    assert (info.value.detail, info.value.hint) == ("proposal 8 is stale", "run `stockade rules` again")


def raw_exchange(path, payload: bytes) -> list[dict]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(path))
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        except BrokenPipeError:
            pass  # the server answered and hung up before reading everything: read the answer
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines()]


@pytest.mark.parametrize(("payload", "error"), [
    (b"not json\n", "malformed"),
    (b"\xff\xfe\n", "malformed"),
    (b"[1, 2]\n", "malformed"),
    (b'{"no_op": 1}\n', "malformed"),
    (b'{"op": 5}\n', "malformed"),
    (b'{"op": "drop_tables"}\n', "unknown_op"),
    (b'{"op": "rules_approve"}\n', "invalid_request"),
    (b'{"op": "rules_approve", "id": "3"}\n', "invalid_request"),
    (b'{"op": "rules_approve", "id": true}\n', "invalid_request"),
    (b'{"op": "rules_approve", "id": 3, "force": true}\n', "invalid_request"),
    (b'{"op": "policy_set", "yaml_text": null}\n', "invalid_request"),
])
def test_malformed_requests_get_an_error_and_change_nothing(served, payload, error):
    path, sup, _, _ = served
    replies = raw_exchange(path, payload + b'{"op": "status", "request_id": 7}\n')
    assert replies[0]["ok"] is False and replies[0]["error"] == error and replies[0]["detail"]
    assert replies[1] == {"ok": True, "revision": 1, "state": "running", "request_id": 7}  # same connection goes on
    assert sup.approved == [] and sup.revision == 1


def test_an_oversized_request_is_refused_and_the_server_survives(served):
    path, _, _, _ = served
    replies = raw_exchange(path, b'{"op": "policy_set", "yaml_text": "' + b"x" * (9 * 1024 * 1024) + b'"}\n')
    assert replies[0]["error"] == "malformed"
    assert call(path, "status")["ok"]


def test_socket_is_mode_0600_replaces_a_stale_file_and_is_removed_on_close(tmp_path):
    path = tmp_path / "control.sock"
    path.write_text("stale")
    loop = Loop()
    try:
        server = ControlServer(path, {})
        loop.run(server.start())
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert call(path, "ping")["ok"]
        loop.run(server.close())
        assert not path.exists()
    finally:
        loop.stop()
    with pytest.raises(ControlError, match="cannot reach") as info:
        call(path, "ping")
    assert info.value.error == "unavailable"


def test_close_ends_open_client_connections(tmp_path):
    # A client still connected when the server closes: its connection is closed and its handler
    # ends, instead of staying pending until the loop is gone (then, when garbage-collected,
    # the handler's `finally` wrote to a closed loop: an unraisable RuntimeError).
    path = tmp_path / "control.sock"
    loop = Loop()
    try:
        server = ControlServer(path, {})
        loop.run(server.start())
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(5)
            client.connect(str(path))
            client.sendall(b'{"op": "ping"}\n')
            assert json.loads(client.recv(4096))["ok"]
            loop.run(server.close())
            assert client.recv(4096) == b""  # closed by the server, not left idle

            async def pending():
                return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

            assert loop.run(pending()) == []
    finally:
        loop.stop()


def test_handlers_for_undeclared_ops_are_a_programming_error(tmp_path):
    with pytest.raises(ValueError, match="undeclared"):
        ControlServer(tmp_path / "s", {"shell": lambda: {}})


# -- peers --------------------------------------------------------------------------------------

def test_peer_problem_decision():
    me = {"user": (1, 10), "pid": (1, 11), "net": (1, 12), "mnt": (1, 13)}
    assert peer_problem(0, 0, me, me) is None
    assert "uid 1000" in peer_problem(1000, 0, me, me)
    assert "net namespace" in peer_problem(0, 0, {**me, "net": (1, 99)}, me)
    assert "user namespace" in peer_problem(0, 0, {**me, "user": (2, 10)}, me)
    assert "cannot be read" in peer_problem(0, 0, {**me, "mnt": None}, me)


def test_parse_request_is_strict():
    r = parse_request(b'{"op": "rules_reject", "id": 3, "id": 4, "request_id": "x"}')
    assert (r.op, r.params, r.id) == ("rules_reject", {"id": 4}, "x")
    assert set(OPS) >= {"ping", "status", "policy_set", "policy_show", "exec_info", "rules_approve", "rules_reject"}


CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
try:
    s.sendall(b'{"op": "rules_approve", "id": 5}\\n')
except OSError:
    pass
print(s.makefile("rb").readline().decode().strip())
"""


def _unshare_variants() -> list[list[str]]:
    if not shutil.which("unshare"):
        return []
    return [["unshare", "--net"], ["unshare", "--user", "--map-root-user", "--net"], ["unshare", "--mount"],
            ["unshare", "--pid", "--fork"]]


@pytest.mark.parametrize("prefix", _unshare_variants(), ids=lambda p: " ".join(p[1:]))
def test_a_client_in_another_namespace_is_refused_and_recorded(served, prefix):
    path, sup, server, recorder = served
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"{' '.join(prefix)} is not available here: {probe.stderr.decode().strip()}")
    out = subprocess.run([*prefix, sys.executable, "-c", CLIENT, str(path)], capture_output=True, text=True, timeout=30)
    reply = json.loads(out.stdout)
    assert reply["ok"] is False and reply["error"] == "peer_refused"
    assert "namespace" in reply["detail"]
    assert sup.approved == []  # the request never ran
    [finding] = recorder.events
    assert finding.kind == "control_peer_refused" and finding.severity == "high"
    assert server.refused == 1
    # A host-namespace client is still accepted.
    host = subprocess.run([sys.executable, "-c", CLIENT, str(path)], capture_output=True, text=True, timeout=30)
    assert json.loads(host.stdout) == {"ok": True, "id": 5}
    assert sup.approved == [5]


def test_a_client_running_as_another_uid_is_refused(tmp_path):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run a client as nobody")
    # The socket is 0600 in a 0700 directory, so nobody cannot even connect; open both up to show
    # the uid check holds on its own.
    shared = tempfile.mkdtemp(prefix="stockade-ctl-", dir="/tmp")
    os.chmod(shared, 0o755)
    path = os.path.join(shared, "control.sock")
    loop = Loop()
    recorder = ListRecorder()
    server = ControlServer(path, {"rules_approve": lambda id: {"id": id}}, recorder=recorder)
    try:
        loop.run(server.start())
        os.chmod(path, 0o666)
        out = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                              sys.executable, "-I", "-c", CLIENT, str(path)],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        reply = json.loads(out.stdout)
        assert reply["error"] == "peer_refused" and "uid 65534" in reply["detail"]
        assert recorder.events[0].kind == "control_peer_refused"
    finally:
        loop.run(server.close())
        loop.stop()
        shutil.rmtree(shared, ignore_errors=True)


def test_own_namespaces_are_readable():
    assert all(v is not None for v in namespaces("self").values())


def test_a_socket_path_longer_than_sun_path_still_works(tmp_path):
    """A long $XDG_STATE_HOME must not stop the sandbox (the kernel takes 107 bytes at most)."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "control.sock"
    assert len(str(path)) > 107
    loop = Loop()
    server = ControlServer(path, Supervisor().handlers(), sandbox="sb")
    try:
        loop.run(server.start())
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert call(path, "status")["revision"] == 1
        assert loop.run(acall(path, "ping"))["sandbox"] == "sb"
    finally:
        loop.run(server.close())
        loop.stop()
    assert not path.exists()
