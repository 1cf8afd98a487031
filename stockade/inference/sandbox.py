"""What the sandbox's environment must (and may) say about inference routes (sans-IO).

The user's environment is passed into the sandbox (stockade/isolation/environment.py), and a
route's key usually lives in exactly that environment (`--api-key-env ANTHROPIC_API_KEY`).
The supervisor must therefore replace every route key variable before the command starts,
or the agent holds the key the router exists to keep from it. The replacement is a
placeholder rather than nothing, so SDKs that refuse to start without a key still start; the
router strips whatever key the agent sends. Key files must likewise stay out of the sandbox's
view (mount plan / Landlock): `key_files` lists them.

Optionally the SDKs' base-URL variables point at inference.local, so agents use the routes
without being told (OpenAI and Anthropic SDKs, Claude Code and Codex read these).
"""

from __future__ import annotations

from collections.abc import Iterable

from .routes import Route
from .shapes import Protocol

PLACEHOLDER_KEY = "stockade-inference-placeholder"
BASE_URLS = {
    Protocol.OPENAI: ("OPENAI_BASE_URL", "https://inference.local/v1"),
    Protocol.ANTHROPIC: ("ANTHROPIC_BASE_URL", "https://inference.local"),
}


def key_variables(routes: Iterable[Route]) -> frozenset[str]:
    return frozenset(r.api_key_env for r in routes if r.api_key_env)


def key_files(routes: Iterable[Route]) -> tuple[str, ...]:
    return tuple(sorted({r.api_key_file for r in routes if r.api_key_file}))


def sandbox_variables(routes: Iterable[Route], *, base_urls: bool = False) -> dict[str, str]:
    """Variables to set in the sandbox's environment, over the user's: every route key
    variable becomes a placeholder; with `base_urls`, the protocols' base-URL variables."""
    routes = list(routes)
    env = {name: PLACEHOLDER_KEY for name in key_variables(routes)}
    if base_urls:
        for protocol in {r.protocol for r in routes}:
            name, url = BASE_URLS[protocol]
            env[name] = url
    return env
