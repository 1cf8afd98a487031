"""Startup report text, the command's environment, and the user-namespace diagnosis (pure)."""

from __future__ import annotations

import errno

from stockade.isolation.environment import EnvironmentInputs, build_environment
from stockade.isolation.namespaces import diagnose_userns
from stockade.isolation.report import Report, format_report, weaker_mode_text


def _report(**changes) -> Report:
    base = dict(
        name="brave-otter", isolation="namespaces", rootless=True, run_as="uid 1000",
        namespaces=("user", "mnt", "pid", "net", "ipc", "uts"), landlock_abi=7, landlock_unavailable="",
        landlock_rules=14, landlock_implicit=("/proc", "/dev/null", "/dev/tty", "/run/stockade"), landlock_skipped=(),
        landlock_scoped=True, landlock_tcp_port=None, seccomp_rules=46, proxy="127.0.0.1:3128",
        policy_source="p.yaml",
    )
    base.update(changes)
    return Report(**base)


def test_the_report_is_one_line_saying_what_is_enforced():
    line = format_report(_report())
    assert "\n" not in line
    for part in ("sandbox brave-otter", "rootless as uid 1000", "namespaces user,mnt,pid,net,ipc,uts",
                 "landlock ABI 7: 14 rules (implicit: /proc, /dev/{null,tty}, /run/stockade)", "signals and abstract sockets scoped",
                 "seccomp 46 rules", "proxy 127.0.0.1:3128", "policy p.yaml"):
        assert part in line
    assert "NOT ENFORCED" not in line


def test_the_report_says_loudly_what_is_not_enforced():
    line = format_report(_report(landlock_abi=0, landlock_unavailable="not enabled at boot",
                                 not_enforced=("Landlock filesystem rules (not enabled at boot)",)))
    assert "landlock NOT ENFORCED (not enabled at boot)" in line
    assert "NOT ENFORCED: Landlock filesystem rules" in line


def test_skipped_paths_and_hidden_sockets_are_listed_briefly():
    skipped = tuple((f"/p{i}", "path does not exist") for i in range(5))
    line = format_report(_report(landlock_skipped=skipped, hidden_sockets=("/home/u/a.sock",),
                                 scan_exhausted="/home/u", state_dir_hidden=True))
    assert "skipped /p0 (path does not exist), /p1 (path does not exist), /p2 (path does not exist) and 2 more" in line
    assert "hid 1 unix sockets (/home/u/a.sock)" in line
    assert "socket scan budget ran out in /home/u" in line
    assert "state dir hidden" in line


def test_root_mode_names_the_user_and_landlock_mode_is_called_weaker():
    assert "root as nobody" in format_report(_report(rootless=False, run_as="nobody"))
    text = weaker_mode_text(7, 41000)
    assert text.startswith("WEAKER MODE (--isolation landlock)")
    assert "host processes are visible" in text and "TCP to port 41000 on any address" in text
    assert "UDP is not restricted" in text
    assert "UDP" not in weaker_mode_text(10, 1)


def test_environment_adds_proxy_sandbox_and_ca_variables():
    env = build_environment({"PATH": "/usr/bin", "HTTP_PROXY": "http://corp:8080"},
                            EnvironmentInputs("brave-otter", "http://127.0.0.1:3128"))
    assert env["PATH"] == "/usr/bin"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        assert env[name] == "http://127.0.0.1:3128"
    assert env["NO_PROXY"] == env["no_proxy"] == "127.0.0.1,localhost,::1"
    assert env["STOCKADE_SANDBOX"] == "brave-otter"
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "PIP_CERT"):
        assert env[name] == "/run/stockade/ca-bundle.pem"
    assert env["NODE_EXTRA_CA_CERTS"] == "/run/stockade/ca.pem"
    root_mode = build_environment({"HOME": "/root", "USER": "root"}, EnvironmentInputs(
        "x", "http://127.0.0.1:3128", identity=(("USER", "nobody"), ("HOME", "/nonexistent"))))
    assert (root_mode["USER"], root_mode["HOME"]) == ("nobody", "/nonexistent")


def test_userns_diagnosis_names_the_cause_and_the_fix():
    none = {"kernel.unprivileged_userns_clone": None, "kernel.apparmor_restrict_unprivileged_userns": None,
            "user.max_user_namespaces": "15000"}
    cause, fix = diagnose_userns(errno.EPERM, {**none, "kernel.unprivileged_userns_clone": "0"})
    assert "unprivileged_userns_clone=0" in cause and "sysctl -w kernel.unprivileged_userns_clone=1" in fix
    cause, fix = diagnose_userns(errno.EPERM, {**none, "kernel.apparmor_restrict_unprivileged_userns": "1"})
    assert "AppArmor" in cause and "--isolation landlock" in fix
    cause, fix = diagnose_userns(errno.ENOSPC, {**none, "user.max_user_namespaces": "0"})
    assert "max_user_namespaces=0" in cause
    cause, fix = diagnose_userns(errno.EPERM, none)
    assert "seccomp profile" in cause and "seccomp=unconfined" in fix and "--isolation landlock" in fix


def _spec(tmp_path, isolation="namespaces"):
    from stockade.isolation.prepare import Request, prepare
    from stockade.policy.model import FilesystemPolicy, Policy

    policy = Policy(version=1, filesystem=FilesystemPolicy(True, ("/usr", "/nonexistent/p"), ()),
                    landlock=None, process=None, network_policies={})
    extra = {"proxy_port": 41000, "tls_dir": str(tmp_path)} if isolation == "landlock" else {}
    return prepare(Request(argv=("true",), policy=policy, name="t", workdir=str(tmp_path), isolation=isolation,
                           **extra), state_dir=str(tmp_path / "state"), env={})


def test_build_report_merges_what_init_found(tmp_path):
    from stockade.isolation.report import build_report

    prepared = _spec(tmp_path)
    facts = {"landlock_abi": 0, "landlock_unavailable": "not enabled at boot", "seccomp_rules": 46,
             "hidden_sockets": ["/home/u/a.sock"], "detached": ["/usr/sub"]}
    report = build_report(prepared.spec, prepared.notes, prepared.not_enforced, facts, "p.yaml", "127.0.0.1:3128")
    assert report.not_enforced[-1].startswith("Landlock filesystem rules (not enabled at boot); the mount view")
    assert ("/nonexistent/p", "path does not exist") in report.landlock_skipped
    assert "/run/stockade" in report.landlock_implicit and report.hidden_sockets == ("/home/u/a.sock",)
    assert any("(could not be made read-only): /usr/sub" in n for n in report.notes)
    line = format_report(report)
    assert "landlock NOT ENFORCED (not enabled at boot)" in line and "seccomp 46 rules" in line


def test_build_report_calls_the_landlock_mode_weaker(tmp_path):
    from stockade.isolation.report import build_report

    prepared = _spec(tmp_path, "landlock")
    facts = {"landlock_abi": 7, "landlock_rules": ["/usr"], "landlock_scoped": True, "landlock_tcp_port": 41000}
    line = format_report(build_report(prepared.spec, prepared.notes, prepared.not_enforced, facts, "p", "127.0.0.1:41000"))
    assert "landlock-only" in line and "WEAKER MODE" in line and "TCP connect only to port 41000" in line
