"""Real clients against `stockade proxy`, everything inside the test namespace.

curl, python requests and httpx, git (smart HTTP over TLS) and pip (an HTTPS index) talk to
upstreams through the standalone proxy: plain forward HTTP, HTTPS relayed encrypted (the
client verifies the origin's own certificate), and HTTPS terminated for L7 endpoints (the
client verifies the proxy's CA, written by --ca-cert-out).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from tests.conftest import STOCKADE
from tests.support.netns import TestNet, wait_for_port

from .support.packages import make_index, make_repo

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("curl") is None or shutil.which("git") is None,
                       reason="curl and git are needed (scripts/system-deps.sh installs them)"),
]

REPO = str(Path(__file__).resolve().parents[2])
PY = sys.executable


@dataclass
class World:
    net: TestNet
    proxy: str  # http://addr:port
    origin: str
    upstream_ca: Path  # the origins' CA (for clients that see the origin's own certificate)
    proxy_ca: Path  # the proxy's CA (for terminated tunnels)
    workdir: Path
    log: Path

    def run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        kw.setdefault("timeout", 60)
        kw.setdefault("cwd", REPO)
        return self.net.run(argv, **kw)

    def curl(self, *args: str) -> subprocess.CompletedProcess:
        return self.run(["curl", "-sS", "--max-time", "20", "-x", self.proxy, *args])

    def python(self, code: str, **env: str) -> subprocess.CompletedProcess:
        prefix = "".join(f"import os; os.environ[{k!r}] = {v!r}\n" for k, v in env.items())
        return self.run([PY, "-c", prefix + textwrap.dedent(code)])


@pytest.fixture(scope="module")
def world(testnet: TestNet, tmp_path_factory) -> World:
    work = tmp_path_factory.mktemp("clients")
    work.chmod(0o755)
    proxy_addr, origin = testnet.new_address(), testnet.new_address()
    for name in ("origin.test", "secure.test", "api.test", "git.test", "pypi.test"):
        testnet.add_host(name, origin)
    ca = trustme.CA()
    cert = ca.issue_cert("secure.test", "api.test", "git.test", "pypi.test")
    cert.private_key_and_cert_chain_pem.write_to_path(str(work / "origin.pem"))
    upstream_ca = work / "upstream-ca.pem"
    ca.cert_pem.write_to_path(str(upstream_ca))
    make_repo(work / "git")
    make_index(work / "index")
    log = work / "proxy.log"
    servers = [
        ["--port", "8080"],
        ["--port", "8443", "--cert", str(work / "origin.pem"), "--key", str(work / "origin.pem"),
         "--git-root", str(work / "git"), "--static", str(work / "index")],
    ]
    for extra in servers:
        testnet.spawn([PY, "-m", "tests.network.support.servers", "--bind", origin, *extra],
                      cwd=REPO, stdout=subprocess.DEVNULL)
    policy = work / "policy.yaml"
    policy.write_text(textwrap.dedent(f"""\
        version: 1
        network_policies:
          plain:
            endpoints:
              - {{ host: origin.test, port: 8080, allowed_ips: ["{origin}"] }}
            binaries: [{{ path: /usr/bin/curl }}]
          secure_raw:
            endpoints:
              - {{ host: secure.test, port: 8443, allowed_ips: ["{origin}"] }}
            binaries: [{{ path: /usr/bin/curl }}]
          api:
            endpoints:
              - host: api.test
                port: 8443
                allowed_ips: ["{origin}"]
                protocol: rest
                enforcement: enforce
                rules:
                  - allow: {{ method: GET, path: "/v1/**" }}
                  - allow: {{ method: POST, path: "/v1/echo" }}
            binaries: [{{ path: /usr/bin/curl }}]
          git:
            endpoints:
              - host: git.test
                port: 8443
                allowed_ips: ["{origin}"]
                protocol: rest
                enforcement: enforce
                rules:
                  - allow: {{ method: GET, path: "/git/**/info/refs", query: {{ service: git-upload-pack }} }}
                  - allow: {{ method: POST, path: "/git/**/git-upload-pack" }}
            binaries: [{{ path: /usr/bin/git }}]
          pypi:
            endpoints:
              - {{ host: pypi.test, port: 8443, allowed_ips: ["{origin}"], protocol: rest,
                  enforcement: enforce, access: read-only }}
            binaries: [{{ path: /usr/bin/pip }}]
        """))
    proxy_ca = work / "proxy-ca.pem"
    testnet.spawn([*STOCKADE, "proxy", "--policy", str(policy), "--listen", f"{proxy_addr}:3128",
                   "--upstream-ca", str(upstream_ca), "--ca-cert-out", str(proxy_ca), "-v",
                   "--secret", "API_KEY=origin.test"],
                  cwd=REPO, stderr=open(log, "w"), env={**os.environ, "API_KEY": "sk-test-value"})
    wait_for_port(testnet, proxy_addr, 3128)
    wait_for_port(testnet, origin, 8080)
    wait_for_port(testnet, origin, 8443)
    return World(testnet, f"http://{proxy_addr}:3128", origin, upstream_ca, proxy_ca, work, log)


def test_startup_line_says_binaries_are_not_checked(world: World):
    first = world.log.read_text().splitlines()[0]
    assert "listening on" in first and "binary lists are not checked" in first


def test_curl_plain_forward(world: World):
    r = world.curl("http://origin.test:8080/hello?x=1")
    assert r.returncode == 0, r.stderr
    echo = json.loads(r.stdout)
    assert echo["path"] == "/hello?x=1" and echo["headers"]["Via"] == "1.1 stockade"


def test_curl_forward_denied_gets_the_json_body(world: World):
    r = world.curl("-w", "\n%{http_code}", "http://origin.test:9999/")
    body, code = r.stdout.rsplit("\n", 1)
    assert code == "403"
    denial = json.loads(body)
    assert denial["error"] == "policy_denied" and denial["port"] == 9999 and denial["hint"]


def test_curl_http_through_a_connect_tunnel(world: World):
    r = world.curl("-p", "http://origin.test:8080/tunnelled")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["path"] == "/tunnelled"


def test_curl_https_relayed_encrypted(world: World):
    r = world.curl("--cacert", str(world.upstream_ca), "https://secure.test:8443/raw")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["path"] == "/raw"


def test_curl_connect_denied(world: World):
    r = world.curl("--cacert", str(world.upstream_ca), "https://denied.test:443/")
    assert r.returncode != 0 and "403" in r.stderr


def test_curl_https_terminated_for_l7_rules(world: World):
    ok = world.curl("--cacert", str(world.proxy_ca), "https://api.test:8443/v1/models")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["path"] == "/v1/models"
    denied = world.curl("--cacert", str(world.proxy_ca), "-w", "\n%{http_code}",
                        "https://api.test:8443/v1/../admin")
    body, code = denied.stdout.rsplit("\n", 1)
    assert code == "403" and json.loads(body)["rule"] == "GET /admin"
    posted = world.curl("--cacert", str(world.proxy_ca), "--data-binary", "x" * 100_000,
                        "https://api.test:8443/v1/echo")
    assert json.loads(posted.stdout)["body_length"] == 100_000


def test_python_requests(world: World):
    r = world.python(f"""
        import json, requests
        proxies = {{"http": "{world.proxy}", "https": "{world.proxy}"}}
        s = requests.Session()
        s.trust_env = False
        out = []
        for i in range(3):  # keep-alive through the forward proxy
            out.append(s.get("http://origin.test:8080/r%d" % i, proxies=proxies, timeout=20).json()["path"])
        out.append(s.get("https://secure.test:8443/raw", proxies=proxies, verify="{world.upstream_ca}",
                         timeout=20).json()["path"])
        out.append(s.get("http://origin.test:9999/", proxies=proxies, timeout=20).status_code)
        try:
            s.get("https://denied.test/", proxies=proxies, timeout=20)
        except requests.exceptions.ProxyError as exc:
            out.append("403" in str(exc))
        print(json.dumps(out))
    """)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == ["/r0", "/r1", "/r2", "/raw", 403, True]


def test_python_requests_and_httpx_through_terminated_tls(world: World):
    r = world.python(f"""
        import json, requests, httpx
        proxies = {{"https": "{world.proxy}"}}
        a = requests.get("https://api.test:8443/v1/a", proxies=proxies, verify="{world.proxy_ca}", timeout=20)
        b = requests.delete("https://api.test:8443/v1/a", proxies=proxies, verify="{world.proxy_ca}", timeout=20)
        with httpx.Client(proxy="{world.proxy}", verify="{world.proxy_ca}", trust_env=False, timeout=20) as c:
            d = [c.get("https://api.test:8443/v1/h%d" % i).json()["path"] for i in range(3)]
            e = c.post("https://api.test:8443/v1/other", content=b"x").status_code
        print(json.dumps([a.json()["path"], b.status_code, b.json()["error"], d, e]))
    """)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == ["/v1/a", 403, "policy_denied", ["/v1/h0", "/v1/h1", "/v1/h2"], 403]


def test_httpx_forward_and_raw_tls(world: World):
    r = world.python(f"""
        import json, httpx
        with httpx.Client(proxy="{world.proxy}", verify="{world.upstream_ca}", trust_env=False, timeout=20) as c:
            a = c.get("http://origin.test:8080/x").json()["path"]
            b = c.get("https://secure.test:8443/y").json()["path"]
            d = c.get("http://origin.test:8080/z", headers={{"Host": "evil.test"}}).json()["headers"]["Host"]
        print(json.dumps([a, b, d]))
    """)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == ["/x", "/y", "origin.test:8080"]


def test_git_clone_over_https_and_push_denied(world: World, tmp_path: Path):
    env = ["env", f"https_proxy={world.proxy}", f"GIT_SSL_CAINFO={world.proxy_ca}",
           "HOME=/tmp", "GIT_TERMINAL_PROMPT=0"]
    dest = world.workdir / "clone"
    r = world.run([*env, "git", "clone", "https://git.test:8443/git/repo.git", str(dest)])
    assert r.returncode == 0, r.stderr
    assert (dest / "README").read_text().startswith("hello")
    (dest / "NEW").write_text("x\n")
    git = ["git", "-C", str(dest), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    world.run([*env, *git, "add", "NEW"])
    world.run([*env, *git, "commit", "-q", "-m", "new"])
    push = world.run([*env, *git, "push", "origin", "main"])
    assert push.returncode != 0 and "403" in push.stderr


def test_pip_install_from_an_https_index(world: World):
    target = world.workdir / "site"
    r = world.run([PY, "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check",
                   "--proxy", world.proxy, "--cert", str(world.proxy_ca),
                   "--index-url", "https://pypi.test:8443/simple/", "--target", str(target),
                   "stockade-demo"], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "stockade proxy" in (target / "stockade_demo" / "__init__.py").read_text()


def test_curl_credential_placeholder(world: World):
    placeholder = re.search(r"placeholder API_KEY=(\S+)", world.log.read_text()).group(1)
    ok = world.curl("-H", f"Authorization: Bearer {placeholder}", "http://origin.test:8080/k")
    assert json.loads(ok.stdout)["headers"]["Authorization"] == "Bearer sk-test-value"
    refused = world.curl("-w", "\n%{http_code}", "--cacert", str(world.proxy_ca),
                         "-H", f"Authorization: Bearer {placeholder}", "https://api.test:8443/v1/k")
    body, code = refused.stdout.rsplit("\n", 1)
    assert code == "403" and json.loads(body)["error"] == "credential_refused"
    assert "sk-test-value" not in world.log.read_text()
