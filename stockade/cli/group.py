"""The root click group (`stockade ...`): subcommands are imported on first use (COMMANDS)."""

from __future__ import annotations

import importlib

import click

from .. import __version__
from . import COMMANDS


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
