"""Issue 5 end to end: the real `openai` and `anthropic` SDKs inside a sandbox, against
https://inference.local (the sandbox CA, the proxy from the environment), routed by
`stockade run --inference-routes` to fake backends in the test namespace that speak the real
wire formats. The backends check that they receive the route's key and nothing else."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
import time

import pytest

from tests.support.netns import NOBODY_GID, NOBODY_UID

from tests.e2e.conftest import ANTHROPIC_KEY, OPENAI_KEY, REPO, E2E

pytestmark = [pytest.mark.sandbox, pytest.mark.netns]

AGENT_KEY = "sk-agent-placeholder"  # what the probe's SDK clients send: must never reach a backend
BLACKHOLE = "10.79.0.9"  # routed into the test namespace's lo, owned by nobody: connects hang

# One interpreter for every SDK call (importing the SDKs costs seconds): first a stream timed
# against the backend, then the probe's calls (tests/inference/probe.py), one JSON line each.
SDK_CALLS = textwrap.dedent("""
    import json, sys, openai
    sys.path.insert(0, sys.argv[1])
    import probe
    client = openai.OpenAI(api_key=probe.AGENT_KEY, base_url="https://inference.local/v1", max_retries=0)
    text, first = "", True
    for chunk in client.chat.completions.create(model="gpt-4o", messages=probe.HI, stream=True):
        if first:
            first = False
            open("first-chunk", "w").close()  # the test checks the backend has not finished yet
        text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    print(json.dumps({"call": "timed_stream", "ok": True, "text": text}), flush=True)
    probe.main(sys.argv[2:])
""")

KEEP_ALIVE = textwrap.dedent("""
    import json, os, socket, ssl
    raw = socket.create_connection(("127.0.0.1", 3128), timeout=20)
    raw.sendall(b"CONNECT inference.local:443 HTTP/1.1\\r\\nHost: inference.local:443\\r\\n\\r\\n")
    assert raw.recv(4096).startswith(b"HTTP/1.1 200")
    tls = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"]).wrap_socket(
        raw, server_hostname="inference.local")
    f = tls.makefile("rb")

    def exchange(head, body=b""):
        tls.sendall(head + body)
        status = f.readline()
        headers = {}
        for line in iter(f.readline, b"\\r\\n"):
            name, _, value = line.decode().partition(":")
            headers[name.lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            data = b""
            while size := int(f.readline().split(b";")[0], 16):
                data += f.read(size)
                f.readline()
            f.readline()
        else:
            data = f.read(int(headers.get("content-length", 0)))
        return int(status.split()[1]), json.loads(data)

    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).encode()
    first = exchange(b"POST /v1/chat/completions HTTP/1.1\\r\\nHost: inference.local\\r\\n"
                     b"Content-Type: application/json\\r\\nAuthorization: Bearer sk-agent-placeholder\\r\\n"
                     b"Content-Length: %d\\r\\n\\r\\n" % len(body), body)
    second = exchange(b"GET /admin/config HTTP/1.1\\r\\nHost: inference.local\\r\\n\\r\\n")
    closed = f.read(1) == b""
    print(json.dumps({"first": first[0], "model": first[1]["model"], "second": second, "closed": closed}))
""")


def routes_file(e2e: E2E) -> str:
    key = e2e.work / "anthropic.key"  # inside the workdir: the sandbox would see it, were it not hidden
    key.write_text(ANTHROPIC_KEY + "\n")
    os.chown(key, NOBODY_UID, NOBODY_GID)
    key.chmod(0o600)
    return str(e2e.write("routes.yaml", textwrap.dedent(f"""\
        routes:
          - {{name: lan-vllm, protocol: openai, base_url: '{e2e.up.openai.url}/v1', model: llama3.2,
              api_key_env: OPENAI_ROUTE_KEY}}
          - {{name: claude, protocol: anthropic, base_url: '{e2e.up.anthropic.url}', api_key_file: '{key}'}}
        """)))


def test_sdks_through_inference_local(e2e: E2E):
    """Routing per protocol, model rewrite, credential stripping and injection (the route keys
    never enter the sandbox: neither the variable nor the key file), streaming with the first
    chunk before the backend finishes, a mid-stream failure, the keep-alive refusal."""
    up = e2e.up
    for backend in (up.openai, up.anthropic):
        backend.reset()
    shutil.copy(REPO / "tests" / "inference" / "probe.py", e2e.ro / "probe.py")
    up.openai.script(hold_last=True)  # the timed stream (first: `finished` is still clear)
    up.openai.script()  # openai_chat as usual
    up.openai.script()  # the first openai_stream as usual
    up.openai.script(fail_after=2)  # the second one: the backend fails mid-stream
    proc = e2e.start([
        ("env", ["env"]),
        ("key_file", ["cat", str(e2e.work / "anthropic.key")]),
        ("sdk", [e2e.python, "-c", SDK_CALLS, str(e2e.ro), "openai_chat", "openai_stream", "openai_stream",
                 "anthropic_message", "anthropic_stream", "not_inference"]),
        ("keep_alive", [e2e.python, "-c", KEEP_ALIVE]),
    ], policy=e2e.policy(), args=("--inference-routes", routes_file(e2e)),
        env={"OPENAI_ROUTE_KEY": OPENAI_KEY})
    deadline = time.monotonic() + 60
    while not (e2e.work / "first-chunk").exists():
        assert time.monotonic() < deadline and proc.poll() is None, "no first chunk"
        time.sleep(0.02)
    assert not up.openai.finished  # the backend is holding its last events: the chunk came first
    up.openai.release()
    results, _err = e2e.finish(proc)

    inside = dict(line.split("=", 1) for line in results["env"]["out"].splitlines() if "=" in line)
    assert inside["OPENAI_ROUTE_KEY"] == "stockade-inference-placeholder"
    assert inside["OPENAI_BASE_URL"] == "https://inference.local/v1"
    assert inside["ANTHROPIC_BASE_URL"] == "https://inference.local"
    assert OPENAI_KEY not in results["env"]["out"] and ANTHROPIC_KEY not in results["env"]["out"]
    assert results["key_file"]["out"] == ""  # covered by an empty file in the sandbox's view

    assert results["sdk"]["rc"] == 0, results["sdk"]["err"]
    calls = [json.loads(line) for line in results["sdk"]["out"].splitlines()]
    assert [(c["call"], c["ok"]) for c in calls] == [
        ("timed_stream", True), ("openai_chat", True), ("openai_stream", True), ("openai_stream", False),
        ("anthropic_message", True), ("anthropic_stream", True), ("not_inference", True)], calls
    assert calls[0]["text"] == calls[2]["text"] == calls[5]["text"] == "Hello from the fake backend"
    assert calls[1] == {"call": "openai_chat", "ok": True, "text": "Hello from the fake backend",
                        "model": "llama3.2"}  # the route's model, written into the request
    assert calls[3]["error"] == "APIError" and "failed mid-response" in calls[3]["message"]
    assert calls[4]["text"] == "Hello from the fake backend" and calls[4]["model"] == "claude-x"
    assert calls[6]["status"] == 403 and calls[6]["body"]["error"] == "not_inference"
    assert results["keep_alive"]["rc"] == 0, results["keep_alive"]
    keep = json.loads(results["keep_alive"]["out"])  # inference, then anything else: 403 and closed
    assert (keep["first"], keep["model"], keep["second"][0], keep["second"][1]["error"], keep["closed"]) == \
        (200, "llama3.2", 403, "not_inference", True)

    openai_seen, anthropic_seen = up.openai.received, up.anthropic.received
    assert [r.json()["model"] for r in openai_seen if r.body] == ["llama3.2"] * 5
    assert anthropic_seen and all(r.json()["model"] == "claude-x" for r in anthropic_seen)
    for seen, header, value in ((openai_seen, "authorization", f"Bearer {OPENAI_KEY}"),
                                (anthropic_seen, "x-api-key", ANTHROPIC_KEY)):
        for r in seen:
            assert r.headers_named(header) == [value]  # injected, exactly once
            assert AGENT_KEY not in repr(r.headers)  # the caller's credential was stripped
    assert all(not r.headers_named("x-api-key") for r in openai_seen)
    assert all(not r.headers_named("authorization") for r in anthropic_seen)

    events = [json.loads(line) for line in e2e.cli("logs", "e2e", "--json").stdout.splitlines()]
    text = json.dumps(events)
    assert OPENAI_KEY not in text and ANTHROPIC_KEY not in text and AGENT_KEY not in text
    assert "Hello from the fake backend" not in text  # no completion text in events
    assert '"lan-vllm"' in text and '"claude"' in text


ERRORS = textwrap.dedent("""
    import json, threading, httpx2, openai, anthropic
    out = {}

    def sdk(name, call):
        try:
            call()
            out[name] = {"ok": True}
        except Exception as exc:
            body = getattr(exc, "body", None)
            out[name] = {"error": type(exc).__name__, "status": getattr(exc, "status_code", None),
                         "body": body if isinstance(body, (dict, list)) else None}

    o = openai.OpenAI(api_key="sk-agent", base_url="https://inference.local/v1", max_retries=0, timeout=60)
    a = anthropic.Anthropic(api_key="sk-agent", base_url="https://inference.local", max_retries=0, timeout=60)
    hi = [{"role": "user", "content": "hi"}]
    slow = threading.Thread(target=sdk, args=("timeout", lambda: o.chat.completions.create(
        model="slow-model", messages=hi)))
    slow.start()  # the backend's connect times out (10 s) while the others run
    sdk("ok", lambda: o.chat.completions.create(model="gpt-4o", messages=hi))
    sdk("unreachable", lambda: o.chat.completions.create(model="dead-model", messages=hi))
    sdk("no_route", lambda: a.messages.create(model="claude-x", max_tokens=8, messages=hi))
    with httpx2.Client() as c:  # the raw bodies (trust_env: the proxy, the sandbox CA)
        r = c.get("https://inference.local/v1/unknown/endpoint")
        out["unknown_path"] = {"status": r.status_code, "body": r.json()}
        r = c.post("https://inference.local/v1/messages", json={"model": "m", "messages": hi, "max_tokens": 8},
                   headers={"anthropic-version": "2023-06-01"})
        out["no_route_raw"] = {"status": r.status_code, "body": r.json()}
    slow.join(60)
    print(json.dumps(out))
""")


def test_every_error_shape_reaches_the_sdks(e2e_rootless: E2E):
    """503 no route, 404 unknown path, 502 backend unreachable, 504 backend timeout, each in the
    protocol's own error shape so the SDKs raise their own status errors."""
    e2e = e2e_rootless
    e2e.net.run(["ip", "route", "replace", "10.79.0.0/24", "dev", "lo"])
    routes = e2e.write("routes.yaml", textwrap.dedent(f"""\
        routes:
          - {{name: good, protocol: openai, base_url: '{e2e.up.openai.url}/v1', api_key_env: OPENAI_ROUTE_KEY,
              default: true}}
          - {{name: dead, protocol: openai, base_url: 'http://closed.test:8000/v1', model: dead-model,
              no_api_key: true}}
          - {{name: slow, protocol: openai, base_url: 'http://{BLACKHOLE}:8000/v1', model: slow-model,
              no_api_key: true}}
        """))
    e2e.up.openai.reset()
    results, done = e2e.run([("errors", [e2e.python, "-c", ERRORS])], policy=e2e.policy(),
                            args=("--inference-routes", str(routes)), env={"OPENAI_ROUTE_KEY": OPENAI_KEY})
    assert done.returncode == 0, done.stderr
    out = json.loads(results["errors"]["out"])
    assert out["ok"] == {"ok": True}
    for name, status in {"unreachable": 502, "timeout": 504, "no_route": 503}.items():
        assert out[name]["status"] == status, (name, out[name])
    # OpenAI's shape {"error": {message, type, param, code}} (the SDK hands over the inner object)
    assert out["unreachable"]["body"]["code"] == "backend_unreachable"
    assert out["timeout"]["body"]["code"] == "backend_timeout"
    assert out["unknown_path"]["status"] == 404
    assert out["unknown_path"]["body"]["error"]["code"] == "unknown_endpoint"
    # Anthropic's shape {"type": "error", "error": {type, message}}, through the SDK and raw
    for name in ("no_route", "no_route_raw"):
        body = out[name]["body"]
        assert body["type"] == "error" and "no anthropic inference route" in body["error"]["message"], out[name]
    assert out["no_route_raw"]["status"] == 503
