"""A running sandbox's router uses only the key files hidden from it when it started: a route
added later (`stockade inference set --api-key-file F`, read live from the store) whose file
was not hidden is refused in the protocol's error shape and recorded, never used; routes
keyed by an environment variable apply at once."""

from __future__ import annotations

import json
import os
import time

from stockade.events.store import Route as StoredRoute
from stockade.events.store import Store
from stockade.events.types import InferenceEvent
from stockade.inference import InferenceRouter, StoreRoutes
from stockade.inference.routes import make_route

from .conftest import OPENAI_KEY

CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
JSON = [("Content-Type", "application/json")]


def put(db, name: str, url: str, **kw) -> None:
    with Store(db) as store:
        store.put_route(StoredRoute(name, "openai", url, "llama3.2", is_default=True, **kw))


def test_a_key_file_added_after_the_start_is_refused(openai_backend, serve, tmp_path):
    known, later = tmp_path / "known.key", tmp_path / "later.key"
    for key in (known, later):
        key.write_text(OPENAI_KEY + "\n")
    db = tmp_path / "stockade.db"
    url = openai_backend.url + "/v1"
    put(db, "local", url, api_key_file=str(known))
    server = serve(StoreRoutes(db, ttl=0.1))
    server.router.key_files = frozenset({os.path.realpath(known)})  # what the sandbox hid
    conn = server.raw()
    assert conn.request("POST", "/v1/chat/completions", CHAT, JSON).status == 200

    put(db, "local", url, api_key_file=str(later))  # `stockade inference set` while it runs
    time.sleep(0.2)
    refused = conn.request("POST", "/v1/chat/completions", CHAT, JSON)
    assert refused.status == 503 and refused.header("connection") is None  # an inference answer
    error = json.loads(refused.body)["error"]  # OpenAI's error shape
    assert error["code"] == "api_key_unavailable" and "--api-key-env" in error["message"]
    assert str(later) not in refused.body.decode()  # the agent is not told where the key is
    assert len(openai_backend.received) == 1  # never forwarded
    _, event = [e for e in server.events(2) if isinstance(e, InferenceEvent)]
    assert (event.route, event.status) == ("local", 503)
    assert str(later) in event.error and "not hidden" in event.error

    put(db, "local", url, api_key_env="OPENAI_ROUTE_KEY")  # a key variable: fine at once
    time.sleep(0.2)
    assert conn.request("POST", "/v1/chat/completions", CHAT, JSON).status == 200
    assert len(openai_backend.received) == 2


def test_a_known_key_file_is_recognised_by_its_real_path(tmp_path):
    key = tmp_path / "real.key"
    key.write_text("k")
    (tmp_path / "link.key").symlink_to(key)
    router = InferenceRouter([], key_files=[os.path.realpath(key)])
    assert router.key_file_known(make_route("a", "openai", "http://h/v1", api_key_file=str(tmp_path / "link.key")))
    assert not router.key_file_known(make_route("b", "openai", "http://h/v1", api_key_file=str(tmp_path / "x")))
    assert router.key_file_known(make_route("c", "openai", "http://h/v1", api_key_env="K"))
    # No sandbox beside the router (`stockade proxy`, tests): any file.
    assert InferenceRouter([]).key_file_known(make_route("d", "openai", "http://h/v1", api_key_file="/x"))
