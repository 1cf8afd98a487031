"""Secrets stay out of the sandbox: environment overrides (secret and route key placeholders)
and the inference key files the view covers (the landlock-only mode, which cannot cover one,
refuses to start when the policy grants a key file)."""

from __future__ import annotations

import os

import pytest

from stockade.errors import StockadeError
from stockade.isolation.environment import EnvironmentInputs, build_environment
from stockade.isolation.prepare import Request, prepare
from stockade.policy.loader import load_policy_text

POLICY = load_policy_text("version: 1\nfilesystem_policy: {read_only: [/usr]}\n")
ENV = {"API_TOKEN": "tok-real-value", "PATH": "/usr/bin"}


def test_overrides_replace_user_variables_but_never_stockades_own():
    env = build_environment({"API_TOKEN": "real", "HTTPS_PROXY": "x"}, EnvironmentInputs(
        "sb", "http://127.0.0.1:3128", overrides=(("API_TOKEN", "stockade-ph-API_TOKEN-0"), ("HTTPS_PROXY", "y"))))
    assert env["API_TOKEN"] == "stockade-ph-API_TOKEN-0"
    assert env["HTTPS_PROXY"] == "http://127.0.0.1:3128"


def test_the_spec_carries_the_overrides_and_the_files_to_hide(tmp_path):
    keyfile = tmp_path / "key"
    keyfile.write_text("k")
    spec = prepare(Request(argv=("true",), policy=POLICY, name="sb", workdir=str(tmp_path),
                           env_overrides=(("API_TOKEN", "ph"),), hidden_files=(str(keyfile),)),
                   state_dir=str(tmp_path / "state"), env=ENV).spec
    assert spec.env["API_TOKEN"] == "ph" and spec.hidden_files == (os.path.realpath(keyfile),)


def test_landlock_mode_refuses_a_readable_key_file(tmp_path):
    keyfile = tmp_path / "key"
    keyfile.write_text("k")
    policy = load_policy_text(f"version: 1\nfilesystem_policy: {{read_only: [{tmp_path}]}}\n")
    with pytest.raises(StockadeError) as exc:  # best_effort too: not a NOT ENFORCED line
        prepare(Request(argv=("true",), policy=policy, name="sb", isolation="landlock",
                        tls_dir=str(tmp_path / "tls"), hidden_files=(str(keyfile),)),
                state_dir="/nonexistent-state", env=ENV)
    assert str(keyfile) in exc.value.message and "--api-key-env" in (exc.value.hint or "")
    assert exc.value.exit_code == 125


def test_landlock_mode_accepts_a_key_file_outside_the_policy(tmp_path):
    (tmp_path / "granted").mkdir()
    keyfile = tmp_path / "key"
    keyfile.write_text("k")
    policy = load_policy_text(f"version: 1\nfilesystem_policy: {{read_only: [{tmp_path}/granted]}}\n")
    prepared = prepare(Request(argv=("true",), policy=policy, name="sb", isolation="landlock",
                               tls_dir=str(tmp_path / "tls"), hidden_files=(str(keyfile),)),
                       state_dir="/nonexistent-state", env=ENV)
    assert not any("key file" in gap for gap in prepared.not_enforced)
