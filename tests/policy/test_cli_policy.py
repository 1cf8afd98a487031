"""`stockade policy check|explain|default`, run as a user would (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from stockade.policy import load_policy_text, policy_sha256

from .policies import T0

STOCKADE = [sys.executable, "-m", "stockade"]

BAD = """\
version: 1
landlock:
  compatibility: hard_requirment
network_policies:
  api:
    endpoints:
      - { host: "*.com", port: 443, protocol: rest, enforcment: enforce, access: read-only }
    binaries: [{ path: /usr/bin/curl }]
"""


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STOCKADE, "policy", *args], capture_output=True, text=True,
                          input=stdin, timeout=60)


@pytest.fixture()
def files(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(T0)
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    return good, bad


def test_check_valid_file_prints_a_summary(files):
    good, _ = files
    out = run("check", str(good))
    assert out.returncode == 0, out.stderr
    sha = policy_sha256(load_policy_text(T0))
    assert out.stdout == f"ok  {good}  4 rules, 8 endpoints, sha256 {sha[:12]}\n"


def test_check_invalid_file_lists_every_error(files):
    good, bad = files
    out = run("check", str(good), str(bad))
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"ok  {good}")
    assert f"{bad}:3:18: error: landlock.compatibility: 'hard_requirment' is not a valid value " \
           "(did you mean 'hard_requirement'?)" in out.stdout
    assert f"{bad}:7:17: error: network_policies.api.endpoints[0].host: TLD wildcard '*.com'" \
        in out.stdout
    assert "unknown key 'enforcment' (did you mean 'enforcement'?)" in out.stdout
    assert f"{bad}:7:37: warning:" in out.stdout  # audit default, since enforcement was misspelt
    assert lines[-1] == f"invalid  {bad}  3 errors, 1 warning"
    assert "Traceback" not in out.stdout + out.stderr


def test_check_json(files):
    good, bad = files
    out = run("check", "--json", str(good), str(bad))
    assert out.returncode == 1
    data = json.loads(out.stdout)
    assert data["ok"] is False
    first, second = data["files"]
    assert first["ok"] and first["rules"] == 4 and len(first["sha256"]) == 64
    assert not second["ok"] and len(second["errors"]) == 3
    error = second["errors"][0]
    assert {"line", "column", "message", "path", "hint", "file", "severity"} <= set(error)
    assert error["line"] == 3 and error["column"] == 18


def test_check_reports_warnings_without_failing(tmp_path):
    path = tmp_path / "audit.yaml"
    path.write_text("version: 1\nnetwork_policies:\n  r:\n    endpoints: [{ host: a.example.com, "
                    "port: 443, protocol: rest, access: full }]\n    binaries: []\n")
    out = run("check", str(path))
    assert out.returncode == 0
    assert "warning: network_policies.r.endpoints[0]: no 'enforcement'" in out.stdout
    assert "never matches" in out.stdout and out.stdout.rstrip().endswith("2 warnings")


def test_check_missing_file_and_stdin(tmp_path):
    out = run("check", str(tmp_path / "nope.yaml"))
    assert out.returncode == 1 and "cannot read the policy" in out.stdout
    out = run("check", "-", stdin="version: 1\n")
    assert out.returncode == 0 and out.stdout.startswith("ok  <stdin>  0 rules")


def test_explain_allow_with_l7(files):
    good, _ = files
    out = run("explain", str(good), "--host", "GitHub.com", "--port", "443", "--binary",
              "/usr/bin/python3", "--ancestor", "/usr/bin/git", "--method", "DELETE", "--path",
              "/public/../org/repo")
    assert out.returncode == 0, out.stderr
    assert "decision:   ALLOW by rule 'github_ssh_over_https'" in out.stdout
    assert "ancestor '/usr/bin/git'" in out.stdout
    assert "request:    DELETE /org/repo" in out.stdout
    assert "l7:         DENY" in out.stdout
    assert "- allow: { method: DELETE, path: /org/repo }" in out.stdout


def test_explain_deny_json(files):
    good, _ = files
    out = run("explain", str(good), "--host", "api.anthropic.com", "--port", "443", "--binary",
              "/usr/bin/python3", "--json")
    assert out.returncode == 0
    data = json.loads(out.stdout)
    assert data["allowed"] is False and data["reason_code"] == "binary_not_allowed"
    assert "claude_code" in data["reason"] and "- { path: /usr/bin/python3 }" in data["hint"]
    assert data["endpoint"] is None and "request" not in data


def test_explain_without_binary_and_usage_errors(files):
    good, bad = files
    out = run("explain", str(good), "--host", "gitlab.com", "--port", "443")
    assert out.returncode == 0 and "identity unavailable" in out.stdout
    out = run("explain", str(good), "--host", "gitlab.com", "--port", "443", "--method", "GET")
    assert out.returncode == 2 and "--method and --path go together" in out.stderr
    out = run("explain", str(good), "--host", "gitlab.com", "--port", "70000")
    assert out.returncode == 2
    out = run("explain", str(bad), "--host", "gitlab.com", "--port", "443")
    assert out.returncode == 1 and "hard_requirment" in out.stdout


def test_default_prints_a_valid_policy(tmp_path):
    out = run("default")
    assert out.returncode == 0 and out.stdout.startswith("# stockade's built-in default policy")
    path = tmp_path / "default.yaml"
    path.write_text(out.stdout)
    assert run("check", str(path)).returncode == 0


def test_help_is_actionable():
    out = run("--help")
    assert out.returncode == 0
    for command in ("check", "explain", "default"):
        assert command in out.stdout
    assert "stockade policy default > policy.yaml" in out.stdout
    assert "readlink" in run("explain", "--help").stdout


def test_show_of_a_stopped_sandbox_reads_its_stored_revisions(tmp_path):
    from stockade.events.store import Store

    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"}
    shown = lambda *a: subprocess.run([*STOCKADE, "policy", "show", *a], capture_output=True,  # noqa: E731
                                      text=True, env=env, timeout=60)
    missing = shown("ghost")
    assert missing.returncode == 1 and missing.stderr.startswith("stockade: sandbox 'ghost' has no policy revision")
    (tmp_path / "state" / "stockade").mkdir(parents=True, exist_ok=True)
    with Store(tmp_path / "state" / "stockade" / "stockade.db") as store:
        store.add_revision("sb", yaml_text=T0, sha256=policy_sha256(load_policy_text(T0)), source="a.yaml")
        store.add_revision("sb", yaml_text="version: 1\n", sha256="f" * 64, source="rules approve 3")
    latest = shown("sb")
    assert latest.returncode == 0, latest.stderr
    head, rest = latest.stdout.split("\n", 2)[:2], latest.stdout.split("\n", 2)[2]
    assert head[0] == f"# sandbox sb, revision 2 (not live), sha256 {'f' * 64}"
    assert head[1].endswith(", from rules approve 3") and rest == "version: 1\n"
    first = shown("sb", "--revision", "1")
    assert first.stdout.split("\n", 2)[2] == T0 and load_policy_text(first.stdout)  # valid YAML as printed
    as_json = json.loads(shown("sb", "--revision", "1", "--json").stdout)
    assert (as_json["revision"], as_json["source"], as_json["live"]) == (1, "a.yaml", False)
    assert shown("sb", "--revision", "9").stderr.startswith("stockade: sandbox 'sb' has no revision 9")


def test_set_on_a_sandbox_that_is_not_running_is_one_line(tmp_path, files):
    good, _ = files
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([*STOCKADE, "policy", "set", "ghost", str(good)], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert out.stderr.startswith("stockade: sandbox 'ghost' is not running")
    waited = subprocess.run([*STOCKADE, "policy", "set", "ghost", str(good), "--wait", "--timeout", "0.3"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert waited.returncode == 1 and "(waited 0.3s)" in waited.stderr
