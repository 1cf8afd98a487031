"""More escape attempts, beyond test_escape.py: each must fail, inside real sandboxes, rootless
(stockade as nobody) and as root (command as nobody). Probes are in probes_more.py; every
probe is bounded in time and count.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid

import pytest

from tests.sandbox.probes import UNIX_CONNECT
from tests.sandbox.probes_more import (
    CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUTS, LEAVE_BEHIND, LINKS,
    NAMESPACE_TRICKS, PROC_SYS, PROC_SYS_TARGETS, SECRETS_SCAN, SIGIO_TO_INIT, STDIO_REOPEN, SUPERVISOR_PROC,
)
from tests.sandbox.test_escape import _pids_with, _policy, _run_probe
from tests.support.netns import NOBODY_GID, NOBODY_UID

pytestmark = pytest.mark.sandbox

LANDLOCK = ("-q", "--isolation", "landlock")


def _owned_dir(path) -> None:
    path.mkdir()
    os.chown(path, NOBODY_UID, NOBODY_GID)  # nobody may write there: only the sandbox refuses


def _owned_file(path, text: str = "orig", mode: int = 0o644) -> None:
    path.write_text(text)
    os.chown(path, NOBODY_UID, NOBODY_GID)
    path.chmod(mode)


def test_links_renames_and_reopens_cannot_write_read_only_files(sandbox):
    """Hard links, renames, a symlink planted in the read-write workdir, /proc/self/fd and
    /proc/self/root reopens: none turns a read_only file (beside, or nested in, the read-write
    workdir, on the same filesystem) into a writable one."""
    ro = sandbox.space / "ro"
    _owned_dir(ro)
    _owned_file(ro / "f")
    nested = sandbox.work / "sub_ro"
    _owned_dir(nested)
    _owned_file(nested / "g")
    args = {"ro_file": str(ro / "f"), "nested_ro_file": str(nested / "g"), "nested_ro_dir": str(nested),
            "work": str(sandbox.work)}
    policy = _policy(sandbox, read_only=[str(ro), str(nested)])
    out = _run_probe(sandbox, LINKS, args, policy=policy)
    assert "ok" not in out.values(), out
    for tag in ("ro", "nested"):
        assert out[f"{tag}:write"] == "EROFS"
        assert out[f"{tag}:link"] == "EXDEV" and out[f"{tag}:rename-out"] == "EXDEV"  # another mount
        assert out[f"{tag}:write-via-symlink"] == "EROFS"
        assert out[f"{tag}:reopen-proc-fd-rw"] == "EROFS" and out[f"{tag}:reopen-proc-self-root"] == "EROFS"
    assert out["nested:rename-dir"] == "EBUSY" and out["nested:rmdir"] == "EBUSY"  # a mount point
    assert (ro / "f").read_text() == "orig" and (nested / "g").read_text() == "orig"


def test_landlock_mode_says_a_read_only_path_under_a_read_write_one_is_writable(sandbox):
    """Without a mount namespace there is no read-only bind: Landlock rights add up along the
    path, so `read_only: [work/sub]` under `read_write: [work]` is writable. That must never
    pass silently: NOT ENFORCED in best effort, exit 125 under hard_requirement."""
    nested = sandbox.work / "sub_ro"
    _owned_dir(nested)
    _owned_file(nested / "g")
    policy = _policy(sandbox, read_only=[str(nested)])
    result = sandbox.run(["/bin/true"], policy=policy, args=("--isolation", "landlock"))
    assert result.returncode == 0, result.stderr
    assert "NOT ENFORCED" in result.stderr and f"read_only {nested} " in result.stderr, result.stderr
    hard = policy.replace("compatibility: best_effort", "compatibility: hard_requirement")
    result = sandbox.run(["/bin/sh", "-c", f"echo pwned > {nested}/g"], policy=hard, args=LANDLOCK)
    assert result.returncode == 125, result.stderr
    assert str(nested) in result.stderr
    assert (nested / "g").read_text() == "orig"


@pytest.mark.parametrize("isolation", ["namespaces", "landlock"])
def test_inherited_stdio_cannot_be_reopened_for_writing(sandbox, isolation):
    """stdin and stdout are host files outside the policy (a redirect by the user): the command
    may use the descriptors it was given, but reopening them through /proc/self/fd (a path
    walk that bypasses the mount view) must not give write access."""
    hidden = sandbox.space / "hidden"
    _owned_dir(hidden)
    _owned_file(hidden / "in.txt", "secret input", mode=0o666)
    _owned_file(hidden / "out.log", "earlier log\n", mode=0o666)
    probe = sandbox.work / "stdio.py"
    probe.write_text(STDIO_REOPEN)
    args = LANDLOCK if isolation == "landlock" else ("-q",)
    with open(hidden / "in.txt", "rb") as stdin, open(hidden / "out.log", "ab") as stdout:
        result = sandbox.run(["/usr/bin/python3", str(probe)], policy=_policy(sandbox), args=args,
                             stdin=stdin, stdout=stdout, capture_output=False, stderr=subprocess.PIPE)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stderr.strip().splitlines()[-1])
    assert out["stdin:read"] == "ok"  # the descriptor itself works
    for key in ("stdin:rdwr", "stdin:trunc", "stdout:rdwr-trunc"):
        assert out[key] == "EACCES", (key, out)
    # chmod through the descriptor (or its magic link) is not a Landlock right: the file is the
    # command's own (owned by its uid) and was handed to it. Only content matters here.
    assert (hidden / "in.txt").read_text() == "secret input"
    assert (hidden / "out.log").read_text() == "earlier log\n"


def test_proc_and_sys_writes_are_refused(sandbox):
    out = _run_probe(sandbox, PROC_SYS, list(PROC_SYS_TARGETS), policy=_policy(sandbox))
    assert not [k for k, v in out.items() if v == "ok"], out
    assert out["listdir:/sys"] == "ENOENT"  # not in the view
    for path in ("/proc/self/attr/current", "/proc/self/oom_score_adj", "/proc/self/mem", "/proc/sys/kernel/hostname"):
        assert out[path] == "EACCES", (path, out[path])  # Landlock: /proc is read-only


def test_namespace_root_and_identity_changes_are_refused(sandbox):
    flags = {"newns": CLONE_NEWNS, "newnet": CLONE_NEWNET, "newpid": CLONE_NEWPID,
             "newipc|newuts": CLONE_NEWIPC | CLONE_NEWUTS, "newcgroup": CLONE_NEWCGROUP}
    out = _run_probe(sandbox, NAMESPACE_TRICKS, flags, policy=_policy(sandbox))
    for label in flags:
        assert out[f"unshare:{label}"] == "EPERM" and out[f"clone:{label}"] == "EPERM", (label, out)
    assert out["chroot"] == "EPERM" and out["sethostname"] == "EPERM"
    assert out["setns:own-user"] == "EPERM"  # seccomp
    for ns in ("user", "mnt", "pid", "net", "ipc", "uts", "cgroup"):
        assert out[f"open:/proc/1/ns/{ns}"] == "EACCES", ns  # init is not dumpable
    for what in ("root", "cwd", "fd"):
        assert out[f"listdir:/proc/1/{what}"] == "EACCES", what
    # Rootless, uid 0 is not even mapped in the sandbox's user namespace.
    assert out["setuid0"] == ("EINVAL" if sandbox.mode == "rootless" else "EPERM")
    assert out["raise-core"] == "ValueError"
    assert set(out["status:CapEff"]) == {"0000000000000000"}
    assert out["status:NoNewPrivs"] == "1"


@pytest.mark.parametrize("isolation", ["namespaces", "landlock"])
def test_sigio_cannot_kill_init(sandbox, isolation):
    """F_SETOWN + F_SETSIG(SIGKILL) + O_ASYNC makes the kernel signal the owner on I/O: a
    signal path besides kill(). In the rootless mode init has the command's own uid, so only
    Landlock's signal scope stands in the way."""
    args = LANDLOCK if isolation == "landlock" else ("-q",)
    out = _run_probe(sandbox, SIGIO_TO_INIT, None, policy=_policy(sandbox), args=args)
    assert out["target-alive"] in (True, "EPERM"), out


def test_landlock_mode_cannot_reach_a_host_abstract_socket(sandbox):
    """The namespace mode has its own netns (test_escape); without one, Landlock's scope
    (ABI >= 6) must stop connect() to an abstract socket of a host service."""
    tag = uuid.uuid4().hex[:8]
    a = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    a.bind(f"\0stockade-more-{tag}")
    a.listen(8)
    try:
        out = _run_probe(sandbox, UNIX_CONNECT, [f"@stockade-more-{tag}"], policy=_policy(sandbox), args=LANDLOCK)
    finally:
        a.close()
    assert out[f"@stockade-more-{tag}"] == "EPERM", out


def test_landlock_mode_supervisor_and_init_are_closed(sandbox):
    """In the landlock-only mode the host /proc is visible and, rootless, the supervisor has
    the command's uid: its memory, environment, descriptors and namespaces must stay closed."""
    out = _run_probe(sandbox, SUPERVISOR_PROC, None, policy=_policy(sandbox), args=LANDLOCK)
    opened = {k: v for k, v in out.items() if v == "ok"}
    if sandbox.mode == "rootless":
        # The supervisor's /proc/<pid>/fd directory is its uid's (the command's) to list: the
        # descriptor numbers show (the mode is said to be weaker), never what they point to.
        opened.pop("sup:fd", None)
    assert not opened, out
    assert out["sup:fd0"] == "EACCES" and out["sup:fd0-link"] == "EACCES"
    assert out["sup:kill0"] == "EPERM" and out["init:kill0"] == "EPERM"  # Landlock signal scope


@pytest.mark.parametrize("isolation", ["namespaces", "landlock"])
def test_daemons_left_behind_do_not_survive_the_command(sandbox, isolation):
    """Double-forked, setsid'd `sleep`s (as many as RLIMIT_NPROC 64 and a count of 80 allow)
    must end with the sandbox, and must not hold up stockade's exit."""
    marker = f"{2000 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6}"
    args = LANDLOCK if isolation == "landlock" else ("-q",)
    started = time.monotonic()
    try:
        out = _run_probe(sandbox, LEAVE_BEHIND, marker, policy=_policy(sandbox), args=args, timeout=60)
        assert out["made"] > 0, out
        assert time.monotonic() - started < 30
        deadline = time.monotonic() + 5
        while _pids_with(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _pids_with(marker) == [], "processes survived the sandbox"
    finally:
        for pid in _pids_with(marker):
            try:
                os.kill(pid, 9)
            except OSError:
                pass


@pytest.mark.parametrize("isolation", ["namespaces", "landlock"])
def test_no_private_key_reaches_the_sandbox(sandbox, isolation):
    """The sandbox gets the CA certificate (to trust the proxy), never its private key."""
    args = LANDLOCK if isolation == "landlock" else ("-q",)
    out = _run_probe(sandbox, SECRETS_SCAN, None, policy=_policy(sandbox), args=args)
    assert out["scanned"], out
    assert out["found"] == [], out


@pytest.mark.parametrize("args", [("-q",), LANDLOCK], ids=["namespaces", "landlock"])
def test_a_symlink_planted_by_one_run_does_not_expose_its_target_to_the_next(sandbox, args):
    """Run 1 (the agent) replaces a workdir path with a link to a private directory; run 2's
    policy lists that path: its target is neither mounted nor granted, and the report says why."""
    secret = sandbox.space / "private"
    _owned_dir(secret)
    _owned_file(secret / "id_key", "PRIVATE-KEY", mode=0o600)
    planted = sandbox.run(["ln", "-s", str(secret), str(sandbox.work / "data")], args=args)
    assert planted.returncode == 0, planted.stderr
    policy = _policy(sandbox, read_only=[str(sandbox.work / "data")])
    second = sandbox.run(["cat", str(sandbox.work / "data" / "id_key")], policy=policy,
                         args=tuple(a for a in args if a != "-q"))
    assert "PRIVATE-KEY" not in second.stdout
    assert second.returncode != 0
    assert "could have planted it" in second.stderr, second.stderr
