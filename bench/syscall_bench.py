"""Syscall overhead inside the sandbox: a getppid loop and an open/close loop, inside and outside.

The probe is a small C program (compiled with gcc at run time) so interpreter overhead does not
hide the per-syscall cost of the seccomp filter and Landlock.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from .common import STOCKADE, Table, ensure_tool, ratio

PROBE = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 2000000;
    double t0 = now();
    for (long i = 0; i < n; i++) syscall(SYS_getppid);
    double t1 = now();
    for (long i = 0; i < n / 10; i++) { int fd = open("/dev/null", O_RDONLY); close(fd); }
    double t2 = now();
    printf("%.1f %.1f\n", (t1 - t0) / n, (t2 - t1) / (n / 10));
    return 0;
}
"""


def run(repeats: int = 5) -> Table:
    table = Table("Syscall overhead inside the sandbox (ns per call, best of runs)",
                  ["loop", "outside", "inside", "inside / outside"])
    gcc = ensure_tool("gcc", "gcc")
    if gcc is None:
        table.note("gcc is not installed and could not be installed: skipped")
        return table
    with tempfile.TemporaryDirectory(prefix="stockade-syscall-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        (work / "probe.c").write_text(PROBE)
        subprocess.run([gcc, "-O2", "-o", str(work / "probe"), str(work / "probe.c")], check=True)
        outside = _best([str(work / "probe")], repeats)
        inside = _best([*STOCKADE, "run", "-q", "--workdir", str(work), "--", str(work / "probe")], repeats)
    for i, name in enumerate(("getppid", "open+close /dev/null")):
        table.add(name, outside[i], inside[i], ratio(inside[i], outside[i]))
    table.note("inside = stockade run with the default policy (seccomp denylist + Landlock + namespaces)")
    return table


def _best(argv: list[str], repeats: int) -> tuple[float, float]:
    results = []
    for _ in range(repeats):
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
        results.append((float(out[0]), float(out[1])))
    return min(r[0] for r in results), min(r[1] for r in results)
