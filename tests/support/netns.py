"""A private network namespace for integration tests (DESIGN.md §4).

The namespace is created by the test run itself (as root): it has only `lo`, carrying the test
addresses 10.77.0.0/24 and fd77::/64, and its own /etc/hosts (a file bind-mounted inside a
private mount namespace). Upstream servers and the stockade supervisor under test both run
inside it through `nsenter`, so the supervisor's "host network" is this namespace and no byte
ever leaves the machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

NOBODY_UID = 65534
NOBODY_GID = 65534


class TestNet:
    """A holder process owning a network + mount namespace, and helpers to run commands in it."""

    __test__ = False  # not a pytest test class

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.hosts_file = workdir / "hosts"
        self.hosts: dict[str, list[str]] = {}
        self._next_v4 = 1
        self._procs: list[subprocess.Popen] = []
        self._write_hosts()
        script = (
            "set -e; ip link set lo up; "
            f"mount --bind {self.hosts_file} /etc/hosts; "
            "echo ready; exec sleep infinity"
        )
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", script],
            stdout=subprocess.PIPE, text=True,
        )
        line = self.holder.stdout.readline().strip()  # type: ignore[union-attr]
        if line != "ready":
            self.holder.kill()
            raise RuntimeError("could not create the test network namespace")
        self.pid = self.holder.pid

    # -- addresses and names -------------------------------------------------------------

    def new_address(self) -> str:
        """A fresh 10.77.0.x address, configured on lo inside the namespace."""
        self._next_v4 += 1
        addr = f"10.77.0.{self._next_v4}"
        self.check(["ip", "addr", "add", f"{addr}/32", "dev", "lo"])
        return addr

    def new_address6(self) -> str:
        """A fresh fd77::x address on lo inside the namespace."""
        self._next_v4 += 1
        addr = f"fd77::{self._next_v4:x}"
        self.check(["ip", "-6", "addr", "add", f"{addr}/128", "dev", "lo", "nodad"])
        return addr

    def add_host(self, name: str, *addresses: str) -> None:
        """Make `name` resolve to `addresses` inside the namespace (rewrites the hosts file)."""
        self.hosts[name] = list(addresses)
        self._write_hosts()

    def _write_hosts(self) -> None:
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost"]
        lines += [f"{addr} {name}" for name, addrs in self.hosts.items() for addr in addrs]
        # Rewrite in place: the bind mount pins the inode, a rename would not be seen.
        with open(self.hosts_file, "w") as f:
            f.write("\n".join(lines) + "\n")

    # -- running commands ----------------------------------------------------------------

    def command(self, argv: Sequence[str], *, as_nobody: bool = False, cwd: str | None = None) -> list[str]:
        """`argv` wrapped so that it runs inside the namespace (optionally as nobody).

        Entering a mount namespace resets the working directory to its root, so nsenter is told
        to change back into `cwd` (default: the caller's) afterwards.
        """
        prefix = ["nsenter", "-t", str(self.pid), "-n", "-m", f"--wd={cwd or os.getcwd()}", "--"]
        if as_nobody:
            prefix += ["setpriv", f"--reuid={NOBODY_UID}", f"--regid={NOBODY_GID}",
                       "--clear-groups", "--inh-caps=-all", "--"]
        return prefix + list(argv)

    def run(self, argv: Sequence[str], *, as_nobody: bool = False, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 120)
        return subprocess.run(self.command(argv, as_nobody=as_nobody, cwd=kwargs.get("cwd")), **kwargs)

    def check(self, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        result = self.run(argv, **kwargs)
        if result.returncode != 0:
            raise RuntimeError(f"{argv} failed ({result.returncode}): {result.stderr}")
        return result

    def spawn(self, argv: Sequence[str], *, as_nobody: bool = False, **kwargs) -> subprocess.Popen:
        """Start a long-running process (a server) inside the namespace; stopped at close()."""
        proc = subprocess.Popen(self.command(argv, as_nobody=as_nobody, cwd=kwargs.get("cwd")), **kwargs)
        self._procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self._procs + [self.holder]:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self._procs + [self.holder]:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for_port(net: TestNet, host: str, port: int, timeout: float = 15.0) -> None:
    """Block until something accepts TCP connections on host:port inside the namespace."""
    probe = (
        "import socket,sys,time\n"
        f"end=time.time()+{timeout}\n"
        "while time.time()<end:\n"
        "    try:\n"
        f"        socket.create_connection(({host!r},{port}),timeout=1).close(); sys.exit(0)\n"
        "    except OSError: time.sleep(0.05)\n"
        "sys.exit(1)\n"
    )
    result = net.run(["/usr/bin/python3", "-c", probe], timeout=timeout + 5)
    if result.returncode != 0:
        raise RuntimeError(f"nothing listens on {host}:{port} inside the test namespace")


def can_create_netns() -> str | None:
    """None when this process may create the test namespace, else the reason it cannot."""
    if os.geteuid() != 0:
        return "creating the test network namespace needs root (CI runs as root)"
    for tool in ("unshare", "nsenter", "setpriv", "ip"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (scripts/system-deps.sh installs it)"
    return None


@contextlib.contextmanager
def test_network() -> Iterator[TestNet]:
    with tempfile.TemporaryDirectory(prefix="stockade-testnet-") as tmp:
        os.chmod(tmp, 0o755)
        net = TestNet(Path(tmp))
        try:
            yield net
        finally:
            net.close()
