"""`stockade proxy`: the egress proxy on its own (benchmarks, sidecar use).

Same pipeline as inside `stockade run`, minus the sandbox: there is no process to identify, so
binary lists are not checked (the startup line says so). Every decision is printed on stderr
as one shorthand line (denials and findings only, unless --verbose).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from pathlib import Path

import click

from ..errors import EXIT_INVALID, StockadeError


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {text!r}", param_hint="--listen")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "127.0.0.1", int(port)


def _secret_specs(values: tuple[str, ...]) -> dict[str, tuple[str, ...] | None]:
    specs: dict[str, tuple[str, ...] | None] = {}
    for value in values:
        key, sep, hosts = value.partition("=")
        if not key:
            raise click.BadParameter(f"expected KEY[=HOST,...], got {value!r}", param_hint="--secret")
        specs[key] = tuple(h.strip().lower() for h in hosts.split(",") if h.strip()) if sep else None
    return specs


class _StderrRecorder:
    """Prints events as shorthand lines; never blocks the proxy for long (stderr is a pipe)."""

    def __init__(self, verbose: bool) -> None:
        from ..events.ocsf import to_ocsf
        from ..events.shorthand import shorthand
        from ..events.types import Action
        self.verbose = verbose
        self.allowed = Action.ALLOWED
        self._line = lambda event: shorthand(to_ocsf(event, sandbox="proxy"))

    def record(self, event) -> None:  # noqa: ANN001 - any events.types event
        if not self.verbose and getattr(event, "action", None) is self.allowed:
            return
        try:
            line = self._line(event)
        except Exception:  # the log line must never take the proxy down
            line = repr(event)
        print(line, file=sys.stderr, flush=True)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


@click.command("proxy")
@click.option("--policy", "policy_path", required=True, type=click.Path(dir_okay=False),
              help="Policy YAML (OpenShell format).")
@click.option("--listen", "listen", default="127.0.0.1:3128", show_default=True,
              help="Address to listen on, HOST:PORT ([v6]:PORT for IPv6).")
@click.option("--upstream-ca", type=click.Path(exists=True, dir_okay=False),
              help="Extra CA bundle that upstream TLS certificates may chain to (private CAs).")
@click.option("--ca-cert-out", type=click.Path(dir_okay=False),
              help="Write the proxy's CA certificate (PEM) here, for clients to trust.")
@click.option("--secret", "secrets", multiple=True, metavar="KEY[=HOST,...]",
              help="Substitute $KEY's placeholder with its value from this environment, on "
                   "requests to HOST (default: the hosts of the policy rules). Repeatable.")
@click.option("--verbose", "-v", is_flag=True, help="Also print allowed connections.")
def proxy(policy_path: str, listen: str, upstream_ca: str | None, ca_cert_out: str | None,
          secrets: tuple[str, ...], verbose: bool) -> None:
    """Run the egress proxy without a sandbox (binary identity unavailable)."""
    from ..policy.engine import compile_policy
    from ..policy.loader import load_policy_file

    host, port = _listen_address(listen)
    try:
        policy = load_policy_file(policy_path)
    except StockadeError as exc:
        click.echo(f"stockade proxy: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    engine = compile_policy(policy)
    from ..network.credentials import CredentialError
    try:
        server_kwargs = _tls_and_secrets(policy, upstream_ca, ca_cert_out, _secret_specs(secrets))
    except (StockadeError, CredentialError, OSError) as exc:
        click.echo(f"stockade proxy: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    try:
        listener = _bind(host, port)
    except OSError as exc:
        click.echo(f"stockade proxy: cannot listen on {listen}: {exc.strerror}", err=True)
        sys.exit(EXIT_INVALID)
    bound = listener.getsockname()
    rules = len(policy.network_policies)
    click.echo(f"stockade proxy listening on {bound[0]}:{bound[1]} (policy {policy_path}: "
               f"{rules} rule{'s' if rules != 1 else ''}); no sandbox: binary identity is "
               "unavailable, binary lists are not checked", err=True)
    store = server_kwargs.get("secrets")
    if store is not None:
        # Placeholders are not secrets: clients of a sidecar proxy need them to send requests.
        for key, placeholder in store.placeholder_env().items():
            hosts = ", ".join(store.bound_hosts(key)) or "(no host)"
            click.echo(f"placeholder {key}={placeholder} (substituted toward {hosts})", err=True)
    _run(_serve(engine, listener, server_kwargs, _StderrRecorder(verbose)))


def _tls_and_secrets(policy, upstream_ca: str | None, ca_cert_out: str | None,
                     secret_specs: dict[str, tuple[str, ...] | None]) -> dict:
    from ..network.ca import CertificateAuthority
    from ..network.tls import LeafCache
    ca = CertificateAuthority.generate("proxy")
    if ca_cert_out:
        Path(ca_cert_out).write_bytes(ca.certificate_pem)
    leaves = LeafCache(ca)
    kwargs: dict = {"leaf_cache": leaves, "upstream_tls": leaves.upstream_context(upstream_ca)}
    if secret_specs:
        from ..network.credentials import SecretStore
        kwargs["secrets"] = SecretStore.from_environment(secret_specs, policy)
    return kwargs


async def _serve(engine, listener: socket.socket, kwargs: dict, recorder) -> None:
    from ..network.pipeline import PolicyHolder
    from ..network.server import ProxyServer
    server = ProxyServer(PolicyHolder(engine), recorder=recorder, **kwargs)
    if server.limit_notice:
        click.echo(f"stockade proxy: {server.limit_notice}", err=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.close()))
    await server.serve(listener)


def _run(coro) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; asyncio is the fallback
        asyncio.run(coro)
        return
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(coro)
