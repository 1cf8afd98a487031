"""An environment for running stockade as an unprivileged user (nobody), as DESIGN.md §4 asks.

The test interpreter usually lives under /root (mode 0700), which nobody cannot reach. So the
tests build a virtualenv from /usr/bin/python3 in a world-readable directory, install the
runtime dependencies and the test extras there once (cached by the dependency list), and copy
the current `stockade` package into it at every test session so it always runs the code under
test. Each version of the package gets a directory of its own in the venv, named by a hash of its
files, and its own `stockade-<hash>` script: test sessions running at once (two engineers, CI and
a benchmark) never replace the package under each other's feet. The same venv gives commands inside sandboxes (which run as nobody in both modes) their
real clients: requests, httpx, the openai and anthropic SDKs; a policy lists it in read_only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .netns import NOBODY_GID, NOBODY_UID

REPO = Path(__file__).resolve().parents[2]
ROOT = Path("/var/tmp/stockade-test")
SYSTEM_PYTHON = "/usr/bin/python3"


def _runtime_dependencies() -> list[str]:
    """The runtime dependencies and the test extras (the clients sandboxed commands use)."""
    import tomllib

    with open(REPO / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    return list(project["dependencies"]) + list(project["optional-dependencies"]["test"])


@dataclass(frozen=True)
class RootlessEnv:
    venv: Path
    home: Path  # HOME and XDG_STATE_HOME for nobody, owned by nobody
    package: Path  # the directory holding this session's `stockade` package (PYTHONPATH)
    script: Path  # its console script

    @property
    def stockade(self) -> str:
        return str(self.script)

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "XDG_STATE_HOME": str(self.home / "state"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(self.package),  # `python -c "from stockade import ..."` as nobody
        }
        env.update(extra)
        return env

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run as nobody:nogroup with no supplementary groups and no capabilities."""
        return ["setpriv", f"--reuid={NOBODY_UID}", f"--regid={NOBODY_GID}", "--clear-groups",
                "--inh-caps=-all", "--", *argv]


def rootless_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "building the nobody environment needs root (to switch to nobody with setpriv)"
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} is missing"
    if shutil.which("setpriv") is None:
        return "`setpriv` is not installed (scripts/system-deps.sh installs it)"
    return None


def build_rootless_env() -> RootlessEnv:
    deps = _runtime_dependencies()
    key = hashlib.sha256("\n".join(sorted(deps)).encode()).hexdigest()[:12]
    venv = ROOT / f"venv-{key}"
    ROOT.mkdir(parents=True, exist_ok=True)
    os.chmod(ROOT, 0o755)
    if not (venv / ".deps-installed").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *deps],
                       check=True)
        (venv / ".deps-installed").touch()
    package, script = _install_package(venv)
    subprocess.run(["chmod", "-R", "a+rX", str(venv)], check=True)
    home = Path(tempfile.mkdtemp(prefix="stockade-nobody-", dir="/tmp"))
    (home / "state").mkdir()
    os.chmod(home, 0o755)
    subprocess.run(["chown", "-R", f"{NOBODY_UID}:{NOBODY_GID}", str(home)], check=True)
    return RootlessEnv(venv=venv, home=home, package=package, script=script)


def _install_package(venv: Path) -> tuple[Path, Path]:
    """Copy the working tree's package into the venv, in a directory named by its content, and
    write its console script; (the directory, the script). A copy is built aside and renamed
    into place, so a session never sees a half-copied package."""
    source = REPO / "stockade"
    files = sorted(p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes() + b"\0")
    key = digest.hexdigest()[:12]
    packages = venv / "stockade-packages"
    packages.mkdir(exist_ok=True)
    package = packages / key
    if not package.exists():
        building = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=packages))
        shutil.copytree(source, building / "stockade", ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run([str(venv / "bin" / "python"), "-m", "compileall", "-q", str(building)], check=True)
        try:
            building.rename(package)
        except OSError:  # another session installed the same version first
            shutil.rmtree(building, ignore_errors=True)
    script = venv / "bin" / f"stockade-{key}"
    if not script.exists():
        tmp = script.with_name(f".{script.name}.{os.getpid()}")
        tmp.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nsys.path.insert(0, {str(package)!r})\n"
                       "from stockade.cli import main\nsys.exit(main())\n")
        tmp.chmod(0o755)
        tmp.replace(script)
    return package, script


if __name__ == "__main__":  # build it by hand: python -m tests.support.rootless
    print(build_rootless_env(), file=sys.stderr)
