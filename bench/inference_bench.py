"""Added latency of the inference router: time to first byte through inference.local vs direct.

Three processes, so no two of them share a GIL: the fake OpenAI backend (tests/inference/
backends.py, a real HTTP/1.1 server), stockade (the real egress proxy with the router as its
inference hook, plus the router alone on a plain listener), and this client. Each path is
measured on one kept-alive connection, requests interleaved round-robin across paths so that
machine noise hits every path alike:

- direct:          client -> backend (plain HTTP, as to a local Ollama)
- router (plain):  client -> router -> backend (the port-80 path without the proxy: router cost)
- inference.local: client -> CONNECT inference.local:443 -> proxy TLS termination -> router
                   -> backend (the production path; CONNECT and handshake once per connection)

TTFB is the first response byte for JSON requests and the first byte of the first event for
streams (the backend sends its head and first event together, so the two coincide direct).

Run: python -m bench inference   (or: python -m bench.inference_bench)
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import REPO, Table, median, percentile

REQUESTS = int(os.environ.get("STOCKADE_BENCH_INFERENCE_N", "200"))
WARMUP = 20
KEY = "sk-bench-route-key"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


# -- the stockade side (a subprocess: python -m bench.inference_bench serve ...) ------------

def serve(backend_url: str, ca_out: str) -> None:
    """The stockade side: a sandbox CA (its certificate written to `ca_out`), the proxy with
    the router as its inference hook, and the router alone on a plain listener."""
    import uvloop

    from stockade.inference import InferenceRouter
    from stockade.inference.routes import make_route
    from stockade.network.ca import CertificateAuthority
    from stockade.network.pipeline import PolicyHolder
    from stockade.network.server import ProxyServer
    from stockade.network.tls import LeafCache
    from stockade.policy.engine import compile_policy
    from stockade.policy.loader import load_policy_text

    ca = CertificateAuthority.generate("bench")
    Path(ca_out).write_bytes(ca.certificate_pem)

    async def main() -> None:
        route = make_route("bench", "openai", backend_url + "/v1", model="llama3.2", api_key_env="BENCH_KEY")
        router = InferenceRouter([route], environ={"BENCH_KEY": KEY})
        holder = PolicyHolder(compile_policy(load_policy_text("version: 1\nnetwork_policies: {}\n")))
        proxy = ProxyServer(holder, leaf_cache=LeafCache(ca), inference=router.handle_channel)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        await proxy.start(sock)

        async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            from stockade.events.types import Actor
            await router.handle_connection(reader, writer, Actor(), port=80)

        direct = await asyncio.start_server(plain, "127.0.0.1", 0)
        print(f"ready {sock.getsockname()[1]} {direct.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent leaves

    uvloop.run(main())


# -- the client --------------------------------------------------------------------------

class Client:
    """One kept-alive connection; `timed(request)` -> (ttfb ms, total ms)."""

    def __init__(self, sock: socket.socket, host: str, absolute: bool = False) -> None:
        from stockade.network.http1 import ResponseReader
        from stockade.network.limits import Limits

        self.sock = sock
        self.host = host
        self.absolute = absolute
        self.reader = ResponseReader(Limits())

    def request_bytes(self, stream: bool) -> bytes:
        body = json.dumps(CHAT | {"stream": stream}).encode()
        target = f"http://{self.host}/v1/chat/completions" if self.absolute else "/v1/chat/completions"
        return (f"POST {target} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer sk-agent\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body

    def timed(self, stream: bool) -> tuple[float, float]:
        from stockade.network.http1 import Data, EndOfMessage, Signal

        data = self.request_bytes(stream)
        self.reader.start("POST")
        start = time.perf_counter()
        self.sock.sendall(data)
        first = None
        while True:
            event = self.reader.next_event()
            if event is Signal.NEED_DATA:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise RuntimeError("connection closed mid-response")
                if first is None and not stream:
                    first = time.perf_counter()
                self.reader.feed(chunk)
            elif isinstance(event, Data):
                if first is None:
                    first = time.perf_counter()
            elif isinstance(event, EndOfMessage):
                end = time.perf_counter()
                assert first is not None
                return (first - start) * 1000, (end - start) * 1000
            elif not isinstance(event, Signal) and event.status != 200:  # type: ignore[union-attr]
                raise RuntimeError(f"status {event.status}")  # type: ignore[union-attr]


def _connect_through_proxy(port: int, ca_pem: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(b"CONNECT inference.local:443 HTTP/1.1\r\nHost: inference.local:443\r\n\r\n")
    reply = b""
    while not reply.endswith(b"\r\n\r\n"):
        reply += sock.recv(1)
    if not reply.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"CONNECT refused: {reply!r}")
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    return ctx.wrap_socket(sock, server_hostname="inference.local")


def _plain(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def run() -> Table:
    env = dict(os.environ, PYTHONPATH=REPO)
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="stockade-bench-inference-") as tmp:
        try:
            backend_port = _free_port()
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "tests.inference.backends", "openai", "127.0.0.1", str(backend_port)],
                cwd=REPO, env=env, stdout=subprocess.DEVNULL))
            _wait_port(backend_port)
            ca_file = Path(tmp, "ca.pem")
            stockade = subprocess.Popen(
                [sys.executable, "-m", "bench.inference_bench", "serve", f"http://127.0.0.1:{backend_port}",
                 str(ca_file)],
                cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            procs.append(stockade)
            ready = stockade.stdout.readline().split()  # type: ignore[union-attr]
            if not ready or ready[0] != "ready":
                raise RuntimeError("the stockade side did not start")
            proxy_port, router_port = int(ready[1]), int(ready[2])
            paths = {
                "direct": Client(_plain(backend_port), f"127.0.0.1:{backend_port}"),
                "router (plain)": Client(_plain(router_port), "inference.local"),
                "inference.local": Client(_connect_through_proxy(proxy_port, ca_file.read_bytes()), "inference.local"),
            }
            return _measure(paths)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()


def _measure(paths: dict[str, Client]) -> Table:
    table = Table(f"Inference router: added latency ({REQUESTS} requests per row, kept-alive connections)",
                  ["request", "path", "TTFB median ms", "TTFB p90 ms", "total median ms", "added TTFB (median) ms"])
    for stream in (False, True):
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
        for i in range(WARMUP + REQUESTS):
            for name, client in paths.items():
                result = client.timed(stream)
                if i >= WARMUP:
                    samples[name].append(result)
        base = median([t for t, _ in samples["direct"]])
        for name, values in samples.items():
            ttfb = [t for t, _ in values]
            total = [t for _, t in values]
            added = "-" if name == "direct" else f"{median(ttfb) - base:+.2f}"
            table.add("stream (first event)" if stream else "JSON", name, median(ttfb),
                      percentile(ttfb, 0.9), median(total), added)
    table.note("backend: tests/inference/backends.py (stdlib server); the stream is 8 SSE events")
    table.note("inference.local = CONNECT through the real proxy, TLS terminated by it, then the router")
    return table


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(*sys.argv[2:4])
    else:
        print(run().render())
