"""`stockade inference set|list|remove`, run as a real subprocess with a private state directory."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from stockade.events.store import Store
from tests.conftest import STOCKADE


@pytest.fixture
def cli(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")

    def run(*args, check=True, extra_env=None):
        result = subprocess.run([*STOCKADE, "inference", *args], capture_output=True, text=True,
                                env={**env, **(extra_env or {})}, timeout=60)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    run.db = tmp_path / "state" / "stockade" / "stockade.db"
    return run


def test_set_list_remove(cli, tmp_path):
    keyfile = tmp_path / "anthropic.key"
    keyfile.write_text("sk-ant-file-secret\n")
    out = cli("set", "--name", "ollama", "--protocol", "openai", "--base-url", "http://localhost:11434/v1/",
              "--model", "llama3.2", "--no-api-key", "--default")
    assert out.stdout.strip() == "route ollama: openai -> http://localhost:11434/v1 (model llama3.2) [default]"
    out = cli("set", "--name", "gpt", "--protocol", "openai", "--base-url", "https://api.openai.com/v1",
              "--api-key-env", "OPENAI_API_KEY")
    assert "warning: $OPENAI_API_KEY is not set here" in out.stderr
    cli("set", "--name", "claude", "--protocol", "anthropic", "--base-url", "https://api.anthropic.com",
        "--api-key-file", str(keyfile))

    listed = cli("list", extra_env={"OPENAI_API_KEY": "sk-env-secret"}).stdout
    lines = listed.splitlines()
    assert lines[0].split() == ["NAME", "PROTOCOL", "BASE", "URL", "MODEL", "KEY", "DEFAULT"]
    assert lines[1].split() == ["claude", "anthropic", "https://api.anthropic.com", "-", "file", str(keyfile), "(readable)"]
    assert lines[2].split() == ["gpt", "openai", "https://api.openai.com/v1", "-", "env", "OPENAI_API_KEY", "(set)"]
    assert lines[3].split() == ["ollama", "openai", "http://localhost:11434/v1", "llama3.2", "none", "yes"]
    assert "(not set)" in cli("list").stdout

    data = json.loads(cli("list", "--json", extra_env={"OPENAI_API_KEY": "sk-env-secret"}).stdout)
    assert [(d["name"], d["api_key_available"], d["default"]) for d in data] == \
        [("claude", True, False), ("gpt", True, False), ("ollama", None, True)]
    for text in (listed, json.dumps(data)):
        assert "sk-env-secret" not in text and "sk-ant-file-secret" not in text

    assert cli("remove", "gpt").stdout.strip() == "removed route gpt"
    missing = cli("remove", "gpt", check=False)
    assert missing.returncode == 1 and "no inference route named 'gpt'" in missing.stderr
    with Store(cli.db) as store:
        assert [r.name for r in store.routes()] == ["claude", "ollama"]


def test_set_replaces_a_route_by_name(cli):
    cli("set", "--name", "r", "--protocol", "openai", "--base-url", "http://a", "--no-api-key")
    cli("set", "--name", "r", "--protocol", "openai", "--base-url", "http://b", "--no-api-key")
    assert [d["base_url"] for d in json.loads(cli("list", "--json").stdout)] == ["http://b"]


@pytest.mark.parametrize("args,message", [
    (["--base-url", "localhost:11434", "--no-api-key"], "must start with http:// or https://"),
    (["--base-url", "http://h"], "no API key source"),
    (["--base-url", "http://h", "--api-key-env", "sk-live-123"], "invalid environment variable name"),
    (["--base-url", "https://u:p@h/v1", "--no-api-key"], "carries credentials"),
])
def test_set_refuses_bad_routes_with_a_hint(cli, args, message):
    result = cli("set", "--name", "r", "--protocol", "openai", *args, check=False)
    assert result.returncode == 1 and message in result.stderr
    assert "u:p@" not in result.stderr and "sk-live-123" not in result.stderr
    assert json.loads(cli("list", "--json").stdout) == []


def test_an_empty_list_says_how_to_add_a_route(cli):
    assert "stockade inference set --help" in cli("list").stdout


def test_the_command_is_registered():
    from stockade.cli import COMMANDS

    assert COMMANDS["inference"] == "stockade.cli.inference:inference"
