"""Every limit and timeout of the egress proxy, in one place.

OpenShell has no timeout on the initial head read, the upstream connect or idle tunnels
(reference/network.md §2.5): a stuck client or upstream pins a task forever. Each limit below
is answered, never silently dropped: the status code a client sees is noted next to it.
"""

from __future__ import annotations

import resource

from ..records import Struct, replace


class Limits(Struct, frozen=True):
    # A client must send a complete request head this fast after connecting or after the
    # previous response on a kept-alive connection (408 when a partial head is pending,
    # a quiet close when nothing at all was sent: that is an idle keep-alive connection).
    head_timeout: float = 30.0
    # Request head (request line + headers) size: 431 when exceeded. Same for the heads
    # of requests inside L7 tunnels; an upstream response head over it is a 502.
    max_head_size: int = 16 * 1024
    # Most header fields in one head (431 above it).
    max_header_count: int = 128
    # Request-target length (414 above it).
    max_target_size: int = 8 * 1024
    # TCP connect to the upstream (504 `upstream_timeout`), and the TLS handshake with it
    # (502 `upstream_tls_failed`).
    connect_timeout: float = 10.0
    tls_handshake_timeout: float = 10.0
    # On endpoints that need inspection, the first bytes of a tunnel are classified (TLS,
    # HTTP or other) once enough have arrived. OpenShell classifies whatever the first segment
    # holds, so a 1-byte first write skipped L7 inspection (Appendix A.5); we wait: up to
    # `classify_timeout` for the first byte (a client may build its TLS context only after the
    # 200), then up to `classify_more_timeout` for the rest of a too-short start.
    classify_timeout: float = 10.0
    classify_more_timeout: float = 0.5
    # Waiting for the upstream's response head after the request was sent (504).
    response_timeout: float = 300.0
    # A tunnel or a kept-alive connection with no traffic in either direction is closed.
    idle_timeout: float = 600.0
    # Concurrent client connections per proxy (one proxy per sandbox): 503 above it.
    max_connections: int = 1024
    # Idle upstream connections kept for reuse by the forward proxy, per (host, port) and in
    # total, and how long one may stay idle.
    pool_per_key: int = 16
    pool_total: int = 256
    pool_idle_timeout: float = 30.0
    # Request bodies of any size are streamed; a chunk-size line or trailer section longer
    # than this is malformed (400).
    max_chunk_line: int = 4 * 1024
    max_trailer_size: int = 16 * 1024
    # Flow control: stop reading a peer while this much is queued for the other side.
    high_water: int = 256 * 1024
    low_water: int = 64 * 1024


DEFAULT_LIMITS = Limits()


# Descriptors the proxy's process holds besides its connections: the listener, the state store
# and its WAL, a log file, the control socket and its clients, helper pipes, the inference
# backends' kept-alive connections, and a connection being refused with a 503.
RESERVED_DESCRIPTORS = 128


def descriptors_needed(limits: Limits) -> int:
    """Each client connection holds up to two descriptors (itself and its upstream), each
    pooled idle upstream one."""
    return 2 * limits.max_connections + limits.pool_total + RESERVED_DESCRIPTORS


def fit_to_descriptors(limits: Limits, available: int) -> Limits:
    """The limits, with fewer connections when `available` descriptors cannot hold them all.

    Past the open-file limit accept() fails with EMFILE, and the event loop drops connections
    without a word (libuv accepts and closes them to drain the backlog): nothing is answered or
    recorded. Within the fitted limits the proxy answers 503 too_many_connections instead."""
    if descriptors_needed(limits) <= available:
        return limits
    budget = max(available - RESERVED_DESCRIPTORS, 3)
    pool = min(limits.pool_total, budget // 8)
    return replace(limits, max_connections=max((budget - pool) // 2, 1), pool_total=pool,
                   pool_per_key=min(limits.pool_per_key, pool))


def reachable_descriptors(limits: Limits, soft: int, hard: int) -> int:
    """The soft open-file limit `raise_descriptor_limit` reaches from (soft, hard)."""
    wanted = descriptors_needed(limits)
    if soft == resource.RLIM_INFINITY:
        return wanted
    if soft >= wanted:
        return soft  # never lowered
    return wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)


def raise_descriptor_limit(limits: Limits) -> int:
    """Raise this process's soft RLIMIT_NOFILE toward what `limits` need, within the hard limit
    (desktops often start processes at 1,024), and return the soft limit now in force. Processes
    forked before keep theirs: the sandboxed command is forked before the proxy starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = reachable_descriptors(limits, soft, hard)
    if soft != resource.RLIM_INFINITY and target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
    return target


def connection_limit_notice(limits: Limits, available: int) -> str | None:
    """What to tell the user when `available` descriptors hold fewer connections than `limits`."""
    fitted = fit_to_descriptors(limits, available)
    if fitted is limits:
        return None
    return (f"the open-file limit ({available}, see `ulimit -Hn`) lets the proxy serve "
            f"{fitted.max_connections} connections at once instead of {limits.max_connections}: "
            f"{descriptors_needed(limits)} would serve all")


def expected_connection_limit_notice(limits: Limits = DEFAULT_LIMITS) -> str | None:
    """The notice a proxy started from this process will have (for a report before it starts)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return connection_limit_notice(limits, reachable_descriptors(limits, soft, hard))
