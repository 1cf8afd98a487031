"""Issue 6 end to end, on a running sandbox: denials become one proposal per (host, port);
approving one changes the live policy at once; `policy set` refuses static changes and invalid
policies without touching the live one; `logs --follow` keeps up; `list` counts; and a process
in the sandbox's namespaces cannot use the control socket even when it knows the path."""

from __future__ import annotations

import json
import subprocess
import textwrap
import threading
import time

import pytest

from tests.e2e.conftest import E2E, http

pytestmark = [pytest.mark.sandbox, pytest.mark.netns]

CURL = ["curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}"]
URLLIB = textwrap.dedent("""
    import urllib.request as u, urllib.error as e
    try: u.urlopen("http://origin.test:8080/py", timeout=20)
    except e.HTTPError as x: print(x.read().decode()); print(x.code)
""")


def poll(what, check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if check(value):
            return value
        assert time.monotonic() < deadline, f"gave up waiting: {value}"
        time.sleep(0.1)


def test_deny_propose_approve_reload_follow(e2e: E2E):
    policy = e2e.policy()  # no network rules at all
    proc = e2e.start([
        ("deny1", [*CURL, "http://origin.test:8080/a"]),
        ("deny2", [*CURL, "http://origin.test:8080/b"]),
        ("deny_py", [e2e.python, "-c", URLLIB]),
        ("deny_other", [*CURL, "http://secure.test:8443/"]),
        ("go1", {"wait": "go1"}),
        ("approved", [*CURL, "http://origin.test:8080/c"]),
        ("go2", {"wait": "go2"}),
        ("refused", [*CURL, "http://origin.test:8080/d"]),
        ("go3", {"wait": "go3"}),
        ("reloaded", [*CURL, "http://origin.test:8080/e"]),
        ("go4", {"wait": "go4"}),
        ("followed", ["sh", "-c", "date +%s.%N > t0; curl -sS --max-time 20 http://followed.test/"]),
    ], policy=policy)

    # -- exactly one pending proposal per (host, port), with every binary denied there ------------
    e2e.wait_progress("deny_other")
    proposals = poll(lambda: json.loads(e2e.cli("rules", "e2e", "--json").stdout or "[]"),
                     lambda items: len(items) == 2 and sum(p["hit_count"] for p in items) == 4)
    by = {(p["host"], p["port"]): p for p in proposals}
    assert set(by) == {("origin.test", 8080), ("secure.test", 8443)}
    origin = by[("origin.test", 8080)]
    assert origin["status"] == "pending" and origin["rule"] == "allow_origin_test_8080"
    assert origin["hit_count"] == 3 and set(origin["binaries"]) == {"/usr/bin/curl", "/usr/bin/python3.11"}

    # -- approval: the next request is past the policy, without a restart --------------------------
    approved = e2e.cli("rules", "approve", "e2e", str(origin["id"]))
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.strip() == f"approved proposal {origin['id']} (allow_origin_test_8080): policy revision 2"
    e2e.go("go1")
    e2e.wait_progress("approved")
    live = e2e.cli("policy", "show", "e2e")
    assert live.stdout.startswith("# sandbox e2e, revision 2 (live), sha256 ") and "allow_origin_test_8080" in live.stdout
    sha = live.stdout.split("sha256 ")[1].split()[0]
    status = e2e.control("status")
    assert (status["policy_revision"], status["policy_sha256"], status["agent_pid"]) == (2, sha, 2)
    [running] = json.loads(e2e.cli("list", "--json").stdout)
    assert (running["status"], running["policy_revision"], running["denied"]) == ("running", 2, 5)

    # -- refused reloads change nothing ----------------------------------------------------------
    static = e2e.write("static.yaml", policy.read_text().replace("read_write: [/tmp, /dev/null]",
                                                                 "read_write: [/tmp, /dev/null, /var/tmp]"))
    refused = e2e.cli("policy", "set", "e2e", str(static))
    assert refused.returncode == 1 and "only network_policies can change" in refused.stderr
    assert "filesystem_policy.read_write: '/var/tmp' added" in refused.stderr
    invalid = e2e.write("invalid.yaml", "version: 1\nnetwork_policies:\n  x: {endpoints: [{port: 99999}]}\n")
    bad = e2e.cli("policy", "set", "e2e", str(invalid))
    assert bad.returncode == 1 and f"{invalid}:3:" in bad.stderr and "Traceback" not in bad.stderr
    unchanged = e2e.cli("policy", "show", "e2e", "--json")
    assert (json.loads(unchanged.stdout)["revision"], json.loads(unchanged.stdout)["sha256"]) == (2, sha)
    e2e.go("go2")

    # -- a valid reload is live when `policy set` returns -----------------------------------------
    full = e2e.write("full.yaml", policy.read_text().replace("network_policies: {}", textwrap.dedent(f"""\
        network_policies:
          origin:
            endpoints: [{{host: origin.test, port: 8080, allowed_ips: ["{e2e.up.origin}"]}}]
            binaries: [{{path: /usr/bin/curl}}]
        """)))
    e2e.wait_progress("refused")
    reloaded = e2e.cli("policy", "set", "e2e", str(full), "--wait")
    assert reloaded.returncode == 0, reloaded.stderr
    assert reloaded.stdout.startswith("e2e: policy revision 3 is live, sha256 ")
    e2e.go("go3")

    # -- logs --follow shows the next event within a second -------------------------------------
    follower = subprocess.Popen(e2e.argv(["logs", "e2e", "--follow", "--json"]), env=e2e.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    e2e.procs.append(follower)
    arrivals: list[tuple[float, dict]] = []

    def read() -> None:
        for line in follower.stdout:  # type: ignore[union-attr]
            arrivals.append((time.time(), json.loads(line)))

    threading.Thread(target=read, daemon=True).start()
    poll(lambda: len(arrivals), lambda n: n > 0)  # caught up with the history
    e2e.wait_progress("reloaded")
    e2e.go("go4")
    results, _err = e2e.finish(proc)
    seen = poll(lambda: [(t, ev) for t, ev in arrivals if "followed.test" in json.dumps(ev)], bool, 5)
    sent = float((e2e.work / "t0").read_text())
    assert seen[0][0] - sent < 1.0, f"the event arrived {seen[0][0] - sent:.2f}s after the request"
    follower.kill()

    # -- what each request saw -------------------------------------------------------------------
    for name in ("deny1", "deny2", "deny_other"):
        status, body = http(results[name])
        assert (status, body["error"]) == (403, "policy_denied"), name
    status, body = http(results["approved"])  # the rule names the host; its address is private
    assert (status, body["error"], body["policy"]) == (403, "ssrf_denied", "allow_origin_test_8080")
    status, body = http(results["refused"])
    assert (status, body["error"]) == (403, "ssrf_denied")  # the live policy was untouched
    status, body = http(results["reloaded"])
    assert status == 200 and body["path"] == "/e"

    # -- the run, its events, its revisions ------------------------------------------------------
    [run] = json.loads(e2e.cli("list", "--json").stdout)
    assert (run["name"], run["status"], run["exit_code"], run["policy_revision"]) == ("e2e", "exited 0", 0, 3)
    assert run["allowed"] >= 1 and run["denied"] >= 7
    events = [json.loads(line) for line in e2e.cli("logs", "e2e", "--json").stdout.splitlines()]
    messages = [ev.get("message", "") for ev in events]
    assert sum("policy loaded" in m for m in messages) == 1  # with the run; LivePolicy took it over
    assert any("policy reloaded" in m for m in messages)
    assert any("static sections changed" in m for m in messages) and any("invalid policy" in m for m in messages)
    activities = [ev.get("activity_name") for ev in events if ev.get("class_uid") == 1007]
    assert activities[0] == "Launch" and activities[-1] == "Terminate", activities
    revisions = e2e.cli("policy", "show", "e2e", "--revision", "1")  # the sandbox is gone: from the store
    assert revisions.stdout.startswith("# sandbox e2e, revision 1 (not live)")


PEER = textwrap.dedent("""
    import json, socket, sys
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    try:
        s.connect(sys.argv[1])
    except OSError as exc:
        print(json.dumps({"connect": exc.strerror}))
        sys.exit()
    try:
        s.sendall(b'{"op": "rules_approve", "id": 1}\\n')
    except BrokenPipeError:
        pass  # refused before it read anything: the reply is already there
    print(s.makefile().readline().strip())
""")


def test_the_control_socket_refuses_the_sandbox(e2e: E2E):
    """From inside the sandbox the path leads nowhere (the state directory is hidden); a process
    that enters the sandbox's user, network and pid namespaces but keeps the host's mount view
    (so the path works) is refused by the peer check."""
    path = str(e2e.space / "state" / "stockade" / "sandboxes" / "e2e" / "control.sock")
    code = e2e.write("peer.py", PEER)
    proc = e2e.start([
        ("inside", ["/usr/bin/python3", str(code), path]),
        ("hold", {"wait": "done"}),
    ], policy=e2e.policy())
    e2e.wait_progress("inside")
    info = e2e.control("exec_info")
    assert info["ok"] and info["sandbox"] == "e2e"
    enter = ["nsenter", "-t", str(info["init_pid"]), "--net", "--pid"]
    if e2e.mode == "rootless":  # the sandbox's own user namespace, as the uid the sandbox maps
        enter[4:4] = ["--user", "-S", str(info["uid"]), "-G", str(info["gid"])]
    outside = subprocess.run([*enter, "--", "/usr/bin/python3", str(code), path], capture_output=True,
                             text=True, timeout=30)
    e2e.go("done")
    results, _err = e2e.finish(proc)
    assert json.loads(results["inside"]["out"]) in ({"connect": "No such file or directory"},
                                                    {"connect": "Permission denied"})
    assert outside.stdout, outside.stderr
    reply = json.loads(outside.stdout)
    assert reply["ok"] is False and reply["error"] == "peer_refused", (reply, outside.stderr)
    assert "namespace" in reply["detail"]
    findings = e2e.cli("logs", "e2e", "--json").stdout
    assert "control_peer_refused" in findings or "Control socket peer refused" in findings



TUNNEL = textwrap.dedent("""
    import json, os, socket, ssl, time
    raw = socket.create_connection(("127.0.0.1", 3128), timeout=30)
    raw.sendall(b"CONNECT secure.test:8443 HTTP/1.1\\r\\nHost: secure.test:8443\\r\\n\\r\\n")
    assert raw.recv(4096).startswith(b"HTTP/1.1 200")
    tls = ssl.create_default_context(cafile=os.sys.argv[1]).wrap_socket(raw, server_hostname="secure.test")
    request = b"GET /held HTTP/1.1\\r\\nHost: secure.test\\r\\n\\r\\n"
    tls.sendall(request)
    first = b""
    while not first.endswith(b"}"):  # the whole first response (a JSON echo)
        first += tls.recv(65536)
    first = first.split(b" ")[1].decode()
    open("tunnel-open", "w").close()
    while not os.path.exists("reloaded"):
        time.sleep(0.02)
    try:
        tls.sendall(request)
        after = tls.recv(65536).decode() or "eof"
    except OSError as exc:
        after = type(exc).__name__
    print(json.dumps({"first": first, "after": after}))
""")


def test_a_reload_closes_the_raw_tunnels_it_no_longer_allows(e2e_rootless: E2E):
    e2e = e2e_rootless
    rules = f"""
    secure_raw:
      endpoints: [{{host: secure.test, port: 8443, allowed_ips: ["{e2e.up.origin}"]}}]
      binaries: [{{path: /usr/bin/python3.11}}]
    """
    policy = e2e.policy(rules)
    proc = e2e.start([("tunnel", [e2e.python, "-c", TUNNEL, str(e2e.ro / "upstream-ca.pem")])],
                     policy=policy, args=("--upstream-ca", str(e2e.ro / "upstream-ca.pem")))
    poll(lambda: (e2e.work / "tunnel-open").exists(), bool)
    narrowed = e2e.write("narrowed.yaml", policy.read_text().replace("secure.test", "other.test"))
    reloaded = e2e.cli("policy", "set", "e2e", str(narrowed))
    assert reloaded.returncode == 0, reloaded.stderr
    assert reloaded.stdout.strip().endswith("; 1 raw tunnel closed"), reloaded.stdout
    e2e.go("reloaded")
    results, _err = e2e.finish(proc)
    seen = json.loads(results["tunnel"]["out"])
    assert seen["first"] == "200" and seen["after"] in ("eof", "SSLEOFError", "ConnectionResetError",
                                                        "SSLZeroReturnError", "BrokenPipeError"), seen
