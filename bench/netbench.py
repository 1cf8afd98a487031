"""Network benchmarks: forward HTTP (wrk), CONNECT bulk, and the TLS-terminating L7 path.

Everything runs inside a private network namespace created for the run (10.77.0.0/24 on lo):
the origin on 10.77.0.2, every proxy on 10.77.0.1. stockade's proxy refuses loopback upstreams
by design, so the origin needs a non-loopback address that its policy opts in to with allowed_ips.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from tests.support.netns import TestNet, can_create_netns, test_network, wait_for_port

from . import peers
from .common import STOCKADE, Table, ensure_tool, median, ratio

PROXY_ADDR = "10.77.0.1"  # the first address new_address() hands out is 10.77.0.2
HTTP_PORT, SINK_PORT, TLS_PORT = 8080, 9000, 8443
STOCKADE_PORT, SQUID_PORT, TINYPROXY_PORT = 3128, 3129, 3130
# The bare relays of bench/relay.py: references for the CONNECT bulk table, not peers.
REFERENCE_RELAYS = {"bare relay, copy": ("copy", 3131), "bare relay, splice": ("splice", 3132)}

POLICY = f"""\
version: 1
network_policies:
  bench_origin:
    endpoints:
      - host: "{{origin}}"
        ports: [{HTTP_PORT}, {SINK_PORT}]
        allowed_ips: ["{{origin}}/32"]
      - host: "{{origin}}"
        port: {TLS_PORT}
        allowed_ips: ["{{origin}}/32"]
        protocol: rest
        enforcement: enforce
        rules:
          - allow: {{{{method: GET, path: "/v1/**"}}}}
    binaries:
      - path: "/**"
"""

WRK_SCRIPT = """\
request = function()
  return wrk.format("GET", "http://{origin}:{port}/v1/models", {{["Host"] = "{origin}:{port}"}})
end
"""


class Lab:
    """The namespace, the origins and the proxies of one benchmark run."""

    def __init__(self, stack: ExitStack, workdir: Path) -> None:
        self.workdir = workdir
        self.net: TestNet = stack.enter_context(test_network())
        self.net.check(["ip", "addr", "add", f"{PROXY_ADDR}/32", "dev", "lo"])
        self.origin = self.net.new_address()
        self.python = sys.executable
        self.proxies: dict[str, int] = {}
        self.references: dict[str, int] = {}
        self.skipped: dict[str, str] = {}
        self._start_origins()

    def _start_origins(self) -> None:
        cert, key = self._origin_certificate()
        for kind, port, extra in (("http", HTTP_PORT, []), ("sink", SINK_PORT, []),
                                  ("http", TLS_PORT, [cert, key])):
            self.net.spawn([self.python, "-m", "bench.origin", kind, self.origin, str(port), *extra],
                           cwd=self._repo(), stdout=subprocess.DEVNULL)
            wait_for_port(self.net, self.origin, port)

    def _origin_certificate(self) -> tuple[str, str]:
        import trustme

        ca = trustme.CA()
        leaf = ca.issue_cert(self.origin)
        self.origin_ca = str(self.workdir / "origin-ca.pem")
        ca.cert_pem.write_to_path(self.origin_ca)
        cert, key = self.workdir / "origin.pem", self.workdir / "origin.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        return str(cert), str(key)

    @staticmethod
    def _repo() -> str:
        return str(Path(__file__).resolve().parents[1])

    def start_proxies(self) -> None:
        policy = self.workdir / "policy.yaml"
        policy.write_text(POLICY.format(origin=self.origin))
        self.sandbox_ca = str(self.workdir / "sandbox-ca.pem")
        self.net.spawn([*STOCKADE, "proxy", "--policy", str(policy), "--listen", f"{PROXY_ADDR}:{STOCKADE_PORT}",
                        "--upstream-ca", self.origin_ca, "--ca-cert-out", self.sandbox_ca],
                       cwd=self._repo(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.proxies["stockade"] = STOCKADE_PORT
        for make, port in ((peers.squid, SQUID_PORT), (peers.tinyproxy, TINYPROXY_PORT)):
            peer = make(self.workdir / make.__name__, PROXY_ADDR, port, self.origin, [HTTP_PORT, SINK_PORT])
            if isinstance(peer, str):
                self.skipped[make.__name__] = peer
                continue
            self.net.spawn(peer.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.proxies[peer.name] = port
        for name, (mode, port) in REFERENCE_RELAYS.items():
            self.net.spawn([self.python, "-m", "bench.relay", mode, PROXY_ADDR, str(port)],
                           cwd=self._repo(), stdout=subprocess.DEVNULL)
            self.references[name] = port
        for started in (self.proxies, self.references):
            for name, port in list(started.items()):
                try:
                    wait_for_port(self.net, PROXY_ADDR, port, timeout=20)
                except RuntimeError as exc:
                    self.skipped[name] = str(exc)
                    del started[name]


# -- forward HTTP -------------------------------------------------------------------------------

_LAT = re.compile(r"^\s*(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")


def _parse_wrk(out: str) -> tuple[float, float, float]:
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    lat = {m.group(1): float(m.group(2)) * scale[m.group(3)] for m in _LAT.finditer(out)}
    rps = float(_RPS.search(out).group(1)) if _RPS.search(out) else float("nan")
    return rps, lat.get("50", float("nan")), lat.get("99", float("nan"))


def forward_http(lab: Lab, connections: int = 32, seconds: int = 10) -> Table:
    """Throughput at saturation (32 connections): requests/s and the ratio of stockade to each peer.
    Latency at saturation is mostly queueing; the light-load table below is the added latency."""
    return _wrk_table(lab, f"Forward HTTP, small requests (wrk, keep-alive, {connections} connections)",
                      connections, seconds)


def forward_latency(lab: Lab, seconds: int = 10) -> Table:
    """One connection, one request at a time: what a proxy adds to each request's latency."""
    return _wrk_table(lab, "Forward HTTP latency at light load (wrk, 1 connection)", 1, seconds)


def _wrk_table(lab: Lab, title: str, connections: int, seconds: int) -> Table:
    table = Table(title, ["path", "req/s", "p50 ms", "p99 ms", "stockade req/s ratio", "added p50 ms"])
    wrk = ensure_tool("wrk", "wrk")
    if wrk is None:
        table.note("wrk is not installed and could not be installed: skipped")
        return table
    script = lab.workdir / "proxy.lua"
    script.write_text(WRK_SCRIPT.format(origin=lab.origin, port=HTTP_PORT))
    base = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    results: dict[str, tuple[float, float, float]] = {}
    runs = [("direct", base + [f"http://{lab.origin}:{HTTP_PORT}/v1/models"])]
    runs += [(name, base + ["-s", str(script), f"http://{PROXY_ADDR}:{port}/"]) for name, port in lab.proxies.items()]
    for name, argv in runs:
        out = lab.net.run(argv, timeout=seconds + 60)
        results[name] = _parse_wrk(out.stdout)
        problems = [line.strip() for line in out.stdout.splitlines() if "Non-2xx" in line or "Socket errors" in line]
        if out.returncode != 0 or problems:
            table.note(f"{name}: " + ("; ".join(problems) or out.stderr.strip()[-200:])
                       + (" (tinyproxy closes the client connection after every response)"
                          if name == "tinyproxy" and problems else ""))
    ours = results.get("stockade", (float("nan"),) * 3)
    direct_p50 = results["direct"][1]
    for name, (rps, p50, p99) in results.items():
        table.add(name, rps, p50, p99, ratio(ours[0], rps) if name != "stockade" else "1.00x",
                  p50 - direct_p50 if name != "direct" else 0.0)
    for name, why in lab.skipped.items():
        table.note(f"{name} skipped: {why}")
    table.note(f"wrk -t1 -c{connections} -d{seconds}s; origin: one uvloop process; squid: workers 1, no logs, "
               "no cache; tinyproxy: thread per connection, LogLevel Critical, its filter allows the origin's "
               "host on any port (tinyproxy has no port rule for plain HTTP); stockade proxy: no event log")
    return table


# -- CONNECT bulk -------------------------------------------------------------------------------

BULK_CLIENT = r"""
import socket, sys, time
proxy, origin, port, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if proxy != "direct":
    host, pport = proxy.rsplit(":", 1)
    s = socket.create_connection((host, int(pport)))
    s.sendall(f"CONNECT {origin}:{port} HTTP/1.1\r\nHost: {origin}:{port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    assert b" 200 " in head.split(b"\r\n")[0], head
else:
    s = socket.create_connection((origin, port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
chunk = memoryview(bytes(1 << 20))
start = time.perf_counter()
s.sendall(total.to_bytes(8, "big"))
sent = 0
while sent < total:
    s.sendall(chunk)
    sent += len(chunk)
got = s.makefile().readline()
elapsed = time.perf_counter() - start
assert int(got) == total, (got, total)
print(f"{total / elapsed / 1e6:.1f}")
"""


def connect_bulk(lab: Lab, total: int = 1 << 30, rounds: int = 5) -> Table:
    """1 GiB over one connection per path; `rounds` rounds with the paths interleaved, the median
    reported (one transfer on a shared machine swings by several times, the direct one most).
    The bare relays (bench/relay.py) are the ceiling any relay has here."""
    table = Table(f"CONNECT tunnel bulk (one connection, 1 GiB; median of {rounds} interleaved rounds)",
                  ["path", "MB/s", "min", "max", "ratio to direct", "stockade ratio"])
    script = lab.workdir / "bulk.py"
    script.write_text(BULK_CLIENT)
    relays = {**lab.proxies, **lab.references}
    paths = [("direct", "direct")] + [(n, f"{PROXY_ADDR}:{p}") for n, p in relays.items()]
    rates: dict[str, list[float]] = {name: [] for name, _ in paths}
    for _ in range(rounds):
        for name, target in paths:
            out = lab.net.run([lab.python, str(script), target, lab.origin, str(SINK_PORT), str(total)],
                              timeout=600)
            if out.returncode != 0:
                table.note(f"{name}: failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            rates[name].append(float(out.stdout.strip()))
    middle = {name: median(got) for name, got in rates.items() if got}
    direct, ours = middle.get("direct", float("nan")), middle.get("stockade", float("nan"))
    for name, got in rates.items():
        if got:
            table.add(name, middle[name], min(got), max(got), ratio(middle[name], direct),
                      ratio(ours, middle[name]) if name != "stockade" else "1.00x")
    for name, why in lab.skipped.items():
        table.note(f"{name} skipped: {why}")
    table.note("bare relays (bench/relay.py): no policy, no log, no limits, a reference for what any "
               "relay costs on this machine, not a peer; copy = uvloop Protocols as in stockade's raw "
               "tunnel, splice = splice(2) through a pipe, a thread per direction")
    return table


# -- TLS-terminated L7 --------------------------------------------------------------------------

def tls_l7(lab: Lab, seconds: float = 8.0) -> Table:
    table = Table("TLS-terminated L7 (CONNECT + TLS termination + L7 rule + TLS upstream)",
                  ["path", "keep-alive req/s", "new conn/s", "keep-alive ratio", "new conn ratio"])
    if "stockade" not in lab.proxies:
        table.note("stockade proxy did not start: skipped")
        return table
    client = [lab.python, "-m", "bench.tlsclient"]
    rows: dict[str, tuple[float, float]] = {}
    for name, extra in (("direct TLS", ["--direct", "--cafile", lab.origin_ca]),
                        ("stockade", ["--proxy", f"{PROXY_ADDR}:{STOCKADE_PORT}", "--cafile", lab.sandbox_ca])):
        out = lab.net.run([*client, *extra, "--host", lab.origin, "--port", str(TLS_PORT),
                           "--seconds", str(seconds)], cwd=Lab._repo(), timeout=seconds * 4 + 60)
        if out.returncode != 0:
            table.note(f"{name}: failed: {out.stderr.strip()[-300:]}")
            continue
        keep, new = (float(x) for x in out.stdout.split())
        rows[name] = (keep, new)
    direct = rows.get("direct TLS", (float("nan"), float("nan")))
    for name, (keep, new) in rows.items():
        table.add(name, keep, new, ratio(keep, direct[0]), ratio(new, direct[1]))
    table.note("client: Python asyncio, 8 keep-alive connections / 4 concurrent new connections; "
               "the client is part of the cost, hence the direct TLS row")
    return table


def run_all(which: set[str]) -> list[Table]:
    reason = can_create_netns()
    if reason:
        t = Table("Network benchmarks", ["skipped"])
        t.note(reason)
        return [t]
    tables: list[Table] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="stockade-bench-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        lab = Lab(stack, workdir)
        lab.start_proxies()
        time.sleep(0.5)
        if "forward" in which:
            tables.append(forward_http(lab))
            tables.append(forward_latency(lab))
        if "connect" in which:
            tables.append(connect_bulk(lab))
        if "tls" in which:
            tables.append(tls_l7(lab))
        shutil.rmtree(workdir, ignore_errors=True)
    return tables
