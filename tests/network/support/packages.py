"""Offline fixtures for real clients: a bare git repository and a PEP 503 index with a wheel."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import zipfile
from pathlib import Path

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
           "HOME": "/tmp", "PATH": "/usr/bin:/bin"}


def make_repo(root: Path) -> Path:
    """root/repo.git: a bare repository with one commit of README."""
    work = root / "work"
    work.mkdir(parents=True)
    (work / "README").write_text("hello from the test repository\n")
    run = lambda *a, cwd=work: subprocess.run(a, cwd=cwd, env=GIT_ENV, check=True,  # noqa: E731
                                               capture_output=True)
    run("git", "init", "-q", "-b", "main")
    run("git", "add", "README")
    run("git", "commit", "-q", "-m", "first")
    run("git", "clone", "-q", "--bare", str(work), str(root / "repo.git"), cwd=root)
    run("git", "config", "http.receivepack", "true", cwd=root / "repo.git")
    return root / "repo.git"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_index(root: Path, name: str = "stockade_demo", version: str = "1.0") -> str:
    """root/simple/... and root/packages/<wheel>; returns the project name as pip spells it."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"GREETING = 'installed through the stockade proxy'\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\n"
                            f"Version: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: stockade-tests\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    files[f"{dist}/RECORD"] = (record + f"{dist}/RECORD,,\n").encode()
    wheel_name = f"{name}-{version}-py3-none-any.whl"
    (root / "packages").mkdir(parents=True)
    wheel = root / "packages" / wheel_name
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    project = name.replace("_", "-")
    (root / "simple" / project).mkdir(parents=True)
    (root / "simple" / "index.html").write_text(
        f'<html><body><a href="{project}/">{project}</a></body></html>\n')
    (root / "simple" / project / "index.html").write_text(
        f'<html><body><a href="../../packages/{wheel_name}#sha256={digest}">{wheel_name}</a>'
        "</body></html>\n")
    return project
