"""Fake backends in the test network namespace, for tests that run stockade (and the agent's
SDKs) inside it: the backend listens on a fresh 10.77.0.x address under a hostname from the
namespace's hosts file, and is scripted from the test process through a Unix control socket.

    backend = start_backend(testnet, "openai", tmp_path, expected_key="sk-route")
    # route: make_route("o", "openai", backend.url + "/v1", api_key_env=...)
    backend.script(hold_last=True); ...; backend.received[-1].headers
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from tests.support.netns import TestNet, wait_for_port

from .backends import RemoteBackend

REPO = str(Path(__file__).resolve().parents[2])


class NetnsBackend(RemoteBackend):
    def __init__(self, control_path: str, url: str, host: str, address: str) -> None:
        super().__init__(control_path)
        self.url = url  # http://HOST:PORT, resolvable inside the namespace only
        self.host = host
        self.address = address


def start_backend(net: TestNet, protocol: str, workdir: Path, *, port: int = 8000,
                  expected_key: str | None = None, host: str | None = None) -> NetnsBackend:
    address = net.new_address()
    host = host or f"{protocol}-{address.replace('.', '-')}.backend.test"
    control = str(workdir / f"{host}.sock")
    argv = [sys.executable, "-m", "tests.inference.backends", protocol, address, str(port), control]
    if expected_key:
        argv.append(expected_key)
    net.spawn(argv, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})
    wait_for_port(net, address, port)
    deadline = time.monotonic() + 10
    while not os.path.exists(control) and time.monotonic() < deadline:
        time.sleep(0.02)
    net.add_host(host, address)
    return NetnsBackend(control, f"http://{host}:{port}", host, address)
