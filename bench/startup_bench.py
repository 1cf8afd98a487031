"""Startup: wall time of `stockade run -q -- /bin/true` against bwrap and unshare.

Rows, each with its median and p90 over RUNS runs and its ratio to the peers:
- `stockade run -q -- /bin/true` from this interpreter's console script (root mode when run
  as root: the command runs as nobody) and in the landlock-only mode;
- how long until the command itself runs: `stockade run -q -- date +%s.%N` prints the wall
  clock when it starts, measured from the spawn (the rest of a run is the command, the
  teardown and the event store's bookkeeping); and until its first request through the proxy
  has an answer (curl, then `date`): the proxy's own start comes after the command's;
- as root, the same from the non-editable venv the tests build with the system interpreter
  (tests/support/rootless.py), i.e. what `pip install .` gives a user: in root mode, and
  rootless as nobody;
- the peers: `bwrap --unshare-all ...` (skipped with a note when it cannot be installed) and
  `unshare -Urn`;
- context, the floors under each stockade row: the interpreter alone (`python -c pass`), the
  click CLI (`stockade --version`), the run path's imports and policy, and the CA helper's work.

The commands run interleaved (one of each per round), so a change in the shared machine's load
affects every row alike. Byte-code is compiled first into a private cache (this machine sets
PYTHONDONTWRITEBYTECODE; a `pip install` compiles at install time). Numbers only: no test
asserts a time.

    python -m bench startup            (or: python bench/startup_bench.py)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "bench"

from .common import STOCKADE, Table, ensure_tool, median, percentile, ratio  # noqa: E402

# What a user types: the console script beside this interpreter (`python -m stockade` also
# imports runpy), when there is one.
_SCRIPT = os.path.join(os.path.dirname(sys.executable), "stockade")
ENTRY = [_SCRIPT] if os.access(_SCRIPT, os.X_OK) else STOCKADE

RUNS = 40
WARMUP = 3
BWRAP = ["--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
         "/bin/true"]
TARGET_MS = 120
# What `stockade run` imports and loads before it can start the sandbox (supervisor process).
RUN_PATH = ("import stockade.supervisor, stockade.isolation.prepare, stockade.policy.default as d; "
            "d.default_policy()")
# What the CA helper does (isolation/camint.py), on the other core: root's openssl when it is
# there, else cryptography.
MINT = ("import stockade.isolation.camint as m, stockade.network.trust as t; o = m.trusted_openssl(); "
        "k, c = (o and m.mint_with_openssl(o, 'x')) or m._mint_with_cryptography('x'); t.sandbox_bundle(c)")
PROBE = ["date", "+%s.%N"]  # prints the wall clock (shared with the sandbox) when it runs
# The first request a command makes, answered by the proxy itself (no rule allows the host, a
# reserved name: no DNS, nothing leaves the machine), then the clock.
FIRST_REQUEST = ["/bin/sh", "-c", "curl -s -o /dev/null http://stockade-bench.invalid/; date +%s.%N"]


class Row:
    """A command to time; with `probe`, the time until its `date` printed instead of its end."""

    def __init__(self, label: str, argv: list[str], env: dict[str, str], peer: bool = False,
                 probe: bool = False) -> None:
        self.label, self.argv, self.env, self.peer, self.probe = label, argv, env, peer, probe
        self.samples: list[float] = []


def run(runs: int = RUNS) -> Table:
    mode = "root mode: the command runs as nobody" if os.geteuid() == 0 else "rootless"
    table = Table(f"Startup: `stockade run -q -- /bin/true` ({mode}; {runs} interleaved runs, ms)",
                  ["command", "median", "p90", "vs bwrap", "vs unshare -Urn"])
    cache = tempfile.mkdtemp(prefix="stockade-bench-pyc-")
    workdir = tempfile.mkdtemp(prefix="stockade-bench-wd-")
    os.chmod(workdir, 0o755)
    env = _env(cache)
    load_before = os.getloadavg()[0]
    try:
        os.chdir(workdir)
        rows = _rows(table, env)
        _measure(rows, runs)
        peers = {r.label: median(r.samples) for r in rows if r.peer}
        bwrap = next((m for label, m in peers.items() if label.startswith("bwrap")), None)
        unshare = next((m for label, m in peers.items() if label.startswith("unshare")), None)
        for row in rows:
            m = median(row.samples)
            table.add(row.label, m, percentile(row.samples, 0.9),
                      "-" if row.peer or bwrap is None else ratio(m, bwrap),
                      "-" if row.peer or unshare is None else ratio(m, unshare))
        table.note(f"target: stockade run under {TARGET_MS} ms median on these 2-core machines")
        table.note("'the command runs after': from the spawn until `date` (the command) starts, "
                   "in `stockade run -q -- date +%s.%N`")
        table.note("'its first proxied request is answered after': from the spawn until curl's first "
                   "request (a host no rule allows: the proxy answers 403 itself) has its answer"
                   + ("" if shutil.which("curl") else "; skipped: curl is not installed"))
        table.note("floor rows are context: what each stockade row pays before any sandbox work "
                   "(same interpreter, same byte-code cache)")
        table.note(f"load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after "
                   "(a shared machine: compare rows of one table, not tables)")
    finally:
        os.chdir("/")
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    return table


def _openssl() -> bool:
    from stockade.isolation.camint import trusted_openssl

    return trusted_openssl() is not None


def _env(cache: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = cache
    env.setdefault("XDG_STATE_HOME", os.path.join(cache, "state"))
    return env


def _rows(table: Table, env: dict[str, str]) -> list[Row]:
    py = sys.executable
    rows = [
        Row("stockade run -q -- /bin/true", [*ENTRY, "run", "-q", "--", "/bin/true"], env),
        Row("  the command runs after", [*ENTRY, "run", "-q", "--", *PROBE], env, probe=True),
        *([Row("  its first proxied request is answered after", [*ENTRY, "run", "-q", "--", *FIRST_REQUEST],
               env, probe=True)] if shutil.which("curl") else []),
        Row("stockade run -q --isolation landlock -- /bin/true",
            [*ENTRY, "run", "-q", "--isolation", "landlock", "--", "/bin/true"], env),
        Row("  floor: python -c pass", [py, "-c", "pass"], env),
        Row("  floor: stockade --version (click)", [*ENTRY, "--version"], env),
        Row("  floor: the run path's imports + default policy", [py, "-c", RUN_PATH], env),
        Row("  floor: the CA helper's work (" + ("openssl" if _openssl() else "cryptography") + ")",
            [py, "-c", MINT], env),
    ]
    rows += _installed_rows(table, env["XDG_STATE_HOME"])
    bwrap = ensure_tool("bwrap", "bubblewrap")
    if bwrap:
        rows.append(Row("bwrap " + " ".join(BWRAP), [bwrap, *BWRAP], env, peer=True))
    else:
        table.note("bwrap is not installed and could not be (apt-get install bubblewrap): no bwrap column")
    unshare = shutil.which("unshare")
    if unshare:
        rows.append(Row("unshare -Urn /bin/true", [unshare, "-Urn", "/bin/true"], env, peer=True))
    else:
        table.note("unshare (util-linux) is not installed: no unshare column")
    return rows


def _installed_rows(table: Table, root_state: str) -> list[Row]:
    """As root: the same command from a `pip install`-like venv, rootless (as nobody) and in
    root mode (`root_state`: root's state directory)."""
    if os.geteuid() != 0:
        return []
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests.support.rootless import build_rootless_env, rootless_unavailable

    why = rootless_unavailable()
    if why:
        table.note(f"no installed-venv rows (root mode, rootless): {why}")
        return []
    rootless = build_rootless_env()
    table.note(f"interpreters: this checkout's venv {_interpreter(sys.executable)}; "
               f"the installed venv {_interpreter(rootless.python)}")
    env = rootless.env(XDG_STATE_HOME=str(rootless.home / "state"))
    root_env = rootless.env(XDG_STATE_HOME=root_state)
    return [
        Row("stockade run -q -- /bin/true (root mode, installed venv)",
            [rootless.stockade, "run", "-q", "--", "/bin/true"], root_env),
        Row("stockade run -q -- /bin/true (rootless: nobody, installed venv)",
            rootless.command([rootless.stockade, "run", "-q", "--", "/bin/true"]), env),
        Row("  the command runs after", rootless.command([rootless.stockade, "run", "-q", "--", *PROBE]), env,
            probe=True),
        Row("  floor: python -c pass (that venv)", rootless.command([rootless.python, "-c", "pass"]), env),
        Row("  floor: stockade --version (that venv)", rootless.command([rootless.stockade, "--version"]), env),
    ]


def _interpreter(python: str) -> str:
    """Which Python a venv runs (a pyenv build without PGO runs stockade ~1.4x slower)."""
    version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True).stdout.strip()
    return f"{os.path.realpath(python)} {version}"


def _measure(rows: list[Row], runs: int) -> None:
    """Round-robin: WARMUP untimed rounds (they also compile the byte-code), then `runs`."""
    for i in range(WARMUP + runs):
        for row in rows:
            wall = time.time()
            start = time.perf_counter()
            result = subprocess.run(row.argv, stdout=subprocess.PIPE if row.probe else subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, env=row.env)
            elapsed = (time.perf_counter() - start) * 1000
            if result.returncode != 0:
                raise RuntimeError(f"{' '.join(row.argv)} exited {result.returncode}: "
                                   f"{result.stderr.decode(errors='replace')[-500:]}")
            if row.probe:
                elapsed = (float(result.stdout) - wall) * 1000
            if i >= WARMUP:
                row.samples.append(elapsed)


if __name__ == "__main__":
    print(run().render())
