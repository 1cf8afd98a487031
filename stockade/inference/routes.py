"""Inference routes: the user's model backends, how one is chosen, and where its key comes from.

A route never holds its API key, only where to read it (an environment variable of the
supervisor, or a file): the key is read when a request is routed (`resolve_key`), lives in an
`ApiKey` whose repr is redacted, and is put in exactly one header of the upstream request.
It never enters the sandbox and never reaches an event, a log line or an error body.

Backends are the user's own choice, so any http(s) URL is accepted, loopback and LAN included
(Ollama on localhost:11434, a vLLM server on 192.168.x.y): the SSRF rules guard the agent's
destinations, not the user's routes.

Sans-IO except `resolve_key` (reads one env var or file) and `load_routes_file`.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from ..errors import EXIT_INVALID, StockadeError
from ..policy.diagnostics import Diagnostic
from ..policy.yamlnodes import Reader, compose
from ..records import Struct
from .shapes import Protocol

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_KEY_BYTES = 16 * 1024


class RouteError(StockadeError):
    """A route that cannot be used as given (bad name, URL, protocol or key source)."""

    exit_code = EXIT_INVALID


class Route(Struct, frozen=True):
    name: str
    protocol: Protocol
    base_url: str
    model: str | None = None  # selects the route for this model, and is written into the body
    api_key_env: str | None = None  # name of the supervisor's environment variable
    api_key_file: str | None = None  # path of a file holding the key
    default: bool = False  # the route of its protocol when no route names the requested model

    @property
    def needs_key(self) -> bool:
        return bool(self.api_key_env or self.api_key_file)

    @property
    def backend_host(self) -> str:
        """`host:port` of the backend, for events (never the path: it may carry a tenant id)."""
        return _host_port(self.base_url)

    def key_source(self) -> str:
        """Where the key comes from, for humans (`env OPENAI_API_KEY`, `file ~/.key`, `none`)."""
        if self.api_key_env:
            return f"env {self.api_key_env}"
        if self.api_key_file:
            return f"file {self.api_key_file}"
        return "none"


@functools.lru_cache(maxsize=256)
def _host_port(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def make_route(
    name: str, protocol: str, base_url: str, *, model: str | None = None,
    api_key_env: str | None = None, api_key_file: str | None = None, no_api_key: bool = False,
    default: bool = False,
) -> Route:
    """A validated Route; raises RouteError with the one thing that is wrong."""
    problem = (_check_name(name) or _check_protocol(protocol) or check_base_url(base_url)
               or _check_model(model) or _check_key_source(api_key_env, api_key_file, no_api_key))
    if problem:
        message, hint = problem
        raise RouteError(f"route {name!r}: {message}" if name else message, hint=hint)
    return Route(name, Protocol(protocol), base_url.rstrip("/") or base_url, model or None,
                 api_key_env or None, api_key_file or None, default)


_Problem = tuple[str, str | None] | None


def _check_name(name: str) -> _Problem:
    if not NAME_PATTERN.fullmatch(name):
        return (f"invalid route name {name!r}",
                "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return None


def _check_protocol(protocol: str) -> _Problem:
    if protocol not in ("openai", "anthropic"):
        return f"invalid protocol {protocol!r}", "use openai or anthropic"
    return None


def check_base_url(url: str) -> _Problem:
    """Problems with a backend base URL, or None. Private and loopback hosts are fine."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"invalid base URL {url!r}: {exc}", None
    if parts.scheme not in ("http", "https"):
        return (f"base URL {url!r} must start with http:// or https://",
                "for example http://localhost:11434/v1 or https://api.openai.com/v1")
    if not parts.hostname:
        return f"base URL {url!r} has no host", None
    if parts.username is not None or parts.password is not None:
        return (f"base URL of host {parts.hostname} carries credentials",
                "put the key in an environment variable (--api-key-env) or a file (--api-key-file)")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        return f"base URL {url!r} must not have a query or fragment", None
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return f"base URL {url!r} contains whitespace or control characters", None
    return None


def _check_model(model: str | None) -> _Problem:
    if model is not None and (not model.strip() or any(ord(c) < 0x20 for c in model)):
        return f"invalid model {model!r}", "give the backend's model name, or omit it to keep the client's"
    return None


def _check_key_source(env: str | None, path: str | None, none: bool) -> _Problem:
    given = sum(bool(x) for x in (env, path, none))
    if given == 0:
        return ("no API key source",
                "give --api-key-env VAR or --api-key-file FILE (api_key_env / api_key_file in a "
                "routes file), or --no-api-key (no_api_key: true) for a local backend without keys")
    if given > 1:
        return "give only one of api_key_env, api_key_file and no_api_key", None
    if env and not ENV_NAME_PATTERN.fullmatch(env):
        # Not echoed: a value given here by mistake is often the key itself.
        return ("invalid environment variable name for the API key",
                "give the variable's name (OPENAI_API_KEY), not its value")
    return None


# -- selection -------------------------------------------------------------------------------

class NoRoute(Struct, frozen=True):
    message: str  # safe to show the agent: names routes and protocols, never keys


def select_route(routes: Sequence[Route], protocol: Protocol, model: str | None) -> Route | NoRoute:
    """The route for a request: a route of the protocol naming the requested model, else the
    protocol's default route, else its only route. Never a route of another protocol."""
    candidates = [r for r in routes if r.protocol is protocol]
    if not candidates:
        return NoRoute(f"no {protocol.value} inference route is configured"
                       + (f" (routes exist for: {', '.join(sorted({r.protocol.value for r in routes}))})"
                          if routes else "")
                       + "; the user can add one with `stockade inference set`")
    if model:
        for route in sorted(candidates, key=lambda r: not r.default):
            if route.model == model:
                return route
    defaults = [r for r in candidates if r.default]
    if defaults:
        return defaults[0]
    if len(candidates) == 1:
        return candidates[0]
    names = ", ".join(r.name for r in candidates)
    return NoRoute(f"{len(candidates)} {protocol.value} routes ({names}) and none names model "
                   f"{model!r} or is the default; the user can mark one with "
                   "`stockade inference set ... --default`")


def join_url(base_url: str, path: str, query: str = "") -> str:
    """base + path, without doubling `/v1` when the base already ends with it."""
    base = base_url.rstrip("/")
    if base.endswith("/v1") and (path == "/v1" or path.startswith("/v1/")):
        path = path[3:]
    url = base + path
    return f"{url}?{query}" if query else url


# -- keys ------------------------------------------------------------------------------------

class ApiKey:
    """A backend key: its repr and str are redacted, only `reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "ApiKey(<redacted>)"

    __str__ = __repr__


class KeyUnavailable(Exception):
    """The route's key cannot be read. `public` is safe for the agent; `detail` for events."""

    def __init__(self, public: str, detail: str) -> None:
        super().__init__(detail)
        self.public = public
        self.detail = detail


def resolve_key(route: Route, environ: Mapping[str, str] | None = None) -> ApiKey | None:
    """The route's key, read now (so a rotated key is picked up); None for a keyless route."""
    if route.api_key_env:
        value = (os.environ if environ is None else environ).get(route.api_key_env, "")
        if not value.strip():
            raise KeyUnavailable(
                f"the API key of inference route {route.name!r} is not available: environment "
                f"variable {route.api_key_env} is not set where stockade runs",
                f"environment variable {route.api_key_env} is not set",
            )
        return _checked(route, value.strip())
    if route.api_key_file:
        try:
            with open(route.api_key_file, "rb") as f:
                data = f.read(MAX_KEY_BYTES + 1)
            value = data.decode("utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyUnavailable(
                f"the API key file of inference route {route.name!r} cannot be read",
                f"cannot read the API key file {route.api_key_file}: {type(exc).__name__}",
            ) from None
        if not value or len(data) > MAX_KEY_BYTES:
            raise KeyUnavailable(f"the API key file of inference route {route.name!r} is empty or too large",
                                 f"the API key file {route.api_key_file} is empty or too large")
        return _checked(route, value)
    return None


def _checked(route: Route, value: str) -> ApiKey:
    # A key goes into a header: anything that could end the header line is refused.
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value) or not value.isascii():
        raise KeyUnavailable(
            f"the API key of inference route {route.name!r} is not a valid header value",
            "the API key contains whitespace, control or non-ASCII characters",
        )
    return ApiKey(value)


# -- the routes file (`stockade run --inference-routes FILE`) --------------------------------

_FILE_KEYS = ("routes",)
_ROUTE_KEYS = ("name", "protocol", "base_url", "model", "api_key_env", "api_key_file", "no_api_key", "default")
_OPENSHELL = {
    "endpoint": "use base_url",
    "protocols": "use protocol: openai or anthropic (one per route)",
    "api_key": "keys never go in the routes file: use api_key_env or api_key_file",
    "provider_type": "use protocol: openai or anthropic",
}


class RoutesFileError(RouteError):
    """Every problem of a routes file, each located (`file:line:col: error: ...`)."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        text = "\n".join(d.format() for d in self.diagnostics) or "invalid routes file"
        super().__init__(text)


def load_routes_file(path: str | os.PathLike[str]) -> list[Route]:
    """Routes from a YAML file; raises RoutesFileError listing every problem.

        routes:
          - name: local
            protocol: openai            # openai | anthropic
            base_url: http://localhost:11434/v1
            model: llama3.2             # optional
            no_api_key: true            # or api_key_env: VAR, or api_key_file: PATH
            default: true               # optional
    """
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RoutesFileError([Diagnostic("error", f"cannot read the routes file: {exc}", source, 0, 0)]) from None
    return parse_routes(text, source)


def parse_routes(text: str, source: str = "<string>") -> list[Route]:
    try:
        root = compose(text, source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        raise RoutesFileError([Diagnostic("error", f"invalid YAML: {getattr(exc, 'problem', exc)}",
                                          source, line, col)]) from None
    r = Reader(source)
    routes: list[Route] = []
    if root is None:
        r.error(None, "", "the routes file is empty", hint="list routes under `routes:`")
        raise RoutesFileError(r.diagnostics)
    top = r.mapping(root, "", _FILE_KEYS, what="a mapping with a `routes` list")
    items = r.sequence(top["routes"][1], "routes") if top and "routes" in top else None
    if top is not None and "routes" not in top:
        r.error(root, "", "missing key 'routes'")
    seen: dict[str, int] = {}
    defaults: dict[Protocol, str] = {}
    for i, node in enumerate(items or []):
        where = f"routes[{i}]"
        route = _read_route(r, node, where)
        if route is None:
            continue
        if route.name in seen:
            r.error(node, where, f"duplicate route name {route.name!r} (first given on line {seen[route.name]})")
            continue
        seen[route.name] = node.start_mark.line + 1
        if route.default:
            if route.protocol in defaults:
                r.error(node, where, f"two default {route.protocol.value} routes: "
                        f"{defaults[route.protocol]!r} and {route.name!r}")
                continue
            defaults[route.protocol] = route.name
        routes.append(route)
    if r.failed:
        raise RoutesFileError([d for d in r.diagnostics if d.is_error])
    return routes


def _read_route(r: Reader, node: yaml.Node, where: str) -> Route | None:
    errors_before = sum(d.is_error for d in r.diagnostics)
    entries = r.mapping(node, where, _ROUTE_KEYS, unsupported=_OPENSHELL)
    if entries is None:
        return None
    values: dict[str, object] = {}
    for key, (_k, value_node) in entries.items():
        path = f"{where}.{key}"
        if key in ("no_api_key", "default"):
            values[key] = r.boolean(value_node, path)
        elif key == "protocol":
            values[key] = r.choice(value_node, path, ("openai", "anthropic"), casefold=True)
        else:
            values[key] = r.string(value_node, path)
    for required in ("name", "protocol", "base_url"):
        if required not in entries:
            r.error(node, where, f"missing key '{required}'")
    if sum(d.is_error for d in r.diagnostics) > errors_before:
        return None
    try:
        return make_route(
            str(values["name"]), str(values["protocol"]), str(values["base_url"]),
            model=values.get("model"), api_key_env=values.get("api_key_env"),  # type: ignore[arg-type]
            api_key_file=values.get("api_key_file"), no_api_key=bool(values.get("no_api_key")),  # type: ignore[arg-type]
            default=bool(values.get("default")),
        )
    except RouteError as exc:
        r.error(node, where, exc.message, hint=exc.hint)
        return None

