"""The proxy under test, in process: policy from YAML, injectable resolver, recorded events."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from stockade.events.types import ListRecorder
from stockade.network.limits import Limits
from stockade.network.pipeline import PolicyHolder
from stockade.network.server import ProxyServer
from stockade.network.ssrf import DnsFailed
from stockade.policy.engine import compile_policy
from stockade.policy.loader import load_policy_text

from .inproc import listener, run_in_netns
from .wire import Reply, Wire


def engine_for(yaml_text: str):
    return compile_policy(load_policy_text(textwrap.dedent(yaml_text)))


class MapResolver:
    """Names to fixed answers; anything else fails like NXDOMAIN. Counts lookups."""

    def __init__(self, names: dict[str, list[str]] | None = None) -> None:
        self.names = {k: list(v) for k, v in (names or {}).items()}
        self.calls: list[str] = []

    async def resolve(self, host: str, port: int):
        self.calls.append(host)
        if host not in self.names:
            raise DnsFailed("Name or service not known")
        return [ipaddress.ip_address(a) for a in self.names[host]]


class SequenceResolver:
    """Answers with the next list each time: a rebinding DNS server."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def resolve(self, host: str, port: int):
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return [ipaddress.ip_address(a) for a in answer]


@dataclass
class Proxy:
    server: ProxyServer
    host: str
    port: int
    holder: PolicyHolder
    recorder: ListRecorder = field(default_factory=ListRecorder)

    def events(self, kind: type) -> list:
        return [e for e in self.recorder.events if isinstance(e, kind)]

    async def close(self) -> None:
        await self.server.close()


async def start_proxy(host: str, policy_yaml: str, *, resolver: Any = None,
                      limits: Limits | None = None, port: int = 0, **kwargs: Any) -> Proxy:
    recorder = ListRecorder()
    holder = PolicyHolder(engine_for(policy_yaml))
    server = ProxyServer(holder, recorder=recorder, resolver=resolver or MapResolver(),
                         limits=limits or Limits(), **kwargs)
    sock = listener(host, port)
    await server.start(sock)
    return Proxy(server, host, sock.getsockname()[1], holder, recorder)


async def inference_echo(stream: Any, actor: Any, scheme: str) -> None:
    """An inference handler that answers the scheme and request line it was handed."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.read()
    body = json.dumps({"scheme": scheme, "line": data.split(b"\r\n")[0].decode()}).encode()
    stream.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
    await stream.drain()


@dataclass
class Scene:
    """An upstream (an Origin or a RawServer) and the proxy in front of it. Client connections
    opened with `wire()` or `ask()` are closed with the rest when the scene ends, also when an
    assertion failed first."""

    upstream: Any
    port: int  # the upstream's port
    proxy: Proxy
    wires: list[Wire] = field(default_factory=list)

    async def wire(self) -> Wire:
        """A new client connection to the proxy."""
        w = await Wire.open(self.proxy.host, self.proxy.port)
        self.wires.append(w)
        return w

    async def ask(self, request: bytes, *, head_request: bool = False) -> Reply:
        """`request` on a new client connection, and the reply."""
        w = await self.wire()
        await w.send(request)
        return await w.response(head_request=head_request)

    async def close(self) -> None:
        for w in self.wires:
            w.close()
        await self.proxy.close()
        await self.upstream.close()


@contextlib.asynccontextmanager
async def scene(net: Net, upstream: Any, policy: Callable[[int], str], *,
                names: dict[str, list[str]], **proxy_kw: Any) -> AsyncIterator[Scene]:
    """Start `upstream` on net.a, then a proxy with `policy(upstream_port)` whose resolver
    answers `names`; everything is closed on the way out."""
    await upstream.start(net.a, 0)
    port = upstream.server.sockets[0].getsockname()[1]
    try:
        proxy = await start_proxy(net.proxy, policy(port), resolver=MapResolver(names), **proxy_kw)
    except BaseException:
        await upstream.close()
        raise
    s = Scene(upstream, port, proxy)
    try:
        yield s
    finally:
        await s.close()


@dataclass
class Net:
    """The test namespace as the in-process tests see it: a few fixed addresses, one runner."""

    pid: int
    proxy: str  # where the proxy listens
    a: str  # origin addresses
    b: str
    v6: str
    blackhole: str  # routed nowhere: a connect there times out

    def run(self, factory: Callable[[], Awaitable[Any]], timeout: float = 30.0,
            uvloop: bool = False) -> Any:
        return run_in_netns(self.pid, factory, timeout=timeout, uvloop=uvloop)


_NET: Net | None = None


@pytest.fixture(scope="session")
def net(testnet) -> Net:
    """Addresses are allocated once per session: the namespace has a few hundred at most."""
    global _NET
    if _NET is None or _NET.pid != testnet.pid:
        proxy, a, b = testnet.new_address(), testnet.new_address(), testnet.new_address()
        v6 = testnet.new_address6()
        # 10.78.0.0/24 is routed into `lo` but owned by nobody (and the namespace does not
        # forward): a SYN there vanishes without a reset, so a connect times out.
        testnet.run(["ip", "route", "add", "10.78.0.0/24", "dev", "lo"])
        _NET = Net(testnet.pid, proxy, a, b, v6, "10.78.0.9")
    return _NET
