"""Issue 4 end to end: real clients inside real sandboxes, through `stockade run`'s proxy, to
upstreams in the test namespace. The sandbox's environment alone points the clients at the proxy
and at the sandbox CA (HTTPS_PROXY, SSL_CERT_FILE, CURL_CA_BUNDLE, GIT_SSL_CAINFO, PIP_CERT...)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.e2e.conftest import TOKEN, E2E, http

pytestmark = [pytest.mark.sandbox, pytest.mark.netns]

CURL = ["curl", "-sS", "--max-time", "20"]
CODE = ["-w", "\n%{http_code}"]
PY = "/usr/bin/python3.11"  # the executable behind the venv's python (what the proxy sees)


def allowed_ips(e2e: E2E) -> str:
    return f'allowed_ips: ["{e2e.up.origin}"]'


def client_rules(e2e: E2E) -> str:
    ips = allowed_ips(e2e)
    return f"""
    plain:
      endpoints: [{{host: origin.test, port: 8080, {ips}}}]
      binaries: [{{path: /usr/bin/curl}}, {{path: {PY}}}]
    secure_raw:
      endpoints: [{{host: secure.test, port: 8443, {ips}}}]
      binaries: [{{path: /usr/bin/curl}}, {{path: {PY}}}]
    api:
      endpoints:
        - host: api.test
          port: 8443
          {ips}
          protocol: rest
          enforcement: enforce
          rules:
            - allow: {{method: GET, path: "/v1/**"}}
            - allow: {{method: POST, path: "/v1/echo"}}
      binaries: [{{path: /usr/bin/curl}}, {{path: {PY}}}]
    git:
      endpoints:
        - host: git.test
          port: 8443
          {ips}
          protocol: rest
          enforcement: enforce
          rules:
            - allow: {{method: GET, path: "/git/**/info/refs", query: {{service: git-upload-pack}}}}
            - allow: {{method: POST, path: "/git/**/git-upload-pack"}}
      binaries: [{{path: /usr/bin/git}}]
    pypi:
      endpoints: [{{host: pypi.test, port: 8443, {ips}, protocol: rest, enforcement: enforce, access: read-only}}]
      binaries: [{{path: {PY}}}]
    """


REQUESTS_HTTPX = textwrap.dedent("""
    import json, requests, httpx
    out = {}
    s = requests.Session()  # HTTPS_PROXY and REQUESTS_CA_BUNDLE come from the sandbox
    out["requests_forward"] = [s.get("http://origin.test:8080/r%d" % i, timeout=20).json()["path"] for i in range(3)]
    out["requests_relayed"] = s.get("https://secure.test:8443/raw", verify="UPSTREAM_CA", timeout=20).json()["path"]
    out["requests_terminated"] = s.get("https://api.test:8443/v1/models", timeout=20).json()["path"]
    denied = s.delete("https://api.test:8443/v1/models", timeout=20)
    out["requests_l7_denied"] = [denied.status_code, denied.json()["error"]]
    with httpx.Client(timeout=20) as c:  # trust_env: the proxy and SSL_CERT_FILE from the sandbox
        out["httpx_terminated"] = [c.get("https://api.test:8443/v1/h%d" % i).json()["path"] for i in range(3)]
        out["httpx_forward"] = c.get("http://origin.test:8080/x").json()["path"]
        out["httpx_l7_denied"] = c.post("https://api.test:8443/v1/other", content=b"x").status_code
    with httpx.Client(timeout=20, verify="UPSTREAM_CA") as c:
        out["httpx_relayed"] = c.get("https://secure.test:8443/y").json()["path"]
    print(json.dumps(out))
""")


def test_real_clients(e2e: E2E):
    """curl (forward, CONNECT relayed, CONNECT terminated for L7), requests, httpx, git, pip."""
    ca = str(e2e.ro / "upstream-ca.pem")
    pip = [e2e.python, "-m", "pip", "--isolated", "install", "--no-cache-dir", "--disable-pip-version-check",
           "--cert", "/run/stockade/ca-bundle.pem", "--index-url", "https://pypi.test:8443/simple/",
           "--target", "site", "stockade-demo"]
    results, done = e2e.run([
        ("curl_forward", [*CURL, "http://origin.test:8080/hello?x=1"]),
        ("curl_tunnel_http", [*CURL, "-p", "http://origin.test:8080/tunnelled"]),
        ("curl_relayed", [*CURL, "--cacert", ca, "https://secure.test:8443/raw"]),
        ("curl_terminated", [*CURL, "https://api.test:8443/v1/models"]),
        ("curl_l7_denied", [*CURL, *CODE, "-X", "DELETE", "https://api.test:8443/v1/models"]),
        ("curl_post_body", [*CURL, "--data-binary", "x" * 100_000, "https://api.test:8443/v1/echo"]),
        ("py_clients", [e2e.python, "-c", REQUESTS_HTTPX.replace("UPSTREAM_CA", ca)]),
        ("git_clone", ["git", "clone", "-q", "https://git.test:8443/git/repo.git", "clone"]),
        ("git_readme", ["cat", "clone/README"]),
        ("git_push", ["sh", "-c", "cd clone && echo x > NEW && git add NEW && git -c user.name=a "
                      "-c user.email=a@example.invalid commit -qm new && git push -q origin main"]),
        ("pip", pip),
        ("pip_import", [e2e.python, "-c", "import sys; sys.path.insert(0, 'site'); import stockade_demo; "
                        "print(stockade_demo.GREETING)"]),
    ], policy=e2e.policy(client_rules(e2e)), args=("--upstream-ca", str(e2e.ro / "upstream-ca.pem")),
        env={"HOME": "/tmp", "GIT_TERMINAL_PROMPT": "0"})
    assert done.returncode == 0, done.stderr
    ok = {name: r for name, r in results.items() if r["rc"] == 0}
    assert set(ok) == set(results) - {"git_push"}, ({k: r["err"] for k, r in results.items() if r["rc"]},
                                                    e2e.cli("logs", "e2e").stdout)
    echo = json.loads(results["curl_forward"]["out"])
    assert echo["path"] == "/hello?x=1" and echo["headers"]["Via"] == "1.1 stockade"
    assert json.loads(results["curl_tunnel_http"]["out"])["path"] == "/tunnelled"
    assert json.loads(results["curl_relayed"]["out"])["path"] == "/raw"  # the origin's own certificate
    assert json.loads(results["curl_terminated"]["out"])["path"] == "/v1/models"  # the sandbox CA's
    status, body = http(results["curl_l7_denied"])
    assert status == 403 and body["error"] == "policy_denied" and body["policy"] == "api"
    assert body["binary"] == "/usr/bin/curl" and body["host"] == "api.test" and body["port"] == 8443
    assert body["reason"] and body["hint"]
    assert json.loads(results["curl_post_body"]["out"])["body_length"] == 100_000
    assert json.loads(results["py_clients"]["out"]) == {
        "requests_forward": ["/r0", "/r1", "/r2"], "requests_relayed": "/raw",
        "requests_terminated": "/v1/models", "requests_l7_denied": [403, "policy_denied"],
        "httpx_terminated": ["/v1/h0", "/v1/h1", "/v1/h2"], "httpx_forward": "/x", "httpx_l7_denied": 403,
        "httpx_relayed": "/y"}
    assert results["git_readme"]["out"].startswith("hello from the test repository")
    assert "403" in results["git_push"]["err"]  # receive-pack is not in the L7 rules
    assert results["pip_import"]["out"].strip() == "installed through the stockade proxy"


CONNECT_BODY = textwrap.dedent("""
    import json, os, socket, sys
    target, raw = sys.argv[1], sys.argv[2] == "raw"
    proxy = os.environ["HTTP_PROXY"].rpartition("/")[2]  # 127.0.0.1:3128, or a host port (landlock)
    s = socket.create_connection((proxy.rpartition(":")[0], int(proxy.rpartition(":")[2])), timeout=20)
    if raw:  # an https:// URL in forward form
        s.sendall(b"GET https://" + target.encode() + b"/ HTTP/1.1\\r\\nHost: " + target.encode() + b"\\r\\n\\r\\n")
    else:
        s.sendall(b"CONNECT " + target.encode() + b" HTTP/1.1\\r\\nHost: " + target.encode() + b"\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\\r\\n\\r\\n")
    print(json.dumps({"status": int(head.split()[1]), "body": json.loads(body)}))
""")


def plain_and_api_rules(e2e: E2E) -> str:
    """curl may reach origin.test:8080, and GET /v1/** of api.test:8443 (L7 enforced)."""
    ips = allowed_ips(e2e)
    return f"""
    plain:
      endpoints: [{{host: origin.test, port: 8080, {ips}}}]
      binaries: [{{path: /usr/bin/curl}}]
    api:
      endpoints:
        - {{host: api.test, port: 8443, {ips}, protocol: rest, enforcement: enforce,
            rules: [{{allow: {{method: GET, path: "/v1/**"}}}}]}}
      binaries: [{{path: /usr/bin/curl}}]
    """


def deny_rules(e2e: E2E) -> str:
    return plain_and_api_rules(e2e).rstrip() + f"""
    ssrf_bait:
      endpoints:
        - {{host: 127.0.0.1, port: 8080}}
        - {{host: loopback.test, port: 8080}}
        - {{host: 169.254.169.254, port: 80}}
        - {{host: metadata.test, port: 80}}
        - {{host: metadata.google.internal, port: 80}}
        - {{host: origin.test, port: 8081}}
        - {{host: nxdomain.test, port: 80}}
        - {{host: closed.test, port: 80, allowed_ips: ["{e2e.up.closed}"]}}
      binaries: [{{path: /usr/bin/curl}}]
    """


def test_every_deny_path_as_the_agent_sees_it(e2e: E2E):
    via = ["--noproxy", "", "-x", "http://127.0.0.1:3128"]  # NO_PROXY would keep loopback direct
    results, done = e2e.run([
        ("no_rule", [*CURL, *CODE, "http://nope.test:8080/"]),
        ("connect_no_rule", [e2e.python, "-c", CONNECT_BODY, "nope.test:443", "connect"]),
        ("wrong_binary", [e2e.python, "-c", CONNECT_BODY, "origin.test:8080", "connect"]),
        ("l7", [*CURL, *CODE, "-X", "POST", "-d", "x", "https://api.test:8443/v1/x"]),
        ("loopback", [*CURL, *CODE, *via, "http://127.0.0.1:8080/"]),
        ("loopback_name", [*CURL, *CODE, *via, "http://loopback.test:8080/"]),
        ("metadata", [*CURL, *CODE, *via, "http://169.254.169.254/latest/meta-data/"]),
        ("metadata_name", [*CURL, *CODE, *via, "http://metadata.test/"]),
        ("metadata_google", [*CURL, *CODE, *via, "http://metadata.google.internal/"]),
        ("internal", [*CURL, *CODE, "http://origin.test:8081/"]),  # private address, no allowed_ips
        ("dns", [*CURL, *CODE, "http://nxdomain.test/"]),
        ("unreachable", [*CURL, *CODE, "http://closed.test/"]),
        ("https_forward", [e2e.python, "-c", CONNECT_BODY, "origin.test", "raw"]),
        ("head_too_large", [*CURL, *CODE, "-H", "X-Big: " + "a" * 20000, "http://origin.test:8080/"]),
        ("allowed", [*CURL, *CODE, "http://origin.test:8080/ok"]),
    ], policy=e2e.policy(deny_rules(e2e)), args=("--upstream-ca", str(e2e.ro / "upstream-ca.pem")))
    assert done.returncode == 0, done.stderr
    seen = {}
    for name, result in results.items():
        if name in ("connect_no_rule", "wrong_binary", "https_forward"):
            reply = json.loads(result["out"])
            seen[name] = (reply["status"], reply["body"])
        else:
            seen[name] = http(result)
    assert seen["allowed"][0] == 200

    def check(name: str, status: int, error: str, **fields) -> dict:
        code, body = seen[name]
        assert (code, body["error"]) == (status, error), (name, body)
        for key, value in fields.items():
            assert body[key] == value, (name, key, body)
        return body

    for name, host, port in (("no_rule", "nope.test", 8080), ("connect_no_rule", "nope.test", 443)):
        body = check(name, 403, "policy_denied", host=host, port=port, policy=None)
        assert body["reason"] and f"host: {host}" in body["hint"]
    assert seen["no_rule"][1]["binary"] == "/usr/bin/curl"
    body = check("wrong_binary", 403, "policy_denied", policy=None, binary=PY, reason_code="binary_not_allowed")
    assert PY in body["hint"]
    check("l7", 403, "policy_denied", policy="api", binary="/usr/bin/curl")
    for name in ("loopback", "loopback_name", "metadata", "metadata_name", "metadata_google", "internal"):
        body = check(name, 403, "ssrf_denied", binary="/usr/bin/curl")
        assert body["reason"], name
    check("dns", 502, "dns_failed")
    check("unreachable", 502, "upstream_unreachable")
    code, body = seen["https_forward"]
    assert code == 400 and "CONNECT" in body["detail"]
    assert seen["head_too_large"][0] == 431


def test_binary_identity(e2e: E2E):
    """An allowed and a refused binary to the same host; a binary replaced after its first use.
    The command is a shell, so no ancestor but stockade's own init is a Python interpreter."""
    ips = allowed_ips(e2e)
    # The interpreter stockade itself runs on, so its init too (a fork of the supervisor).
    stockade_python = PY if e2e.mode == "rootless" else os.path.realpath(sys.executable)
    policy = e2e.policy(f"""
    ident:
      endpoints: [{{host: ident.test, port: 8080, {ips}}}]
      binaries: [{{path: /usr/bin/curl}}, {{path: {e2e.work}/fetch}}]
    interpreter:
      endpoints: [{{host: origin.test, port: 8080, {ips}}}]
      binaries: [{{path: {stockade_python}}}]
    """)
    fetch = "./fetch -sS --max-time 20 -w '\\n%{http_code}\\n' http://ident.test:8080/f"
    script = (
        "curl -sS --max-time 20 -w '\\n%{http_code}\\n' http://ident.test:8080/c; echo ===; "
        "/usr/bin/python3 -c \"import urllib.request as u, urllib.error as e\n"
        "try: u.urlopen('http://ident.test:8080/p', timeout=20)\n"
        "except e.HTTPError as x: print(x.read().decode()); print(x.code)\"; echo ===; "
        # stockade's interpreter is allowed to origin.test: curl is not, even though stockade's
        # init (this shell's parent) runs on that very interpreter
        "curl -sS --max-time 20 -w '\\n%{http_code}\\n' http://origin.test:8080/i; echo ===; "
        f"cp /usr/bin/curl fetch && {fetch}; echo ===; printf 'tampered' >> fetch; {fetch}"
    )
    done = subprocess.run(e2e.argv(["run", "-q", "--policy", str(policy), "--", "sh", "-c", script]),
                          env=e2e.env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    parts = [p.strip() for p in done.stdout.split("===")]
    assert len(parts) == 5, done.stdout
    statuses = [p.rsplit("\n", 1) for p in parts]
    assert statuses[0][1] == "200"  # curl: allowed
    body, code = statuses[1]
    assert code == "403" and json.loads(body)["reason_code"] == "binary_not_allowed"
    assert json.loads(body)["binary"] == PY
    body, code = statuses[2]
    assert code == "403" and json.loads(body)["binary"] == "/usr/bin/curl", body
    assert statuses[3][1] == "200"  # the copy, at its first use
    body, code = statuses[4]
    assert code == "403" and json.loads(body)["error"] == "identity_denied"
    assert json.loads(body)["reason_code"] == "binary_changed"


def test_credential_placeholders(e2e_rootless: E2E):
    """--secret: the sandbox holds a placeholder; the proxy puts the value in on the bound host
    only, refuses it elsewhere, and never records it."""
    e2e = e2e_rootless
    policy = e2e.policy(plain_and_api_rules(e2e))
    log = e2e.space / "state" / "events.jsonl"
    results, done = e2e.run([
        ("env", ["env"]),
        ("bound", ["sh", "-c", 'curl -sS --max-time 20 -H "Authorization: Bearer $API_TOKEN" '
                   '"http://origin.test:8080/k?token=$API_TOKEN"']),
        ("elsewhere", ["sh", "-c", "curl -sS --max-time 20 -w '\\n%{http_code}' "
                       '-H "Authorization: Bearer $API_TOKEN" https://api.test:8443/v1/k']),
    ], policy=policy, args=("--secret", "API_TOKEN=origin.test", "--upstream-ca", str(e2e.ro / "upstream-ca.pem"),
                            "--log-file", str(log)), env={"API_TOKEN": TOKEN})
    assert done.returncode == 0, done.stderr
    inside = dict(line.split("=", 1) for line in results["env"]["out"].splitlines() if "=" in line)
    assert inside["API_TOKEN"].startswith("stockade-ph-API_TOKEN-")
    assert TOKEN not in results["env"]["out"]
    echo = json.loads(results["bound"]["out"])
    assert echo["headers"]["Authorization"] == f"Bearer {TOKEN}" and echo["path"] == f"/k?token={TOKEN}"
    status, body = http(results["elsewhere"])
    assert status == 403 and body["error"] == "credential_refused"
    assert TOKEN not in json.dumps(body)
    events = log.read_text()
    assert "credential" in events and TOKEN not in events
    assert TOKEN not in e2e.cli("logs", "e2e", "--json").stdout


def test_the_landlock_only_mode_is_served_too(e2e_rootless: E2E):
    """--isolation landlock: no namespaces, the proxy on a host loopback port, identity through
    the host's /proc (rooted at stockade's init, other users' processes skipped)."""
    e2e = e2e_rootless
    ips = allowed_ips(e2e)
    policy = e2e.policy(f"""
    plain:
      endpoints: [{{host: origin.test, port: 8080, {ips}}}]
      binaries: [{{path: /usr/bin/curl}}]
    """)
    results, done = e2e.run([
        ("curl", [*CURL, *CODE, "http://origin.test:8080/ll"]),
        ("python", [e2e.python, "-c", CONNECT_BODY, "origin.test:8080", "connect"]),
    ], policy=policy, args=("--isolation", "landlock"))
    assert done.returncode == 0, done.stderr
    status, body = http(results["curl"])
    assert status == 200 and body["path"] == "/ll"
    reply = json.loads(results["python"]["out"])
    assert reply["status"] == 403 and reply["body"]["reason_code"] == "binary_not_allowed"
    assert reply["body"]["binary"] == PY
