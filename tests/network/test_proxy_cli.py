"""`stockade proxy` argument and policy errors (no network needed)."""

from __future__ import annotations

import subprocess

from tests.conftest import STOCKADE


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*STOCKADE, "proxy", *args], capture_output=True, text=True, timeout=30)


def test_invalid_policy_is_reported_with_its_location(tmp_path):
    policy = tmp_path / "bad.yaml"
    policy.write_text("version: 1\nnetwork_policies:\n  r:\n    endpoints:\n      - { host: '*', port: 443 }\n")
    result = run("--policy", str(policy), "--listen", "127.0.0.1:0")
    assert result.returncode == 1
    assert "bad.yaml:5" in result.stderr and "Traceback" not in result.stderr


def test_missing_policy_and_bad_listen(tmp_path):
    result = run("--policy", str(tmp_path / "nope.yaml"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    policy = tmp_path / "ok.yaml"
    policy.write_text("version: 1\nnetwork_policies: {}\n")
    result = run("--policy", str(policy), "--listen", "nonsense")
    assert result.returncode == 2 and "HOST:PORT" in result.stderr
    result = run("--policy", str(policy), "--listen", "192.0.2.1:3128")  # not a local address
    assert result.returncode == 1 and "cannot listen" in result.stderr


def test_help_mentions_identity():
    result = run("--help")
    assert result.returncode == 0 and "binary identity unavailable" in result.stdout
