"""The proxy with the inference router as its hook, in a process of its own, the way the
supervisor will run it: `python -m tests.inference.standalone ROUTES_YAML CA_PEM_OUT` mints a
sandbox CA, writes its certificate to CA_PEM_OUT, prints `ready PORT` and serves until stdin
closes. Keys come from this process's environment.

Clients use it as their HTTPS proxy (HTTPS_PROXY=http://127.0.0.1:PORT) and trust the CA
(SSL_CERT_FILE=CA_PEM_OUT).
"""

from __future__ import annotations

import asyncio
import socket
import sys


async def main(routes_file: str, ca_out: str) -> None:
    from stockade.events.types import ListRecorder
    from stockade.inference import InferenceRouter, load_routes_file
    from stockade.network.ca import CertificateAuthority
    from stockade.network.pipeline import PolicyHolder
    from stockade.network.server import ProxyServer
    from stockade.network.tls import LeafCache
    from stockade.policy.engine import compile_policy
    from stockade.policy.loader import load_policy_text

    ca = CertificateAuthority.generate("standalone")
    with open(ca_out, "wb") as f:
        f.write(ca.certificate_pem)

    router = InferenceRouter(load_routes_file(routes_file), recorder=ListRecorder())
    holder = PolicyHolder(compile_policy(load_policy_text("version: 1\nnetwork_policies: {}\n")))
    proxy = ProxyServer(holder, leaf_cache=LeafCache(ca), inference=router.handle_channel)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    await proxy.start(sock)
    print(f"ready {sock.getsockname()[1]}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await proxy.close()
    await router.aclose()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:3]))
