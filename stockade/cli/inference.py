"""`stockade inference set|list|remove`: the model backends `https://inference.local` routes to.

Thin: validate with stockade.inference.routes, store with the state store, print. Keys are
never stored or printed: a route names an environment variable (read by `stockade run` from
its own environment on each request) or a file.
"""

from __future__ import annotations

import json
import os
import sys

import click

from ..errors import EXIT_INVALID, StockadeError


@click.group("inference")
def inference() -> None:
    """Route https://inference.local inside sandboxes to your model backends.

    \b
    The agent calls https://inference.local/v1 with any API key; stockade replaces it with
    the route's key, which never enters the sandbox:
      stockade inference set --name ollama --protocol openai \\
          --base-url http://localhost:11434/v1 --model llama3.2 --no-api-key --default
      stockade inference set --name claude --protocol anthropic \\
          --base-url https://api.anthropic.com --api-key-env ANTHROPIC_API_KEY --default
      stockade inference list
    """


def _fail(exc: StockadeError) -> None:
    click.echo(f"error: {exc.message}", err=True)
    if exc.hint:
        click.echo(f"  hint: {exc.hint}", err=True)
    sys.exit(EXIT_INVALID)


@inference.command("set")
@click.option("--name", required=True, help="Route name (letters, digits, '.', '_', '-').")
@click.option("--protocol", required=True, type=click.Choice(["openai", "anthropic"]),
              help="The API the agent speaks: openai (/v1/chat/completions, ...) or anthropic (/v1/messages).")
@click.option("--base-url", required=True, help="Backend URL, e.g. https://api.openai.com/v1 or http://localhost:11434/v1.")
@click.option("--model", default=None, help="Use this route for this model, and send it as the model of every request.")
@click.option("--api-key-env", default=None, metavar="VAR", help="Environment variable holding the backend key.")
@click.option("--api-key-file", default=None, metavar="FILE", help="File holding the backend key.")
@click.option("--no-api-key", is_flag=True, help="The backend needs no key (a local server).")
@click.option("--default", "is_default", is_flag=True, help="The route of its protocol when no route names the model.")
def set_route(name: str, protocol: str, base_url: str, model: str | None, api_key_env: str | None,
              api_key_file: str | None, no_api_key: bool, is_default: bool) -> None:
    """Add or replace a route."""
    from ..events.store import Store
    from ..inference.routes import RouteError, make_route
    from ..inference.routestore import to_stored

    if api_key_file:
        api_key_file = os.path.abspath(os.path.expanduser(api_key_file))  # stockade run may start elsewhere
    try:
        route = make_route(name, protocol, base_url, model=model, api_key_env=api_key_env,
                           api_key_file=api_key_file, no_api_key=no_api_key, default=is_default)
        with Store.open_default() as store:
            store.put_route(to_stored(route))
    except (RouteError, StockadeError) as exc:
        _fail(exc)
        return
    click.echo(f"route {route.name}: {route.protocol.value} -> {route.base_url}"
               + (f" (model {route.model})" if route.model else "")
               + (" [default]" if route.default else ""))
    available = _key_available(route.api_key_env, route.api_key_file)
    if available is False:
        where = f"${route.api_key_env} is not set" if route.api_key_env else f"{route.api_key_file} is not readable"
        click.echo(f"warning: {where} here; `stockade run` reads it when a request is routed", err=True)


def _key_available(env: str | None, path: str | None) -> bool | None:
    """Whether the key source is usable right now (None: the route needs no key)."""
    if env:
        return bool(os.environ.get(env, "").strip())
    if path:
        return os.access(path, os.R_OK)
    return None


@inference.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def list_routes(as_json: bool) -> None:
    """Show the routes (never a key; whether each key is available here)."""
    from ..events.store import Store

    with Store.open_default() as store:
        rows = store.routes()
    items = [{
        "name": r.name, "protocol": r.protocol, "base_url": r.base_url, "model": r.model,
        "api_key_env": r.api_key_env, "api_key_file": r.api_key_file,
        "api_key_available": _key_available(r.api_key_env, r.api_key_file), "default": r.is_default,
    } for r in rows]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    if not items:
        click.echo("no inference routes; add one with `stockade inference set --help`")
        return
    from ..events.views import table

    click.echo(table(("NAME", "PROTOCOL", "BASE URL", "MODEL", "KEY", "DEFAULT"), [
        (item["name"], item["protocol"], item["base_url"], item["model"] or "-",
         _describe_key(item), "yes" if item["default"] else "") for item in items]))


def _describe_key(item: dict[str, object]) -> str:
    available = item["api_key_available"]
    if item["api_key_env"]:
        return f"env {item['api_key_env']} ({'set' if available else 'not set'})"
    if item["api_key_file"]:
        return f"file {item['api_key_file']} ({'readable' if available else 'unreadable'})"
    return "none"


@inference.command("remove")
@click.argument("name")
def remove_route(name: str) -> None:
    """Remove a route."""
    from ..events.store import Store

    with Store.open_default() as store:
        removed = store.delete_route(name)
    if not removed:
        _fail(StockadeError(f"no inference route named {name!r}", hint="see `stockade inference list`"))
    click.echo(f"removed route {name}")
