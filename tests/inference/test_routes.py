"""Routes: validation, selection, URL joining, keys, and the --inference-routes file."""

from __future__ import annotations

import textwrap

import pytest

from stockade.inference.routes import (
    ApiKey,
    KeyUnavailable,
    NoRoute,
    RouteError,
    RoutesFileError,
    join_url,
    load_routes_file,
    make_route,
    parse_routes,
    resolve_key,
    select_route,
)
from stockade.inference.shapes import Protocol

OPENAI, ANTHROPIC = Protocol.OPENAI, Protocol.ANTHROPIC


def route(name, protocol="openai", model=None, default=False, **kw):
    kw.setdefault("api_key_env", "KEY")
    return make_route(name, protocol, "http://localhost:11434/v1", model=model, default=default, **kw)


# -- selection -------------------------------------------------------------------------------

def test_selection_by_protocol():
    o, a = route("o"), route("a", "anthropic")
    assert select_route([o, a], OPENAI, None) is o
    assert select_route([o, a], ANTHROPIC, "claude-x") is a


def test_selection_by_model_then_default_then_only():
    small, big = route("small", model="llama3.2"), route("big", model="qwen3:32b", default=True)
    routes = [small, big]
    assert select_route(routes, OPENAI, "llama3.2") is small
    assert select_route(routes, OPENAI, "qwen3:32b") is big
    assert select_route(routes, OPENAI, "gpt-4o") is big  # nothing names it: the default
    assert select_route(routes, OPENAI, None) is big
    only = route("only", model="llama3.2")
    assert select_route([only], OPENAI, "gpt-4o") is only  # and its model is written in


def test_a_model_named_by_two_routes_prefers_the_default():
    a, b = route("a", model="m"), route("b", model="m", default=True)
    assert select_route([a, b], OPENAI, "m") is b


def test_no_route_for_the_protocol_is_explained():
    result = select_route([route("o")], ANTHROPIC, "claude")
    assert isinstance(result, NoRoute)
    assert "no anthropic inference route" in result.message and "openai" in result.message
    assert isinstance(select_route([], OPENAI, None), NoRoute)


def test_several_routes_without_a_default_is_ambiguous_not_a_guess():
    result = select_route([route("a"), route("b")], OPENAI, "x")
    assert isinstance(result, NoRoute) and "a, b" in result.message and "--default" in result.message


def test_another_protocols_route_is_never_used():
    assert isinstance(select_route([route("a", "anthropic", default=True)], OPENAI, None), NoRoute)


# -- URL joining (network.md §9 case 90) -----------------------------------------------------

@pytest.mark.parametrize("base,path,query,expected", [
    ("https://api.openai.com/v1", "/v1/chat/completions", "", "https://api.openai.com/v1/chat/completions"),
    ("https://api.openai.com/v1/", "/v1/chat/completions", "", "https://api.openai.com/v1/chat/completions"),
    ("https://api.anthropic.com", "/v1/messages", "beta=true", "https://api.anthropic.com/v1/messages?beta=true"),
    ("https://host/openai/v1", "/v1/models/a/b", "", "https://host/openai/v1/models/a/b"),
    ("https://host/v1", "/v1", "", "https://host/v1"),
    ("http://localhost:11434", "/v1/embeddings", "", "http://localhost:11434/v1/embeddings"),
    ("http://h/api/v10", "/v1/x", "", "http://h/api/v10/v1/x"),  # only an exact /v1 segment
])
def test_join_url(base, path, query, expected):
    assert join_url(base, path, query) == expected


# -- validation ------------------------------------------------------------------------------

@pytest.mark.parametrize("url,fragment", [
    ("ftp://h/v1", "must start with http"),
    ("localhost:11434", "must start with http"),
    ("http:///v1", "no host"),
    ("https://user:sk-secret@h/v1", "carries credentials"),
    ("https://h/v1?key=1", "query or fragment"),
    ("https://h:99999/v1", "invalid base URL"),
    ("https://h/v 1", "whitespace"),
])
def test_bad_base_urls(url, fragment):
    with pytest.raises(RouteError) as info:
        make_route("r", "openai", url, api_key_env="K")
    assert fragment in str(info.value)
    assert "sk-secret" not in str(info.value)


def test_local_and_private_backends_are_accepted():
    for url in ("http://localhost:11434/v1", "http://127.0.0.1:8000", "http://192.168.1.20:8000/v1",
                "http://[::1]:8000", "https://vllm.lan/v1"):
        make_route("r", "openai", url, no_api_key=True)


def test_key_sources():
    with pytest.raises(RouteError, match="no API key source"):
        make_route("r", "openai", "http://h")
    with pytest.raises(RouteError, match="only one"):
        make_route("r", "openai", "http://h", api_key_env="A", api_key_file="/k")
    with pytest.raises(RouteError) as info:
        make_route("r", "openai", "http://h", api_key_env="sk-proj-abc123")
    assert "name" in info.value.hint and "sk-proj-abc123" not in str(info.value)  # maybe a key: not echoed
    with pytest.raises(RouteError, match="invalid protocol"):
        make_route("r", "gemini", "http://h", no_api_key=True)
    with pytest.raises(RouteError, match="invalid route name"):
        make_route("-x", "openai", "http://h", no_api_key=True)


def test_backend_host():
    assert make_route("r", "openai", "https://api.openai.com/v1", no_api_key=True).backend_host == "api.openai.com:443"
    assert make_route("r", "openai", "http://[::1]:8000", no_api_key=True).backend_host == "[::1]:8000"


# -- keys ------------------------------------------------------------------------------------

def test_env_key_is_read_at_request_time_and_redacted_in_reprs(tmp_path):
    r = route("o", api_key_env="ROUTE_KEY")
    env = {"ROUTE_KEY": "sk-live-123"}
    key = resolve_key(r, env)
    assert isinstance(key, ApiKey) and key.reveal() == "sk-live-123"
    assert "sk-live" not in repr(key) and "sk-live" not in str(key) and "sk-live" not in repr(r)
    env["ROUTE_KEY"] = "sk-rotated"
    assert resolve_key(r, env).reveal() == "sk-rotated"


def test_missing_keys_name_the_variable_but_never_a_value(tmp_path):
    r = route("o", api_key_env="ROUTE_KEY")
    for env in ({}, {"ROUTE_KEY": "  "}):
        with pytest.raises(KeyUnavailable) as info:
            resolve_key(r, env)
        assert "ROUTE_KEY" in info.value.public
    with pytest.raises(KeyUnavailable) as info:
        resolve_key(r, {"ROUTE_KEY": "sk-a\r\nx-injected: 1"})
    assert "not a valid header value" in info.value.public and "sk-a" not in str(info.value)


def test_file_keys(tmp_path):
    path = tmp_path / "key"
    path.write_text("sk-from-file\n")
    r = make_route("f", "anthropic", "https://api.anthropic.com", api_key_file=str(path))
    assert resolve_key(r).reveal() == "sk-from-file"
    path.unlink()
    with pytest.raises(KeyUnavailable) as info:
        resolve_key(r)
    assert str(path) not in info.value.public and str(path) in info.value.detail


def test_keyless_route():
    assert resolve_key(make_route("ollama", "openai", "http://localhost:11434/v1", no_api_key=True)) is None


# -- the routes file -------------------------------------------------------------------------

def write(tmp_path, text):
    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_routes_file_loads(tmp_path):
    path = write(tmp_path, """\
        routes:
          - name: ollama
            protocol: openai
            base_url: http://localhost:11434/v1
            model: llama3.2
            no_api_key: true
            default: true
          - name: claude
            protocol: Anthropic
            base_url: https://api.anthropic.com
            api_key_env: ANTHROPIC_API_KEY
    """)
    ollama, claude = load_routes_file(path)
    assert (ollama.name, ollama.protocol, ollama.model, ollama.default, ollama.needs_key) == \
        ("ollama", OPENAI, "llama3.2", True, False)
    assert (claude.protocol, claude.api_key_env, claude.default) == (ANTHROPIC, "ANTHROPIC_API_KEY", False)


def test_routes_file_reports_every_problem_with_its_line(tmp_path):
    path = write(tmp_path, """\
        routes:
          - name: a
            protocol: openai
            base_url: http://localhost:11434/v1
            api_key_env: K
            modle: llama3
          - name: b
            protocol: opnai
            base_url: http://h
            no_api_key: true
          - name: c
            protocol: openai
            base_url: http://h
          - name: d
            protocol: openai
            endpoint: http://h
            api_key: sk-inline
    """)
    with pytest.raises(RoutesFileError) as info:
        load_routes_file(path)
    text = str(info.value)
    assert f"{path}:6:5: error: routes[0]: unknown key 'modle' (did you mean 'model'?)" in text
    assert f"{path}:8:15: error: routes[1].protocol: 'opnai' is not a valid value (did you mean 'openai'?)" in text
    assert f"{path}:11:5: error: routes[2]: route 'c': no API key source" in text
    assert "key 'endpoint' is not supported by stockade: use base_url" in text
    assert "keys never go in the routes file" in text
    assert "sk-inline" not in text


def test_routes_file_duplicates_and_defaults(tmp_path):
    path = write(tmp_path, """\
        routes:
          - {name: a, protocol: openai, base_url: "http://h", no_api_key: true, default: true}
          - {name: a, protocol: openai, base_url: "http://h", no_api_key: true}
          - {name: b, protocol: openai, base_url: "http://h", no_api_key: true, default: true}
          - {name: c, protocol: anthropic, base_url: "http://h", no_api_key: true, default: true}
    """)
    with pytest.raises(RoutesFileError) as info:
        load_routes_file(path)
    text = str(info.value)
    assert "duplicate route name 'a' (first given on line 2)" in text
    assert "two default openai routes: 'a' and 'b'" in text
    assert "anthropic" not in text  # one default per protocol is fine


@pytest.mark.parametrize("text,fragment", [
    ("", "the routes file is empty"),
    ("routes: [\n", "invalid YAML"),
    ("- a\n", "expected a mapping with a `routes` list"),
    ("routes: {}\n", "expected a list"),
    ("other: 1\n", "unknown key 'other'"),
    ("routes:\n  - {name: a, protocol: openai, base_url: 'http://h', no_api_key: yes}\n", "expected true or false"),
])
def test_routes_file_shape_errors(tmp_path, text, fragment):
    with pytest.raises(RoutesFileError, match=fragment):
        parse_routes(text, "r.yaml")


def test_missing_routes_file(tmp_path):
    with pytest.raises(RoutesFileError, match="cannot read the routes file"):
        load_routes_file(tmp_path / "nope.yaml")


def test_an_empty_routes_list_is_valid():
    assert parse_routes("routes: []\n") == []


# -- the sandbox's environment ---------------------------------------------------------------

def test_route_keys_are_replaced_in_the_sandbox_environment(tmp_path):
    from stockade.inference.sandbox import PLACEHOLDER_KEY, key_files, sandbox_variables

    routes = [route("o", api_key_env="OPENAI_API_KEY"), route("l", no_api_key=True, api_key_env=None),
              make_route("a", "anthropic", "https://api.anthropic.com", api_key_file=str(tmp_path / "k"))]
    assert sandbox_variables(routes) == {"OPENAI_API_KEY": PLACEHOLDER_KEY}
    assert sandbox_variables(routes, base_urls=True) == {
        "OPENAI_API_KEY": PLACEHOLDER_KEY, "OPENAI_BASE_URL": "https://inference.local/v1",
        "ANTHROPIC_BASE_URL": "https://inference.local"}
    assert key_files(routes) == (str(tmp_path / "k"),)
