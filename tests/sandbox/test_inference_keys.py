"""Inference key files in `--isolation landlock`, which has no mount namespace to cover them:
a key file the policy grants is refused before anything starts (exit 125, in every
compatibility mode); a key file outside the policy's paths is fine (Landlock keeps it out)."""

from __future__ import annotations

import json

import pytest

from tests.sandbox.conftest import SANDBOX_PYTHON

pytestmark = pytest.mark.sandbox

POLICY = ("version: 1\nfilesystem_policy:\n  include_workdir: true\n"
          "  read_only: [/usr, /bin, /lib, /lib64, /etc]\n  read_write: [/dev/null]\n{landlock}")
PROBE = r'''
import errno, json, sys
try:
    open(sys.argv[1]).read(); print(json.dumps("read"))
except OSError as e:
    print(json.dumps(errno.errorcode[e.errno]))
'''


def routes_with_key(sandbox, key) -> str:
    return str(sandbox.write("routes.yaml", (
        "routes:\n  - {name: local, protocol: openai, base_url: 'http://127.0.0.1:9/v1', "
        f"api_key_file: '{key}', default: true}}\n")))


@pytest.mark.parametrize("landlock", ["", "landlock: {compatibility: best_effort}\n"])
def test_a_key_file_the_policy_grants_is_refused_in_landlock_mode(sandbox, landlock):
    key = sandbox.work / "api.key"  # the workdir is granted: the command could read it
    key.write_text("sk-test-key\n")
    key.chmod(0o644)
    marker = sandbox.work / "ran"
    result = sandbox.run(["/usr/bin/touch", str(marker)], policy=POLICY.format(landlock=landlock),
                         args=("-q", "--isolation", "landlock", "--inference-routes", routes_with_key(sandbox, key)))
    assert result.returncode == 125, result.stderr
    assert f"inference key file {key}" in result.stderr
    assert "--api-key-env" in result.stderr and "outside the policy" in result.stderr
    assert "sk-test-key" not in result.stderr + result.stdout
    assert not marker.exists()  # nothing started


def test_a_key_file_outside_the_policy_is_kept_out_by_landlock(sandbox):
    key = sandbox.write("api.key", "sk-test-key\n")  # the workspace: not in the policy
    probe = sandbox.work / "probe.py"
    probe.write_text(PROBE)
    result = sandbox.run([SANDBOX_PYTHON, str(probe), str(key)], policy=POLICY.format(landlock=""),
                         args=("-q", "--isolation", "landlock", "--inference-routes", routes_with_key(sandbox, key)))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == "EACCES"


def test_a_stored_routes_key_stays_out_and_an_unreadable_store_stops_the_run(sandbox):
    """The key a stored route names is withheld from the command, and a store whose routes
    cannot be read ends the run before anything starts (fail closed)."""
    import subprocess

    added = subprocess.run([*sandbox.prefix, "inference", "set", "--name", "o", "--protocol", "openai",
                            "--base-url", "http://127.0.0.1:9/v1", "--api-key-env", "STOCKADE_TEST_KEY"],
                           env=sandbox.env, capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    sandbox.extra_env["STOCKADE_TEST_KEY"] = "sk-stored-secret"
    try:
        result = sandbox.run(["sh", "-c", 'printf "%s" "$STOCKADE_TEST_KEY"'])
        assert result.returncode == 0, result.stderr
        assert result.stdout and "sk-stored-secret" not in result.stdout  # a placeholder instead
        db = sandbox.state / "stockade" / "stockade.db"
        for suffix in ("-wal", "-shm"):
            db.with_name(db.name + suffix).unlink(missing_ok=True)
        db.write_bytes(b"not a database" * 512)
        marker = sandbox.work / "ran"
        result = sandbox.run(["/usr/bin/touch", str(marker)])
        assert result.returncode == 125, result.stderr
        assert "cannot read the inference routes" in result.stderr and not marker.exists()
        assert "sk-stored-secret" not in result.stderr + result.stdout
    finally:
        del sandbox.extra_env["STOCKADE_TEST_KEY"]
