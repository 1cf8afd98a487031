"""Detection findings end to end: real clients through the in-process proxy, with binary
identity, and the FindingEvent (and its OCSF form) the proxy records for an SSRF attempt and
for an executable replaced after its first use."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from stockade.events.ocsf import to_ocsf
from stockade.events.types import Action, FindingEvent, NetworkEvent
from stockade.network.tofu import BinaryHasher

from .support.harness import Net, net  # noqa: F401
from .support.clients import allow, run_clients

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is needed (scripts/system-deps.sh)"),
]

PROXY_PORT = 41317


def curl(tool: str, host: str) -> str:
    """A curl command line through the proxy; {proxy} and {port} are filled in per run."""
    return f"{tool} -sS --max-time 10 -w '\\n%{{{{http_code}}}}' -x {{proxy}} http://{host}:{{port}}/x"


def through_proxy(testnet, net: Net, policy, names, commands, hasher):
    """Each command's (returncode, stdout), and every event the proxy recorded."""
    results, events = run_clients(testnet, net, policy, commands, port=PROXY_PORT, hasher=hasher,
                                  names=names)
    return [(rc, out) for rc, out, _err in results], events


def status_and_body(out: str) -> tuple[int, dict]:
    body, code = out.rsplit("\n", 1)
    return int(code), json.loads(body) if body.strip() else {}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_ssrf_attempt_records_a_finding_with_its_caller(testnet, net: Net):
    def policy(port: int) -> str:
        return f"""
        version: 1
        network_policies:
          apps:
            endpoints:
              - {{ host: loop.test, port: {port} }}
              - {{ host: internal.test, port: {port} }}
            binaries: [{{ path: /usr/bin/curl }}]
        """
    names = {"loop.test": ["127.0.0.1"], "internal.test": ["10.1.2.3"]}
    commands = [curl("curl", host) for host in ("loop.test", "internal.test")]
    results, events = through_proxy(testnet, net, policy, names, commands, BinaryHasher())
    for rc, out in results:
        status, body = status_and_body(out)
        assert status == 403 and body["error"] == "ssrf_denied", out
    findings = [e for e in events if isinstance(e, FindingEvent)]
    assert [(f.kind, f.host, f.severity) for f in findings] == [
        ("ssrf", "loop.test", "high"),  # loopback: never allowed
        ("ssrf", "internal.test", "medium"),  # private: allowed_ips could permit it
    ]
    port = findings[0].port
    assert port is not None and port > 0
    for finding, address in zip(findings, ("127.0.0.1", "10.1.2.3")):
        assert finding.action is Action.DENIED
        assert finding.title == f"SSRF attempt blocked: {finding.host}:{port}"
        assert address in finding.detail
        assert finding.actor.binary == "/usr/bin/curl"
        assert finding.actor.pid and finding.actor.sha256 == sha256(Path("/usr/bin/curl"))
    # Beside the finding, the deny itself, attributed the same way.
    denials = [e for e in events if isinstance(e, NetworkEvent) and e.stage == "ssrf"]
    assert [d.actor for d in denials] == [f.actor for f in findings]

    o = to_ocsf(findings[0], sandbox="sb")
    assert o["class_uid"] == 2004 and o["finding_info"]["uid"] == "ssrf"
    assert (o["severity"], o["action"], o["disposition"]) == ("High", "Denied", "Blocked")
    evidence = o["evidences"][0]
    assert evidence["dst_endpoint"] == {"hostname": "loop.test", "port": port}
    process = evidence["actor"]["process"]
    assert process["file"]["path"] == "/usr/bin/curl" and process["pid"] == findings[0].actor.pid
    assert process["file"]["hashes"][0]["value"] == sha256(Path("/usr/bin/curl"))
    assert "127.0.0.1" in evidence["data"]["detail"]


def test_a_binary_replaced_after_its_first_use_records_a_finding_with_both_hashes(
        testnet, net: Net, tmp_path: Path):
    tool = tmp_path / "bin" / "fetch"
    tool.parent.mkdir()
    shutil.copy2("/usr/bin/curl", tool)
    tmp_path.chmod(0o755)
    binary = os.path.realpath(tool)

    policy = allow(binary)
    names = {"origin.test": [net.a]}
    command = curl(binary, "origin.test")
    hasher = BinaryHasher()
    trusted = sha256(tool)
    (first,), events = through_proxy(testnet, net, policy, names, [command], hasher)
    assert status_and_body(first[1])[0] == 200
    assert not [e for e in events if isinstance(e, FindingEvent)]

    with open(tool, "ab") as f:  # same path, different content
        f.write(b"\0tampered")
    tampered = sha256(tool)
    # Twice: the first refusal hashes the new content, the second is refused from the cache of
    # known-bad files without hashing again; both findings name the process and both hashes.
    results, events = through_proxy(testnet, net, policy, names, [command, command], hasher)
    for _rc, out in results:
        status, body = status_and_body(out)
        assert status == 403 and body["reason_code"] == "binary_changed", out
    findings = [e for e in events if isinstance(e, FindingEvent)]
    assert len(findings) == 2
    for finding in findings:
        assert (finding.kind, finding.severity) == ("binary_changed", "critical")
        assert finding.actor.binary == binary
        assert isinstance(finding.actor.pid, int) and finding.actor.pid > 0
        assert finding.actor.sha256 == tampered and finding.trusted_sha256 == trusted
        assert binary in finding.detail

        o = to_ocsf(finding, sandbox="sb")
        assert o["class_uid"] == 2004 and o["finding_info"]["uid"] == "binary_changed"
        assert o["severity"] == "Critical" and o["is_alert"] is True
        evidence = o["evidences"][0]
        process = evidence["actor"]["process"]
        assert process["pid"] == finding.actor.pid
        assert process["file"]["path"] == binary and process["name"] == "fetch"
        assert process["file"]["hashes"] == [{"algorithm_id": 3, "algorithm": "SHA-256", "value": tampered}]
        assert evidence["file"]["path"] == binary
        assert evidence["data"]["trusted_sha256"] == trusted
        assert evidence["data"]["observed_sha256"] == tampered
    assert findings[0].actor.pid != findings[1].actor.pid  # each run's own process
