"""Fixtures: fake backends (real servers) and a router served on a TLS listener."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from stockade.inference.routes import make_route

from .backends import FakeBackend
from .harness import RouterServer

OPENAI_KEY = "sk-route-openai-0123456789"
ANTHROPIC_KEY = "sk-ant-route-0123456789"
ENV = {"OPENAI_ROUTE_KEY": OPENAI_KEY, "ANTHROPIC_ROUTE_KEY": ANTHROPIC_KEY}


@pytest.fixture
def openai_backend() -> Iterator[FakeBackend]:
    with FakeBackend("openai", expected_key=OPENAI_KEY) as backend:
        yield backend


@pytest.fixture
def anthropic_backend() -> Iterator[FakeBackend]:
    with FakeBackend("anthropic", expected_key=ANTHROPIC_KEY) as backend:
        yield backend


@pytest.fixture(params=["direct", "proxy"])
def serve(request) -> Iterator[Callable[..., RouterServer]]:
    """serve(routes, **kwargs) -> a started RouterServer (environ defaults to ENV). Every test
    runs twice: against the router's own listener, and through the real proxy's hook."""
    servers: list[RouterServer] = []

    def start(routes, **kwargs) -> RouterServer:
        kwargs.setdefault("environ", dict(ENV))
        kwargs.setdefault("mode", request.param)
        server = RouterServer(routes, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def openai_route(backend: FakeBackend, name: str = "openai", **kw):
    kw.setdefault("api_key_env", "OPENAI_ROUTE_KEY")
    return make_route(name, "openai", backend.url + "/v1", **kw)


def anthropic_route(backend: FakeBackend, name: str = "anthropic", **kw):
    kw.setdefault("api_key_env", "ANTHROPIC_ROUTE_KEY")
    return make_route(name, "anthropic", backend.url, **kw)


@pytest.fixture
def both(openai_backend, anthropic_backend, serve) -> RouterServer:
    """A router with one openai route (model rewrite to llama3.2) and one anthropic route."""
    return serve([openai_route(openai_backend, model="llama3.2"), anthropic_route(anthropic_backend)])
