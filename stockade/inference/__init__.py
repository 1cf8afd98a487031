"""Inference routing: `https://inference.local` inside the sandbox, the user's model backends outside.

The proxy hands each intercepted inference.local connection (TLS already terminated) to
`InferenceRouter.handle_channel` (its inference hook); routes come from `stockade inference set`
(the state store, `StoreRoutes`) or a `--inference-routes` YAML file (`load_routes_file`), and
`sandbox_variables` / `key_files` say what the sandbox must not see.

Names are imported on first use, so `stockade inference list` does not load httpx.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "InferenceRouter": "router", "RouterConfig": "router",
    "Route": "routes", "RouteError": "routes", "RoutesFileError": "routes",
    "load_routes_file": "routes", "make_route": "routes", "parse_routes": "routes",
    "StoreRoutes": "routestore",
    "sandbox_variables": "sandbox", "key_files": "sandbox", "key_variables": "sandbox",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
