"""Shared benchmark helpers: statistics, tables with a ratio column, peer installation, timing.

Benchmarks print numbers; they never assert them. These machines are shared and noisy, so
every table compares peers measured in the same run and the ratio column is what matters.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STOCKADE = [sys.executable, "-m", "stockade"]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def time_command(argv: Sequence[str], runs: int, env: dict[str, str] | None = None,
                 warmup: int = 3) -> list[float]:
    """Wall-clock milliseconds of `runs` executions of argv (after `warmup` untimed ones)."""
    samples: list[float] = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        elapsed = (time.perf_counter() - start) * 1000
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.decode()[-500:]}")
        if i >= warmup:
            samples.append(elapsed)
    return samples


@dataclass
class Table:
    """A result table; `ratio_of` names the column the ratio is computed on."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([_fmt(c) for c in cells])

    def note(self, text: str) -> None:
        self.notes.append(text)

    def render(self) -> str:
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) if self.rows else len(c)
                  for i, c in enumerate(self.columns)]
        line = "  ".join(c.ljust(w) for c, w in zip(self.columns, widths))
        out = [f"## {self.title}", "", line, "  ".join("-" * w for w in widths)]
        out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in self.rows]
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out) + "\n"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def ratio(ours: float, theirs: float) -> str:
    if not theirs or theirs != theirs or ours != ours:
        return "-"
    return f"{ours / theirs:.2f}x"


def ensure_tool(command: str, package: str) -> str | None:
    """Path of `command`, installing its Debian package when missing and root; None if impossible."""
    found = shutil.which(command) or (f"/usr/sbin/{command}" if os.path.exists(f"/usr/sbin/{command}") else None)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for attempt in (["apt-get", "install", "-y", "-q", "--no-install-recommends", package],
                    ["sh", "-c", f"apt-get update -q && apt-get install -y -q --no-install-recommends {package}"]):
        if subprocess.run(attempt, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
            break
    return shutil.which(command) or (f"/usr/sbin/{command}" if os.path.exists(f"/usr/sbin/{command}") else None)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")
