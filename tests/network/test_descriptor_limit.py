"""The proxy's descriptor budget: the open-file limit is raised toward what the connection limits
need, and the limits are fitted into what is granted, so that a flood of connections meets the
proxy's recorded 503 instead of connections dropped without a word at EMFILE."""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from stockade.network.limits import (DEFAULT_LIMITS, RESERVED_DESCRIPTORS, Limits,
                                     connection_limit_notice, descriptors_needed,
                                     fit_to_descriptors, reachable_descriptors)
from tests.conftest import STOCKADE
from tests.support.netns import TestNet, wait_for_port

REPO = str(Path(__file__).resolve().parents[2])


def test_limits_that_fit_are_kept_as_they_are():
    assert fit_to_descriptors(DEFAULT_LIMITS, descriptors_needed(DEFAULT_LIMITS)) is DEFAULT_LIMITS
    assert fit_to_descriptors(DEFAULT_LIMITS, 1 << 20) is DEFAULT_LIMITS


@pytest.mark.parametrize("available", [0, 50, 130, 200, 1024, 2000, 2431])
def test_limits_are_fitted_into_the_descriptors_available(available: int):
    fitted = fit_to_descriptors(DEFAULT_LIMITS, available)
    assert fitted.max_connections >= 1  # always serves something, and refuses the rest with a 503
    assert fitted.max_connections < DEFAULT_LIMITS.max_connections
    assert fitted.pool_per_key <= fitted.pool_total <= DEFAULT_LIMITS.pool_total
    if available >= RESERVED_DESCRIPTORS + 3:
        assert descriptors_needed(fitted) <= available
    assert fitted.head_timeout == DEFAULT_LIMITS.head_timeout  # nothing else changes


def test_a_hard_limit_of_1024_still_serves_hundreds():
    fitted = fit_to_descriptors(DEFAULT_LIMITS, 1024)
    assert 350 <= fitted.max_connections < 1024 and fitted.pool_total >= 100


def test_the_limit_reached_is_what_is_needed_within_the_hard_limit_and_never_lower():
    needed, inf = descriptors_needed(DEFAULT_LIMITS), resource.RLIM_INFINITY
    assert reachable_descriptors(DEFAULT_LIMITS, 1024, 1 << 20) == needed
    assert reachable_descriptors(DEFAULT_LIMITS, 1024, inf) == needed
    assert reachable_descriptors(DEFAULT_LIMITS, 1024, 2000) == 2000
    assert reachable_descriptors(DEFAULT_LIMITS, 512, 512) == 512
    assert reachable_descriptors(DEFAULT_LIMITS, 5000, 8000) == 5000
    assert reachable_descriptors(DEFAULT_LIMITS, inf, inf) == needed


def test_the_notice_names_the_limit_and_what_it_allows():
    assert connection_limit_notice(DEFAULT_LIMITS, descriptors_needed(DEFAULT_LIMITS)) is None
    notice = connection_limit_notice(DEFAULT_LIMITS, 512)
    assert notice == ("the open-file limit (512, see `ulimit -Hn`) lets the proxy serve 168 "
                      "connections at once instead of 1024: 2432 would serve all")


def _limits_after_raise(soft: int, hard: int, limits: str = "Limits()") -> tuple[int, int, int]:
    code = textwrap.dedent(f"""
        import resource
        from stockade.network.limits import Limits, raise_descriptor_limit
        got = raise_descriptor_limit({limits})
        print(got, *resource.getrlimit(resource.RLIMIT_NOFILE))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         cwd=REPO, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)))
    assert out.returncode == 0, out.stderr
    got, new_soft, new_hard = (int(x) for x in out.stdout.split())
    return got, new_soft, new_hard


def test_the_soft_limit_is_raised_to_what_the_limits_need_within_the_hard_limit():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    needed = descriptors_needed(DEFAULT_LIMITS)
    if hard != resource.RLIM_INFINITY and hard < needed + 10:
        pytest.skip(f"this process's hard limit ({hard}) is below what the test needs")
    assert _limits_after_raise(256, needed + 10) == (needed, needed, needed + 10)
    # Within the hard limit only; never lowered.
    assert _limits_after_raise(256, 1000) == (1000, 1000, 1000)
    assert _limits_after_raise(needed + 5, needed + 10) == (needed + 5, needed + 5, needed + 10)
    # Limits that fit already change nothing.
    assert descriptors_needed(Limits(max_connections=10, pool_total=4)) < 256
    assert _limits_after_raise(256, 1000, "Limits(max_connections=10, pool_total=4)") == (256, 256, 1000)


SINK = """
import socket, sys, threading
listener = socket.create_server((sys.argv[1], 9000), backlog=512)
def serve(conn):
    while conn.recv(4096):
        pass
    conn.close()
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""

FLOOD = """
import json, socket, sys, time
proxy, origin, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
host, port = proxy.rsplit(":", 1)
def connect():
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(f"CONNECT {origin}:9000 HTTP/1.1\\r\\nHost: {origin}:9000\\r\\n\\r\\n".encode())
    head = b""
    while b"\\r\\n\\r\\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    return s, head
answers, held = [], []
for _ in range(count):
    try:
        s, head = connect()
        held.append(s)
        answers.append(head.split(b"\\r\\n")[0].decode() + ("" if b"503" not in head else
                       " " + head.split(b"\\r\\n\\r\\n", 1)[1][:200].decode(errors="replace")))
    except OSError as exc:
        answers.append(f"error {exc!r}")
for s in held:
    s.close()
after = "none"
for _ in range(50):  # the proxy sees the closes and frees its descriptors
    time.sleep(0.1)
    s, head = connect()
    after = head.split(b"\\r\\n")[0].decode()
    s.close()
    if " 200 " in after:
        break
print(json.dumps({"answers": answers, "after": after}))
"""


@pytest.mark.netns
def test_a_connection_flood_past_the_open_file_limit_is_answered_503_and_recovered(
        testnet: TestNet, tmp_path):
    import json

    proxy_addr, origin = testnet.new_address(), testnet.new_address()
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent(f"""\
        version: 1
        network_policies:
          sink:
            endpoints: [{{host: "{origin}", port: 9000, allowed_ips: ["{origin}/32"]}}]
            binaries: [{{path: "/**"}}]
    """))
    (tmp_path / "sink.py").write_text(SINK)
    (tmp_path / "flood.py").write_text(FLOOD)
    testnet.spawn([sys.executable, str(tmp_path / "sink.py"), origin])
    log = tmp_path / "proxy.log"
    hard = 200  # fitted: (200 - 128 reserved - 9 pooled) // 2 = 31 connections
    testnet.spawn([*STOCKADE, "proxy", "--policy", str(policy), "--listen", f"{proxy_addr}:3128", "-v"],
                  cwd=REPO, stderr=open(log, "w"),
                  preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard)))
    wait_for_port(testnet, proxy_addr, 3128)
    wait_for_port(testnet, origin, 9000)
    out = testnet.run([sys.executable, str(tmp_path / "flood.py"), f"{proxy_addr}:3128", origin, "80"],
                      timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    answers = result["answers"]
    served = [a for a in answers if " 200 " in a]
    refused = [a for a in answers if " 503 " in a]
    # Every connection is answered: none reset or closed without a word.
    assert len(served) + len(refused) == 80, [a for a in answers if a not in served + refused]
    assert len(served) == fit_to_descriptors(DEFAULT_LIMITS, hard).max_connections
    assert all("too_many_connections" in a for a in refused)
    assert " 200 " in result["after"]
    deadline = time.monotonic() + 5
    while "concurrent connection limit" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    text = log.read_text()
    assert "open-file limit (200" in text and "31 connections at once" in text
    assert "concurrent connection limit reached" in text  # recorded, not silent
