"""The `stockade` command line: a click group whose subcommands are imported on first use.

Each command group lives in its own module and is registered in COMMANDS below; importing a
command module only when it runs keeps `stockade run` fast to start.
"""

from __future__ import annotations

import gc
import importlib

import click

from .. import __version__

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


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when the subcommand is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="stockade")
def cli() -> None:
    """Run an AI agent in a Linux sandbox whose only way out is a policy proxy.

    No root, no Docker, no daemon: namespaces, Landlock, seccomp and a proxy that decides every
    connection from a short YAML policy (OpenShell's format).
    """


def main() -> None:
    try:
        cli(prog_name="stockade")
    finally:
        # Interpreter shutdown runs full garbage collections over every object left (~30 ms
        # after `stockade run` on a small machine); frozen objects are skipped. Modules and
        # objects are still torn down, atexit handlers and threads' joins still run. (gc is
        # imported above: `stockade exec` ends inside the sandbox's view, where nothing imports.)
        gc.freeze()
