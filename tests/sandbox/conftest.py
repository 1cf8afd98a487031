"""Fixtures that start real sandboxes, rootless (as nobody) and as root (agent as nobody).

Every test that takes `sandbox` runs twice: once through the `rootless` environment (stockade
itself runs as nobody from a venv nobody can read) and once as root from the main venv (root
mode: the command drops to nobody). Each test gets a fresh workspace owned by nobody:

    /var/tmp/stockade-sandbox-tests/<id>/work     the workdir (read-write in the default policy)
    /var/tmp/stockade-sandbox-tests/<id>/state    XDG_STATE_HOME of that run
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import STOCKADE
from tests.support.netns import NOBODY_GID, NOBODY_UID

ROOT = Path("/var/tmp/stockade-sandbox-tests")
SANDBOX_PYTHON = "/usr/bin/python3"  # the interpreter the probes run with, inside the sandbox


@dataclass
class Sandbox:
    mode: str  # "rootless" | "root"
    prefix: list[str]  # how to start `stockade run`
    env: dict[str, str]
    space: Path  # the test's workspace
    work: Path  # the workdir
    state: Path  # XDG_STATE_HOME
    uid: int = NOBODY_UID  # who the command runs as, in both modes
    extra_env: dict[str, str] = field(default_factory=dict)

    def command(self, argv: list[str], *, policy: str | None = None, args: tuple[str, ...] = ()) -> list[str]:
        opts = list(args)
        if policy is not None:
            opts = ["--policy", str(self.write(f"policy-{abs(hash(policy))}.yaml", policy)), *opts]
        inner = [*self.prefix, "run", *opts, "--", *argv]
        return inner

    def run(self, argv: list[str], *, policy: str | None = None, args: tuple[str, ...] = ("-q",),
            timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.command(argv, policy=policy, args=args), cwd=self.work,
                              env={**self.env, **self.extra_env}, timeout=timeout, **kwargs)

    def popen(self, argv: list[str], *, policy: str | None = None, args: tuple[str, ...] = ("-q",),
              **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.command(argv, policy=policy, args=args), cwd=self.work,
                                env={**self.env, **self.extra_env}, **kwargs)

    def write(self, name: str, text: str, *, mode: int = 0o644) -> Path:
        """A file in the workspace (outside the workdir), readable by nobody."""
        path = self.space / name
        path.write_text(text)
        path.chmod(mode)
        return path

    def python(self, code: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run([SANDBOX_PYTHON, "-c", code], **kwargs)


def _workspace() -> Path:
    ROOT.mkdir(parents=True, exist_ok=True)
    os.chmod(ROOT, 0o755)
    space = Path(tempfile.mkdtemp(prefix="t-", dir=ROOT))
    os.chmod(space, 0o755)
    for sub in ("work", "state"):
        (space / sub).mkdir()
    os.chmod(space / "state", 0o700)
    for path in (space, space / "work", space / "state"):
        os.chown(path, NOBODY_UID, NOBODY_GID)
    return space


@pytest.fixture(params=["rootless", "root"])
def sandbox(request) -> Sandbox:
    if os.geteuid() != 0:
        pytest.skip("the sandbox suites run as root (CI does): root mode, and nobody for rootless")
    space = _workspace()
    if request.param == "rootless":
        env_ = request.getfixturevalue("rootless")
        sb = Sandbox("rootless", env_.command([env_.stockade]), env_.env(XDG_STATE_HOME=str(space / "state")),
                     space, space / "work", space / "state")
    else:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        env["XDG_STATE_HOME"] = str(space / "state")
        sb = Sandbox("root", list(STOCKADE), env, space, space / "work", space / "state")
    yield sb
    shutil.rmtree(space, ignore_errors=True)


def as_nobody(argv: list[str]) -> list[str]:
    """`argv` run outside the sandbox as nobody (the control group of a probe)."""
    return ["setpriv", f"--reuid={NOBODY_UID}", f"--regid={NOBODY_GID}", "--clear-groups",
            "--inh-caps=-all", "--", *argv]


@pytest.fixture(scope="session")
def gcc() -> str:
    path = shutil.which("gcc")
    if path is None:
        pytest.skip("gcc is not installed: the C probes need it")
    return path


def compile_c(gcc: str, source: str, out: Path) -> Path:
    src = out.with_suffix(".c")
    src.write_text(source)
    subprocess.run([gcc, "-O1", "-o", str(out), str(src)], check=True, capture_output=True)
    out.chmod(0o755)
    return out


__all__ = ["Sandbox", "SANDBOX_PYTHON", "as_nobody", "compile_c", "sys"]
