"""Cross-process and cross-namespace: backends in the test network namespace under hostnames,
the proxy + router in a process of its own there, and the SDKs in a third process configured
only through the environment (HTTPS_PROXY, SSL_CERT_FILE), as an agent in a sandbox is."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .remote import REPO, start_backend

pytestmark = pytest.mark.netns

OPENAI_KEY = "sk-route-netns-openai"
ANTHROPIC_KEY = "sk-ant-route-netns"


def test_sdks_through_the_proxy_to_backends_in_the_namespace(testnet, tmp_path):
    os.chmod(tmp_path, 0o755)
    openai_b = start_backend(testnet, "openai", tmp_path, expected_key=OPENAI_KEY)
    anthropic_b = start_backend(testnet, "anthropic", tmp_path, expected_key=ANTHROPIC_KEY)
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "routes:\n"
        f"  - {{name: lan-vllm, protocol: openai, base_url: '{openai_b.url}/v1', model: llama3.2,"
        " api_key_env: OPENAI_ROUTE_KEY}\n"
        f"  - {{name: claude, protocol: anthropic, base_url: '{anthropic_b.url}', api_key_env: ANTHROPIC_ROUTE_KEY}}\n")
    env = {**os.environ, "PYTHONPATH": REPO, "OPENAI_ROUTE_KEY": OPENAI_KEY, "ANTHROPIC_ROUTE_KEY": ANTHROPIC_KEY}
    server = subprocess.Popen(
        testnet.command([sys.executable, "-m", "tests.inference.standalone", str(routes),
                         str(tmp_path / "ca.pem")], cwd=REPO),
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ready = server.stdout.readline().split()
        assert ready and ready[0] == "ready", "the proxy did not start"
        openai_b.script()  # the first call as usual,
        openai_b.script(fail_after=2)  # the second: a mid-stream failure
        agent_env = {k: v for k, v in os.environ.items() if "KEY" not in k}
        agent_env.update(PYTHONPATH=REPO, HTTPS_PROXY=f"http://127.0.0.1:{ready[1]}",
                         SSL_CERT_FILE=str(tmp_path / "ca.pem"), NO_PROXY="")
        out = testnet.run([sys.executable, "-m", "tests.inference.probe", "openai_chat", "openai_stream",
                           "openai_stream", "anthropic_message", "anthropic_stream", "not_inference"],
                          cwd=REPO, env=agent_env, timeout=120)
        results = [json.loads(line) for line in out.stdout.splitlines()]
        assert out.returncode == 0, out.stderr
    finally:
        server.stdin.close()
        server.wait(10)
    by = [(r["call"], r["ok"]) for r in results]
    assert by == [("openai_chat", True), ("openai_stream", False), ("openai_stream", True),
                  ("anthropic_message", True), ("anthropic_stream", True), ("not_inference", True)]
    assert results[0] == {"call": "openai_chat", "ok": True, "text": "Hello from the fake backend", "model": "llama3.2"}
    assert results[1]["error"] == "APIError" and "failed mid-response" in results[1]["message"]
    assert results[5]["status"] == 403 and results[5]["body"]["error"] == "not_inference"
    for backend, header, value in ((openai_b, "authorization", f"Bearer {OPENAI_KEY}"),
                                   (anthropic_b, "x-api-key", ANTHROPIC_KEY)):
        received = backend.received
        assert received and all(r.headers_named(header) == [value] for r in received)
        assert all("sk-agent-placeholder" not in repr(r.headers) for r in received)
