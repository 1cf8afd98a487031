"""`stockade exec` in the landlock-only mode, end to end: the exec'd command is no descendant of
the sandbox's init (there is no pid namespace to join), yet the proxy attributes its connections,
and its descendants', and the policy decides them as it does the sandbox's own command's."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.e2e.conftest import E2E, http
from tests.e2e.test_egress import CODE, CURL, allowed_ips

pytestmark = [pytest.mark.sandbox, pytest.mark.netns]

# From inside the sandbox: try to register a child of ours through the control socket (in the
# landlock-only mode the path is reachable, and rootless we share the supervisor's uid and
# namespaces): only the supervisor's refusal of processes below init stands in the way.
REGISTER = textwrap.dedent("""
    import json, socket, subprocess, sys
    child = subprocess.Popen(["sleep", "30"])
    out = {}
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(sys.argv[1])
        try:
            s.sendall(json.dumps({"op": "exec_register", "pid": child.pid}).encode() + b"\\n")
        except OSError:
            pass  # refused before it read anything: the reply is already there
        out = json.loads(s.makefile("rb").readline())
    except OSError as exc:
        out = {"connect": exc.strerror}
    child.kill()
    print(json.dumps(out))
""")


def test_exec_in_the_landlock_only_mode_is_decided_by_the_policy(e2e: E2E):
    ips = allowed_ips(e2e)
    policy = e2e.policy(f"""
    plain:
      endpoints: [{{host: origin.test, port: 8080, {ips}}}]
      binaries: [{{path: /usr/bin/curl}}]
    """)
    path = str(e2e.space / "state" / "stockade" / "sandboxes" / e2e.name / "control.sock")
    code = e2e.write("register.py", REGISTER)
    proc = e2e.start([
        ("up", {"wait": "up"}),  # the control socket comes up after the command starts
        ("inside", ["/usr/bin/python3", str(code), path]),
        ("hold", {"wait": "done"}),
    ], policy=policy, args=("--isolation", "landlock"))
    e2e.go("up")
    e2e.wait_progress("inside")
    try:
        allowed = e2e.cli("exec", e2e.name, "--", *CURL, *CODE, "http://origin.test:8080/exec")
        under_sh = e2e.cli("exec", e2e.name, "--", "sh", "-c",
                           f"{' '.join(CURL)} -w '\\n%{{http_code}}' http://origin.test:8080/child")
        denied = e2e.cli("exec", e2e.name, "--", *CURL, *CODE, "http://nope.test:8080/exec")
        status = e2e.control("status")
    finally:
        e2e.go("done")
    results, _err = e2e.finish(proc)
    for done in (allowed, under_sh, denied):
        assert done.returncode == 0 and "refuses" not in done.stderr, done.stderr
    code_, body = http({"out": allowed.stdout})
    assert code_ == 200 and body["path"] == "/exec"
    code_, body = http({"out": under_sh.stdout})  # a descendant of the exec'd command
    assert code_ == 200 and body["path"] == "/child"
    code_, body = http({"out": denied.stdout})
    assert code_ == 403 and body["error"] == "policy_denied" and body["binary"] == "/usr/bin/curl"
    assert body["host"] == "nope.test"
    # The sandbox's own process could not register anything: refused before its request was read
    # (rootless: same uid, refused as a process below init; root: it runs as nobody).
    inside = json.loads(results["inside"]["out"])
    assert inside.get("error") == "peer_refused" or inside.get("connect") == "Permission denied", inside
    if e2e.mode == "rootless":
        assert "runs in the sandbox" in inside["detail"]
    assert status["ok"] and status["isolation"] == "landlock"
