"""The proxy with the inference router as its hook, in a process of its own, the way the
supervisor will run it: `python -m tests.inference.standalone ROUTES_YAML CERT KEY` prints
`ready PORT` and serves until stdin closes. Keys come from this process's environment.

CERT/KEY: an inference.local leaf (harness.TlsIdentity or the sandbox CA's leaf cache).
Clients use it as their HTTPS proxy (HTTPS_PROXY=http://127.0.0.1:PORT) and trust the CA.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys


class _Leaves:
    def __init__(self, cert: str, key: str) -> None:
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert, key)

    def server_context(self, host: str) -> ssl.SSLContext:
        return self.ctx


async def main(routes_file: str, cert: str, key: str) -> None:
    from stockade.events.types import ListRecorder
    from stockade.inference import InferenceRouter, load_routes_file
    from stockade.network.pipeline import PolicyHolder
    from stockade.network.server import ProxyServer
    from stockade.policy.engine import compile_policy
    from stockade.policy.loader import load_policy_text

    router = InferenceRouter(load_routes_file(routes_file), recorder=ListRecorder())
    holder = PolicyHolder(compile_policy(load_policy_text("version: 1\nnetwork_policies: {}\n")))
    proxy = ProxyServer(holder, leaf_cache=_Leaves(cert, key), inference=router.handle_channel)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    await proxy.start(sock)
    print(f"ready {sock.getsockname()[1]}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await proxy.close()
    await router.aclose()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
