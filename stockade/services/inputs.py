"""What `stockade run` decides for the services before the sandbox starts (runs in the
supervisor's main thread, beside the launcher), so every bad input fails with exit 125 before
anything runs: `--secret` specs and their values, the routes file, `--upstream-ca`, `--log-file`.

It also decides what the sandbox must not see: the secrets' real values (their variables become
placeholders), the inference route keys (their variables become a placeholder the router
strips; their key files are covered in the mount view).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import StockadeError
from ..records import Struct

if TYPE_CHECKING:
    from ..inference.routes import Route
    from ..network.credentials import SecretStore
    from ..policy.model import Policy

DEFAULT_PROPOSAL_FLUSH_S = 10.0
PROPOSAL_FLUSH_ENV = "STOCKADE_PROPOSAL_FLUSH_S"  # how often denials become proposals (seconds)


class ServiceOptions(Struct, frozen=True):
    """The `stockade run` options the services use (as given on the command line)."""

    secrets: tuple[str, ...] = ()  # KEY[=HOST,...]
    upstream_ca: str | None = None
    inference_routes: str | None = None
    log_file: str | None = None
    exit_after: bool = False  # the process ends when the run does (the CLI): Store.leave_open


class ServiceInputs(Struct, frozen=True):
    secrets: SecretStore | None
    routes: tuple[Route, ...] | None  # from --inference-routes; None: the store's, kept fresh
    upstream_ca: str | None
    log_file: str | None
    policy_text: str | None  # the YAML as loaded, for revision 1 (None: dumped from the model)
    proposal_flush_s: float = DEFAULT_PROPOSAL_FLUSH_S
    env_overrides: tuple[tuple[str, str], ...] = ()
    hidden_files: tuple[str, ...] = ()
    exit_after: bool = False


def prepare_inputs(options: ServiceOptions, policy: Policy, policy_text: str | None,
                   environ: Mapping[str, str] | None = None) -> ServiceInputs:
    """Validate the options against `policy` and the environment; StockadeError (exit 125)."""
    environ = os.environ if environ is None else environ
    secrets = _secrets(options.secrets, policy, environ)
    routes = _routes_file(options.inference_routes) if options.inference_routes else None
    stored = _stored_routes()
    active = routes if routes is not None else stored  # what the router will serve
    if options.upstream_ca:
        _check_upstream_ca(options.upstream_ca)
    if options.log_file:
        _check_log_file(options.log_file)
    overrides: dict[str, str] = {}
    hidden: tuple[str, ...] = ()
    if active or stored:
        from ..inference.sandbox import key_files, sandbox_variables

        # Every key the user configured stays out, also the stored ones a routes file overrides;
        # the SDKs' base URLs point at inference.local for the protocols the router serves.
        overrides.update(sandbox_variables(active, base_urls=True))
        overrides.update(sandbox_variables(stored))
        hidden = tuple(sorted(set(key_files(active)) | set(key_files(stored))))
    if secrets is not None:
        overrides.update(secrets.placeholder_env())  # a secret wins over a route placeholder
    return ServiceInputs(
        secrets=secrets, routes=routes, upstream_ca=options.upstream_ca,
        log_file=options.log_file, policy_text=policy_text, proposal_flush_s=proposal_flush_s(environ),
        env_overrides=tuple(sorted(overrides.items())), hidden_files=hidden, exit_after=options.exit_after,
    )


def key_environment(environ: Mapping[str, str], sandbox_env: Mapping[str, str]) -> dict[str, str]:
    """Where the router may read route keys: the supervisor's environment minus every variable
    the sandbox holds with the same value. A route added while the sandbox runs whose key the
    sandbox was given in clear is then refused (503 api_key_unavailable), never used."""
    return {k: v for k, v in environ.items() if sandbox_env.get(k) != v}


def proposal_flush_s(environ: Mapping[str, str]) -> float:
    try:
        value = float(environ.get(PROPOSAL_FLUSH_ENV, DEFAULT_PROPOSAL_FLUSH_S))
    except ValueError:
        return DEFAULT_PROPOSAL_FLUSH_S
    return value if value > 0 else DEFAULT_PROPOSAL_FLUSH_S


# -- each option ------------------------------------------------------------------------------

def _secrets(specs: Sequence[str], policy: Policy, environ: Mapping[str, str]) -> SecretStore | None:
    if not specs:
        return None
    from ..network.credentials import CredentialError, SecretStore

    try:
        return SecretStore.from_environment(list(specs), policy, environ)
    except CredentialError as exc:
        raise StockadeError(exc.message, hint="--secret KEY[=HOST,...] takes KEY's value from "
                            "stockade's environment") from None


def _routes_file(path: str) -> tuple[Route, ...]:
    from ..inference.routes import RouteError, load_routes_file

    try:
        return tuple(load_routes_file(path))
    except RouteError as exc:  # RoutesFileError lists every problem, located
        raise StockadeError(f"--inference-routes: {exc.message}") from None


def _stored_routes() -> tuple[Route, ...]:
    """The routes `stockade inference set` stored (every row: also one the router would skip as
    invalid, its key is hidden all the same); none when the store does not exist yet.

    A read-only query rather than events.store.Store, which costs ~40 ms of imports and WAL
    setup on the critical path of `stockade run`; the services open the store properly."""
    import sqlite3

    from ..state import db_path

    path = db_path()
    if not os.path.exists(path):
        return ()
    uri_path = path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")  # URI syntax
    try:
        conn = sqlite3.connect(f"file:{uri_path}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute("SELECT name, protocol, base_url, model, api_key_env, api_key_file, "
                                "is_default FROM inference_routes").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        if "no such table" in str(exc):
            return ()  # a store from before routes existed
        # Fail closed: a store we cannot read may name keys that must not enter the sandbox.
        raise StockadeError(f"cannot read the inference routes from the state store {path}: {exc}") from None
    if not rows:
        return ()
    from ..inference.routes import Route
    from ..inference.shapes import Protocol

    return tuple(Route(name, Protocol(protocol), url, model, env, file, bool(default))
                 for name, protocol, url, model, env, file, default in rows)


def _check_upstream_ca(path: str) -> None:
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:  # before OSError, its base class
        raise StockadeError(f"--upstream-ca {path}: not a PEM CA bundle ({exc.reason or exc})") from None
    except OSError as exc:
        raise StockadeError(f"--upstream-ca {path}: {exc.strerror or exc}") from None
    if not context.get_ca_certs():
        raise StockadeError(f"--upstream-ca {path}: the file holds no CA certificate")


def _check_log_file(path: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StockadeError(f"--log-file {path}: {exc.strerror or exc}") from None
    os.close(fd)


def describe(inputs: ServiceInputs) -> dict[str, Any]:
    """For `status`: what the services were started with (never a secret value)."""
    return {
        "secrets": inputs.secrets.keys() if inputs.secrets is not None else [],
        "routes": "file" if inputs.routes is not None else "store",
        "upstream_ca": inputs.upstream_ca, "log_file": inputs.log_file,
    }
