"""Peer forward proxies for the network benchmarks: squid and tinyproxy, configured fairly.

Fairness rules (issue 7): no access or debug log to disk for anyone, no caching, one worker
process for squid (stockade's proxy is one event loop; tinyproxy cannot be limited to one thread
and uses a thread per connection — the tables say so), the same allow rule (the origin's address
and ports only) for every proxy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .common import ensure_tool


@dataclass(frozen=True)
class PeerProxy:
    name: str
    argv: list[str]
    port: int


def squid(workdir: Path, listen: str, port: int, origin: str, origin_ports: list[int]) -> PeerProxy | str:
    binary = ensure_tool("squid", "squid")
    if binary is None:
        return "squid is not installed and could not be installed (needs root and apt-get)"
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o777)
    conf = workdir / "squid.conf"
    ports = " ".join(str(p) for p in origin_ports)
    conf.write_text(f"""\
http_port {listen}:{port}
pid_filename {workdir}/squid.pid
coredump_dir {workdir}
cache_log /dev/null
access_log none
cache_store_log none
logfile_rotate 0
cache deny all
cache_mem 0 MB
memory_pools off
workers 1
pinger_enable off
shutdown_lifetime 1 seconds
forwarded_for delete
via off
acl origin dst {origin}/32
acl origin_ports port {ports}
acl CONNECT method CONNECT
http_access allow origin origin_ports
http_access deny all
""")
    return PeerProxy("squid", [binary, "-N", "-f", str(conf)], port)


def tinyproxy(workdir: Path, listen: str, port: int, origin: str, origin_ports: list[int]) -> PeerProxy | str:
    binary = ensure_tool("tinyproxy", "tinyproxy")
    if binary is None:
        return "tinyproxy is not installed and could not be installed (needs root and apt-get)"
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "tinyproxy.conf"
    connect_ports = "\n".join(f"ConnectPort {p}" for p in origin_ports)
    conf.write_text(f"""\
User nobody
Group nogroup
Port {port}
Listen {listen}
Timeout 600
MaxClients 1024
Allow {listen}
LogLevel Critical
DisableViaHeader Yes
{connect_ports}
""")
    # tinyproxy has no destination ACL for plain HTTP; `Filter` with a default-deny list is the
    # closest equivalent of an allow rule for the origin only.
    filt = workdir / "filter"
    filt.write_text(f"^{origin.replace('.', '[.]')}$\n")
    with conf.open("a") as f:
        f.write(f"Filter \"{filt}\"\nFilterDefaultDeny Yes\nFilterExtended Yes\n")
    return PeerProxy("tinyproxy", [binary, "-d", "-c", str(conf)], port)
