"""`python -m bench [NAME ...]` (or `make bench`): run the benchmarks and print tables with ratios.

Names: startup, forward, connect, tls, policy, syscalls, events, inference (default: all).
Benchmarks never run in `make test` or CI; no test asserts a time.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys

NETWORK = {"forward", "connect", "tls"}
ALL = ["startup", "forward", "connect", "tls", "policy", "syscalls", "events", "inference"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", choices=[[]] + ALL, default=[], metavar="NAME",
                        help="benchmarks to run: " + ", ".join(ALL))
    args = parser.parse_args()
    names = args.names or ALL
    print(f"# stockade benchmarks — {datetime.date.today()} — {platform.node()}, "
          f"{os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}\n")
    selected = set(names)
    if selected & NETWORK:
        from . import netbench
        for table in netbench.run_all(selected & NETWORK):
            print(table.render(), flush=True)
    for name in [n for n in ALL if n in selected and n not in NETWORK]:
        module = __import__(f"bench.{_MODULES[name]}", fromlist=["run"])
        result = module.run()
        for table in result if isinstance(result, list) else [result]:
            print(table.render(), flush=True)


_MODULES = {"startup": "startup_bench", "policy": "policy_bench", "syscalls": "syscall_bench",
            "events": "events_bench", "inference": "inference_bench"}

if __name__ == "__main__":
    sys.exit(main())
