"""`stockade run`: run a command in a sandbox (thin: parse, call the supervisor, print, exit)."""

from __future__ import annotations

import sys

import click

from ..errors import EXIT_STOCKADE_FAILURE, StockadeError


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--policy", "policy_path", metavar="FILE", default=None,
              help="Policy YAML (OpenShell format). Default: the built-in default policy.")
@click.option("--name", default=None, help="Sandbox name (default: a generated readable name).")
@click.option("--workdir", default=None, metavar="DIR",
              help="Working directory of the command (default: the current directory).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="S",
              help="Stop the command after S seconds (SIGTERM, then SIGKILL); exit code 124.")
@click.option("-q", "--quiet", is_flag=True, help="Do not print the startup report.")
@click.option("--isolation", type=click.Choice(["namespaces", "landlock"]), default="namespaces",
              show_default=True,
              help="`landlock`: for hosts without user namespaces; weaker (no pid, mount or net isolation).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(policy_path: str | None, name: str | None, workdir: str | None, timeout: float | None,
        quiet: bool, isolation: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in a sandbox whose only network exit is the policy proxy.

    \b
    Exit codes: the command's own; 128+N when it is killed by signal N; 124 on --timeout;
    125 when stockade fails (bad policy, a layer that cannot be enforced); 126 when the
    command cannot be executed; 127 when it is not found.
    """
    try:
        from ..supervisor import RunOptions, run_sandbox

        code = run_sandbox(RunOptions(argv=command, policy_path=policy_path, name=name, workdir=workdir,
                                      timeout=timeout, quiet=quiet, isolation=isolation))
    except StockadeError as exc:
        click.echo(f"stockade: {exc}", err=True)
        sys.exit(exc.exit_code if exc.exit_code else EXIT_STOCKADE_FAILURE)
    sys.exit(code)
