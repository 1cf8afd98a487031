"""The exec_info payload of `stockade exec`: what the supervisor sends, and what the caller accepts (pure)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from stockade.errors import StockadeError
from stockade.isolation.enter import EXEC_FORMAT, exec_info_payload, parse_exec_info
from stockade.isolation.paths import PathGrant
from stockade.isolation.privileges import RunAs
from stockade.isolation.seccomp import DENYLIST
from stockade.isolation.spec import LANDLOCK_ONLY, NAMESPACES, NAMESPACES_ROOT, NAMESPACES_ROOTLESS, SandboxSpec


@dataclasses.dataclass
class Processes:
    launcher_pid: int | None = 4100
    init_pid: int = 4101
    agent_pid: int | None = 2


def _spec(**changes) -> SandboxSpec:
    base = dict(
        name="brave-otter", argv=("claude",), env={"PATH": "/usr/bin", "HTTPS_PROXY": "http://127.0.0.1:3128",
                                                   "GITHUB_TOKEN": "stockade-placeholder-1"},
        cwd="/home/u/project", isolation=NAMESPACES, namespaces=NAMESPACES_ROOTLESS, uid=1000, gid=1000,
        run_as=None, plan=None, landlock_grants=(PathGrant("/usr", False), PathGrant("/home/u/project", True, "workdir"),
                                                 PathGrant("/proc", False, "implicit")),
        hard=False, seccomp=DENYLIST, state_dir="/home/u/.local/state/stockade", socket_candidates=("/run/x.sock",),
        terminal_fd=0, supervisor_pid=4000, proxy_port=3128, ca_dir="/run/stockade",
    )
    base.update(changes)
    return SandboxSpec(**base)


def _reply(spec: SandboxSpec, processes: Processes | None = None, **top) -> dict:
    """As it crosses the control socket: JSON."""
    processes = processes or Processes()
    reply = {"ok": True, "agent_pid": processes.agent_pid, "exec": exec_info_payload(spec, processes), **top}
    return json.loads(json.dumps(reply))


def test_the_payload_carries_every_layer_of_the_command():
    spec = _spec()
    target = parse_exec_info(_reply(spec))
    assert (target.name, target.isolation, target.namespaces) == ("brave-otter", NAMESPACES, NAMESPACES_ROOTLESS)
    assert (target.supervisor_pid, target.launcher_pid, target.init_pid, target.uid) == (4000, 4100, 4101, 1000)
    assert target.env == spec.env and target.cwd == "/home/u/project" and target.run_as is None
    assert target.grants == spec.landlock_grants and target.hard is False and target.tcp_port is None
    assert target.state_dir == spec.state_dir
    # The seccomp table round-trips exactly (the reasons are documentation, not filter input).
    assert target.seccomp == tuple(b._replace(reason="") for b in DENYLIST)


def test_the_payload_is_the_sandboxs_environment_and_nothing_of_the_supervisors():
    payload = exec_info_payload(_spec(), Processes())
    assert payload["env"]["GITHUB_TOKEN"] == "stockade-placeholder-1"
    assert "argv" not in payload and "socket_candidates" not in payload and "terminal_fd" not in payload
    assert payload["format"] == EXEC_FORMAT


def test_root_mode_carries_the_run_as_identity():
    run_as = RunAs("nobody", 65534, 65534, (65534,), "/nonexistent")
    target = parse_exec_info(_reply(_spec(run_as=run_as, namespaces=NAMESPACES_ROOT, uid=0, gid=0)))
    assert target.run_as == run_as and target.uid == 0 and not target.rootless
    assert "user" not in target.namespaces


def test_landlock_only_mode_carries_the_proxy_port_rule_and_needs_no_launcher():
    spec = _spec(isolation=LANDLOCK_ONLY, namespaces=(), proxy_port=41000)
    target = parse_exec_info(_reply(spec, Processes(launcher_pid=None)))
    assert target.tcp_port == 41000 and target.launcher_pid is None and target.init_pid == 4101


def test_pids_may_come_from_the_top_level_reply():
    reply = _reply(_spec())
    for key in ("launcher_pid", "init_pid"):
        reply[key] = reply["exec"].pop(key)
    target = parse_exec_info(reply)
    assert (target.launcher_pid, target.init_pid) == (4100, 4101)


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("exec"), "no `exec` description"),
    (lambda r: r.__setitem__("exec", {}), "exec format None"),
    (lambda r: r["exec"].__setitem__("format", EXEC_FORMAT + 1), f"exec format {EXEC_FORMAT + 1}"),
    (lambda r: r.__setitem__("agent_pid", None), "still starting"),
    (lambda r: r["exec"].pop("launcher_pid"), "no launcher/init pid"),
    (lambda r: r["exec"].__setitem__("namespaces", ["user", "cgroup"]), "namespaces"),
    (lambda r: r["exec"].__setitem__("namespaces", []), "namespaces"),
    (lambda r: r["exec"].__setitem__("seccomp", []), "empty seccomp table"),
    (lambda r: r["exec"].__setitem__("run_as", {"user": "root", "uid": 0, "gid": 0, "groups": [], "home": "/"}),
     "run_as is root"),
    (lambda r: r["exec"].__setitem__("supervisor_pid", True), "'supervisor_pid' is bool"),
    (lambda r: r["exec"]["landlock"].pop("grants"), "grants"),
])
def test_an_unusable_reply_is_refused_with_a_reason(change, message):
    reply = _reply(_spec())
    change(reply)
    with pytest.raises(StockadeError) as info:
        parse_exec_info(reply)
    assert message in str(info.value)


def test_landlock_only_without_a_port_is_refused():
    reply = _reply(_spec(isolation=LANDLOCK_ONLY, namespaces=()), Processes(launcher_pid=None))
    reply["exec"]["landlock"]["tcp_port"] = None
    with pytest.raises(StockadeError, match="no proxy port"):
        parse_exec_info(reply)
