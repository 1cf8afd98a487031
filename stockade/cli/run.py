"""`stockade run`: run a command in a sandbox (thin: parse, call the supervisor, print, exit).

This is the click declaration: the help, the usage errors, and the options' reference. The plain
forms of the command line skip click altogether (runfast.py, whose parser must accept exactly
these options: tests/test_cli_runfast.py); both end in runfast.execute.
"""

from __future__ import annotations

import math

import click

from .runfast import execute


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--policy", "policy_path", metavar="FILE", default=None,
              help="Policy YAML (OpenShell format). Default: the built-in default policy.")
@click.option("--name", default=None, help="Sandbox name (default: a generated readable name).")
@click.option("--workdir", default=None, metavar="DIR",
              help="Working directory of the command (default: the current directory).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="S",
              callback=lambda ctx, param, value: _finite(value),
              help="Stop the command after S seconds (SIGTERM, then SIGKILL); exit code 124.")
@click.option("-q", "--quiet", is_flag=True, help="Do not print the startup report.")
@click.option("--isolation", type=click.Choice(["namespaces", "landlock"]), default="namespaces",
              show_default=True,
              help="`landlock`: for hosts without user namespaces; weaker (no pid, mount or net isolation).")
@click.option("--secret", "secrets", multiple=True, metavar="KEY[=HOST,...]",
              help="Give the command $KEY as a placeholder; the proxy puts the real value (from this "
                   "environment) into requests to HOST (default: the hosts of the policy's rules) "
                   "and refuses it anywhere else. Repeatable.")
@click.option("--upstream-ca", metavar="FILE", default=None,
              help="Extra CA bundle (PEM) that upstream TLS certificates may chain to (private CAs).")
@click.option("--inference-routes", metavar="FILE", default=None,
              help="Model backends for https://inference.local (YAML `routes:`), instead of the "
                   "routes of `stockade inference set`.")
@click.option("--log-file", metavar="FILE", default=None,
              help="Also append every event to FILE as OCSF JSON lines.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(policy_path: str | None, name: str | None, workdir: str | None, timeout: float | None,
        quiet: bool, isolation: str, secrets: tuple[str, ...], upstream_ca: str | None,
        inference_routes: str | None, log_file: str | None, command: tuple[str, ...]) -> None:
    """Run COMMAND in a sandbox whose only network exit is the policy proxy.

    \b
    While it runs: `stockade logs NAME -f` shows its events, `stockade rules NAME` the rules
    proposed from its denials (`stockade rules approve NAME ID` applies one at once),
    `stockade policy set NAME FILE` replaces its network rules, `stockade list` shows it.

    \b
    Exit codes: the command's own; 128+N when it is killed by signal N; 124 on --timeout;
    125 when stockade fails (bad policy, a layer that cannot be enforced); 126 when the
    command cannot be executed; 127 when it is not found.
    """
    execute(policy_path=policy_path, name=name, workdir=workdir, timeout=timeout, quiet=quiet,
            isolation=isolation, secrets=secrets, upstream_ca=upstream_ca, inference_routes=inference_routes,
            log_file=log_file, command=command)


def _finite(value: float | None) -> float | None:
    """FloatRange lets inf and nan through; the supervisor's timer needs a real deadline."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of seconds")
    return value
