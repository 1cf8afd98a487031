"""The `stockade` command line: a click group whose subcommands are imported on first use.

Each command group lives in its own module and is registered in COMMANDS below; importing a
command module only when it runs keeps `stockade run` fast to start. The group itself is in
group.py, so that `main()` can start the CA helper of `stockade run` before click is imported,
and skip click altogether for the plain forms of `stockade run` (runfast.py).
"""

from __future__ import annotations

import gc
import sys

# name -> "module:attribute" of a click command or group.
COMMANDS: dict[str, str] = {
    "exec": "stockade.cli.exec:exec_",
    "inference": "stockade.cli.inference:inference",
    "list": "stockade.cli.list:list_sandboxes",
    "logs": "stockade.cli.logs:logs",
    "rules": "stockade.cli.rules:rules",
    "policy": "stockade.cli.policy:policy",
    "proxy": "stockade.cli.proxy:proxy",
    "run": "stockade.cli.run:run",
}


def main() -> None:
    args = sys.argv[1:]
    fast = None
    if args[:1] == ["run"]:
        from .runfast import parse

        fast = parse(args[1:])  # None: click parses (help, errors, unusual spellings)
    if fast is not None or _starts_a_sandbox(args):
        from ..isolation import gcpause

        gcpause.pause()  # until the sandbox has started (isolation/gcpause.py)
        launcher_fds: tuple[int, ...] = ()
        if fast is not None:  # the launcher first: it works on the otherwise idle core
            from ..isolation import prefork

            prefork.prefork(fast["isolation"], workdir=fast["workdir"])
            launcher_fds = prefork.private_fds()
        # The CA helper waits for the sandbox's name (isolation/camint.py); on click's path a
        # guess: a wrong one only costs a helper that exits without minting.
        from ..isolation.camint import prestart

        prestart(close=launcher_fds)
    try:
        if fast is not None:
            from .runfast import run_fast

            run_fast(fast)  # never returns
        from .group import cli

        cli(prog_name="stockade")
    finally:
        # Interpreter shutdown runs full garbage collections over every object left (~30 ms
        # after `stockade run` on a small machine); frozen objects are skipped. Modules and
        # objects are still torn down, atexit handlers and threads' joins still run. (gc is
        # imported above: `stockade exec` ends inside the sandbox's view, where nothing imports.)
        gc.freeze()


def _starts_a_sandbox(args: list[str]) -> bool:
    """`stockade run ...` that will start a sandbox, unless click answers first (help)."""
    if args[:1] != ["run"]:
        return False
    options = args[1:args.index("--")] if "--" in args else args[1:]
    return not any(a in ("-h", "--help") for a in options)


def __getattr__(name: str) -> object:  # `cli` and `LazyGroup` used to live here
    if name in ("cli", "LazyGroup"):
        from . import group

        return getattr(group, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
