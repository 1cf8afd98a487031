"""Startup: wall time of `stockade run -q -- /bin/true` against bwrap and unshare.

Also the floors stockade cannot go below (the interpreter, the click CLI, the policy package,
the CA) so the table shows where the time goes. Byte-code is compiled once into a private
cache first (this machine sets PYTHONDONTWRITEBYTECODE, and a `pip install` compiles too).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from .common import STOCKADE, Table, ensure_tool, median, percentile, ratio, time_command

RUNS = 40
BWRAP = ["--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
         "/bin/true"]


def _env(cache: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = cache
    env.setdefault("XDG_STATE_HOME", os.path.join(cache, "state"))
    return env


def run(runs: int = RUNS) -> Table:
    mode = "root mode: command as nobody" if os.geteuid() == 0 else "rootless"
    table = Table(f"Startup: `stockade run -q -- /bin/true` ({mode}; {runs} runs, ms)",
                  ["command", "median", "p90", "vs bwrap", "vs unshare -Urn"])
    cache = tempfile.mkdtemp(prefix="stockade-bench-pyc-")
    env = _env(cache)
    workdir = tempfile.mkdtemp(prefix="stockade-bench-wd-")
    os.chmod(workdir, 0o755)
    try:
        os.chdir(workdir)
        peers: dict[str, list[float]] = {}
        bwrap = ensure_tool("bwrap", "bubblewrap")
        if bwrap:
            peers["bwrap"] = time_command([bwrap, *BWRAP], runs)
        else:
            table.note("bwrap is not installed (apt-get install bubblewrap): no bwrap column")
        unshare = shutil.which("unshare")
        if unshare:
            peers["unshare"] = time_command([unshare, "-Urn", "/bin/true"], runs)
        rows = [
            ("stockade run -q -- /bin/true", [*STOCKADE, "run", "-q", "--", "/bin/true"]),
            ("stockade run -q --isolation landlock -- /bin/true",
             [*STOCKADE, "run", "-q", "--isolation", "landlock", "--", "/bin/true"]),
            ("floor: python -c pass", [sys.executable, "-c", "pass"]),
            ("floor: stockade --version (click)", [*STOCKADE, "--version"]),
            ("floor: import the policy package + default policy",
             [sys.executable, "-c", "import stockade.policy.default as d; d.default_policy()"]),
            ("floor: mint the CA (cryptography)",
             [sys.executable, "-c", "import stockade.network.ca as c; c.CertificateAuthority.generate('x').bundle_pem()"]),
        ]
        rows += _rootless_rows(cache)
        for label, argv, *row_env in rows:
            samples = time_command(argv, runs, env=row_env[0] if row_env else env)
            table.add(label, median(samples), percentile(samples, 0.9),
                      ratio(median(samples), median(peers["bwrap"])) if "bwrap" in peers else "-",
                      ratio(median(samples), median(peers["unshare"])) if "unshare" in peers else "-")
        for name, samples in peers.items():
            argv = "bwrap " + " ".join(BWRAP) if name == "bwrap" else "unshare -Urn /bin/true"
            table.add(argv, median(samples), percentile(samples, 0.9), "-", "-")
        table.note("target: stockade run under 120 ms median; the floors run the same interpreter")
        table.note(f"load average at the end: {os.getloadavg()[0]:.2f} (the machine is shared)")
    finally:
        os.chdir("/")
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    return table


def _rootless_rows(cache: str) -> list[tuple]:
    """As root: the same command rootless, as nobody, from a `pip install` (non-editable) venv."""
    if os.geteuid() != 0:
        return []
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests.support.rootless import build_rootless_env, rootless_unavailable

    if rootless_unavailable():
        return []
    rootless = build_rootless_env()
    env = rootless.env(XDG_STATE_HOME=str(rootless.home / "state"))
    argv = rootless.command([rootless.stockade, "run", "-q", "--", "/bin/true"])
    return [("stockade run -q -- /bin/true (rootless as nobody, installed venv)", argv, env)]


if __name__ == "__main__":
    print(run().render())
