"""Binary identity through the proxy: real client processes in the test namespace, the proxy
in process with an IdentityResolver rooted at the client's shell (network.md §4; the full
sandbox wiring is tested with `stockade run`)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from stockade.network.tofu import BinaryHasher

from .support.harness import Net, net  # noqa: F401
from .support import clients
from .support.clients import allow

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("curl") is None or not os.path.exists("/usr/bin/python3"),
                       reason="curl and /usr/bin/python3 are needed (scripts/system-deps.sh)"),
]

PROXY_PORT = 41311


def run_clients(testnet, net: Net, policy_for, commands: list[str], hasher=None):
    return clients.run_clients(testnet, net, policy_for, commands, port=PROXY_PORT, hasher=hasher)[0]


CURL = "curl -sS --max-time 10 -w '\\n%{{http_code}}' -x {proxy} http://origin.test:{port}/x"
PYTHON = ("/usr/bin/python3 -c \"import urllib.request as u, urllib.error as e\n"
          "o = u.build_opener(u.ProxyHandler({{'http': '{proxy}'}}))\n"
          "try: print(o.open('http://origin.test:{port}/x', timeout=10).status)\n"
          "except e.HTTPError as x: print(x.read().decode()); print(x.code)\"")


def test_allowed_and_refused_binary_to_the_same_host(testnet, net: Net):
    (curl_rc, curl_out, _), (py_rc, py_out, _py_err) = run_clients(
        testnet, net, allow("/usr/bin/curl"), [CURL, PYTHON])
    assert curl_out.rsplit("\n", 1)[1] == "200"
    assert "\n" in py_out.strip(), (py_out, _py_err)
    body, code = py_out.strip().rsplit("\n", 1)
    denial = json.loads(body)
    assert code == "403" and denial["error"] == "policy_denied"
    assert denial["binary"].startswith("/usr/bin/python3")
    assert denial["reason_code"] == "binary_not_allowed" and "/usr/bin/python3" in denial["hint"]


def test_a_replaced_binary_is_refused(testnet, net: Net, tmp_path: Path):
    tool = tmp_path / "bin" / "fetch"
    tool.parent.mkdir()
    shutil.copy2("/usr/bin/curl", tool)
    tmp_path.chmod(0o755)
    command = CURL.replace("curl ", f"{tool} ", 1)
    hasher = BinaryHasher()
    (rc, out, _), = run_clients(testnet, net, allow(str(tool)), [command], hasher)
    assert out.rsplit("\n", 1)[1] == "200"
    with open(tool, "ab") as f:  # same path, different content
        f.write(b"\0tampered")
    (rc, out, _), = run_clients(testnet, net, allow(str(tool)), [command], hasher)
    body, code = out.rsplit("\n", 1)
    denial = json.loads(body)
    assert code == "403" and denial["error"] == "identity_denied"
    assert denial["reason_code"] == "binary_changed"
