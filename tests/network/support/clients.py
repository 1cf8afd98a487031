"""Real client processes through one in-process proxy with binary identity (the tests of
identity and of detection findings): each shell command runs as the identity root."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable
from typing import Any

from stockade.network.identity import IdentityResolver
from stockade.network.limits import Limits
from stockade.network.tofu import BinaryHasher

from .harness import MapResolver, Net, start_proxy
from .origins import Origin


def run_clients(testnet: Any, net: Net, policy_for: Callable[[int], str], commands: list[str], *,
                port: int, hasher: BinaryHasher | None = None,
                names: dict[str, list[str]] | None = None) -> tuple[list[tuple[int, str, str]], list[Any]]:
    """Run each command (`{proxy}` and `{port}` filled in) through a proxy on `port`; returns
    each (returncode, stdout, stderr) and every event the proxy recorded."""
    hasher = hasher or BinaryHasher()
    results: list[tuple[int, str, str]] = []
    events: list[Any] = []

    async def main() -> None:
        origin = await Origin().start(net.a, 0)
        origin_port = origin.server.sockets[0].getsockname()[1]
        proxy = await start_proxy(net.proxy, policy_for(origin_port), port=port,
                                  resolver=MapResolver(names or {"origin.test": [net.a]}),
                                  identity=None, limits=Limits())
        proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
        loop = asyncio.get_running_loop()
        try:
            for command in commands:
                script = command.format(proxy=f"http://{net.proxy}:{port}", port=origin_port)
                # The shell waits for the go line, so the resolver is rooted at it first.
                p = testnet.spawn(["sh", "-c", f"read go; {script}"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                proxy.server.identity = IdentityResolver(proc_fd, root_pid=p.pid, hasher=hasher)
                out, err = await loop.run_in_executor(None, lambda: p.communicate("go\n", 30))
                results.append((p.returncode, out, err))
        finally:
            events.extend(proxy.recorder.events)
            os.close(proc_fd)
            await proxy.close()
            await origin.close()
    net.run(main, timeout=60)
    return results, events


def allow(binary: str) -> Callable[[int], str]:
    """A policy letting `binary` reach origin.test (on the test network) at the origin's port."""
    def policy(port: int) -> str:
        return f"""
        version: 1
        network_policies:
          origin:
            endpoints:
              - {{ host: origin.test, port: {port}, allowed_ips: ["10.77.0.0/24"] }}
            binaries: [{{ path: {binary} }}]
        """
    return policy
