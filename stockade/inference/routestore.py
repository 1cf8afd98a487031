"""Routes kept in the state store (`stockade inference set|list|remove`), as the router reads them.

The store's table and CRUD live in stockade/events/store.py; this module converts its rows
to validated `Route`s and gives the router a cheap source: `StoreRoutes()` re-reads the table
at most every `ttl` seconds, so `stockade inference set` applies to running sandboxes within
that delay and the proxy's event loop does not touch SQLite on every request.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from ..events.store import Route as StoredRoute
from ..events.store import Store
from .routes import Route, RouteError, make_route


def from_stored(row: StoredRoute) -> Route:
    return make_route(row.name, row.protocol, row.base_url, model=row.model,
                      api_key_env=row.api_key_env, api_key_file=row.api_key_file,
                      no_api_key=not (row.api_key_env or row.api_key_file), default=row.is_default)


def to_stored(route: Route) -> StoredRoute:
    return StoredRoute(route.name, route.protocol.value, route.base_url, route.model,
                       route.api_key_env, route.api_key_file, route.default)


def read_routes(store: Store) -> list[Route]:
    """Every stored route that is still valid (an invalid row is skipped, not fatal)."""
    out: list[Route] = []
    for row in store.routes():
        try:
            out.append(from_stored(row))
        except RouteError:
            continue
    return out


class StoreRoutes:
    """A route source for InferenceRouter: `routes()` returns the stored routes, cached."""

    def __init__(self, db_path: str | os.PathLike[str] | None = None, *, ttl: float = 2.0) -> None:
        from ..state import db_path as default_db_path

        self._path = db_path if db_path is not None else default_db_path()
        self._ttl = ttl
        self._routes: Sequence[Route] = ()
        self._read_at = float("-inf")

    def __call__(self) -> Sequence[Route]:
        now = time.monotonic()
        if now - self._read_at >= self._ttl:
            try:
                with Store(self._path) as store:
                    self._routes = read_routes(store)
            except Exception:  # noqa: BLE001 - keep the last good routes if the store is busy or gone
                pass
            self._read_at = now
        return self._routes
