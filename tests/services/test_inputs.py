"""What `stockade run` decides for the services before the sandbox starts: every bad option
fails first (exit 125), and the sandbox's environment and view lose every secret."""

from __future__ import annotations

import pytest
import trustme

from stockade.errors import EXIT_STOCKADE_FAILURE, StockadeError
from stockade.events.store import Route as StoredRoute
from stockade.events.store import Store
from stockade.inference.sandbox import PLACEHOLDER_KEY
from stockade.policy.loader import load_policy_text
from stockade.services.inputs import (
    PROPOSAL_FLUSH_ENV,
    ServiceOptions,
    key_environment,
    prepare_inputs,
    proposal_flush_s,
)

POLICY = load_policy_text("""\
version: 1
filesystem_policy: {read_only: [/usr]}
network_policies:
  api:
    endpoints: [{host: api.example.com, port: 443}]
    binaries: [{path: /usr/bin/curl}]
""")
ENV = {"API_TOKEN": "tok-real-value", "OPENAI_KEY": "sk-route", "PATH": "/usr/bin"}


@pytest.fixture(autouse=True)
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path


def inputs(**options):
    return prepare_inputs(ServiceOptions(**options), POLICY, None, ENV)


def test_nothing_asked_nothing_changed():
    got = inputs()
    assert (got.secrets, got.routes, got.env_overrides, got.hidden_files) == (None, None, (), ())


def test_secrets_become_placeholders_bound_to_the_policy_hosts():
    got = inputs(secrets=("API_TOKEN",))
    [(name, placeholder)] = got.env_overrides
    assert name == "API_TOKEN" and placeholder.startswith("stockade-ph-API_TOKEN-")
    assert "tok-real-value" not in repr(got.env_overrides)
    assert got.secrets.bound_hosts("API_TOKEN") == ("api.example.com",)


@pytest.mark.parametrize("spec, message", [
    ("MISSING", "MISSING is not set"),
    ("API_TOKEN=", "the host list is empty"),
    ("1BAD", "KEY must be an environment variable name"),
])
def test_bad_secrets_fail_before_the_sandbox(spec, message):
    with pytest.raises(StockadeError, match=message) as info:
        inputs(secrets=(spec,))
    assert info.value.exit_code == EXIT_STOCKADE_FAILURE


def test_route_keys_from_a_routes_file_are_replaced_and_key_files_hidden(tmp_path):
    keyfile = tmp_path / "anthropic.key"
    keyfile.write_text("sk-ant\n")
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n"
                      "  - {name: o, protocol: openai, base_url: 'http://llm.lan:8000/v1', api_key_env: OPENAI_KEY}\n"
                      f"  - {{name: a, protocol: anthropic, base_url: 'https://api.anthropic.com', api_key_file: '{keyfile}'}}\n")
    got = inputs(inference_routes=str(routes))
    assert [r.name for r in got.routes] == ["o", "a"]
    overrides = dict(got.env_overrides)
    assert overrides["OPENAI_KEY"] == PLACEHOLDER_KEY
    assert overrides["OPENAI_BASE_URL"] == "https://inference.local/v1"
    assert overrides["ANTHROPIC_BASE_URL"] == "https://inference.local"
    assert got.hidden_files == (str(keyfile),)


def test_a_bad_routes_file_is_exit_125_with_every_error_located(tmp_path):
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - {name: o, protocol: gopher, base_url: 'ftp://x'}\n")
    with pytest.raises(StockadeError) as info:
        inputs(inference_routes=str(routes))
    assert info.value.exit_code == EXIT_STOCKADE_FAILURE
    assert str(info.value).startswith("--inference-routes: ") and f"{routes}:2:" in str(info.value)


def test_stored_routes_are_hidden_too(tmp_path):
    from stockade.state import db_path

    with Store(db_path()) as store:
        store.put_route(StoredRoute("o", "openai", "http://llm.lan:8000/v1", api_key_env="OPENAI_KEY"))
        store.put_route(StoredRoute("a", "anthropic", "https://api.anthropic.com",
                                    api_key_file=str(tmp_path / "k")))
    got = inputs()
    assert got.routes is None  # the router keeps reading the store
    assert dict(got.env_overrides)["OPENAI_KEY"] == PLACEHOLDER_KEY
    assert got.hidden_files == (str(tmp_path / "k"),)


def test_stored_routes_are_found_under_a_state_path_with_uri_characters(tmp_path, monkeypatch):
    """The store is read through an SQLite URI: '?', '#' and '%' in the path must not cut it
    (a missed store would let a stored route's key into the sandbox's environment)."""
    from stockade.state import db_path

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "odd?dir#x%41"))
    with Store(db_path()) as store:
        store.put_route(StoredRoute("o", "openai", "http://llm.lan:8000/v1", api_key_env="OPENAI_KEY"))
    assert dict(inputs().env_overrides)["OPENAI_KEY"] == PLACEHOLDER_KEY


def test_upstream_ca_and_log_file_are_checked(tmp_path):
    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    log = tmp_path / "events.jsonl"
    got = inputs(upstream_ca=str(ca), log_file=str(log))
    assert got.upstream_ca == str(ca) and log.exists() and (log.stat().st_mode & 0o777) == 0o600
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    for bad, message in ((tmp_path / "none.pem", "No such file"), (tmp_path / "junk.pem", "not a PEM CA bundle")):
        with pytest.raises(StockadeError, match=message):
            inputs(upstream_ca=str(bad))
    with pytest.raises(StockadeError, match="--log-file"):
        inputs(log_file=str(tmp_path))  # a directory


def test_the_router_never_reads_a_key_the_sandbox_holds():
    sandbox_env = {"PATH": "/usr/bin", "OPENAI_KEY": PLACEHOLDER_KEY, "LEAKED": "same"}
    usable = key_environment({"PATH": "/usr/bin", "OPENAI_KEY": "sk-route", "LEAKED": "same", "OTHER": "x"},
                             sandbox_env)
    assert usable == {"OPENAI_KEY": "sk-route", "OTHER": "x"}


def test_proposal_flush_interval_from_the_environment():
    assert proposal_flush_s({}) == 10.0
    assert proposal_flush_s({PROPOSAL_FLUSH_ENV: "0.5"}) == 0.5
    assert proposal_flush_s({PROPOSAL_FLUSH_ENV: "soon"}) == 10.0
    assert proposal_flush_s({PROPOSAL_FLUSH_ENV: "-1"}) == 10.0


def test_with_a_routes_file_the_stored_keys_stay_out_too(tmp_path):
    from stockade.state import db_path

    with Store(db_path()) as store:
        store.put_route(StoredRoute("a", "anthropic", "https://api.anthropic.com", api_key_env="API_TOKEN"))
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - {name: o, protocol: openai, base_url: 'http://llm.lan/v1', "
                      "api_key_env: OPENAI_KEY}\n")
    overrides = dict(inputs(inference_routes=str(routes)).env_overrides)
    assert overrides["OPENAI_KEY"] == overrides["API_TOKEN"] == PLACEHOLDER_KEY
    assert "ANTHROPIC_BASE_URL" not in overrides  # the router serves the file's routes only
