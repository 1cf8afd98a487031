"""`stockade exec`: run another command inside a running sandbox (thin: parse, call, print, exit)."""

from __future__ import annotations

import sys

import click

from ..errors import EXIT_STOCKADE_FAILURE, StockadeError


# Options may follow NAME (`exec NAME --workdir DIR -- COMMAND`); everything after `--` is the command.
@click.command("exec")
@click.option("--workdir", default=None, metavar="DIR",
              help="Working directory inside the sandbox (default: where the sandbox's command started).")
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(workdir: str | None, name: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside the running sandbox NAME, under the same isolation.

    \b
    The command joins the sandbox's namespaces and gets the same Landlock rules, seccomp filter,
    dropped capabilities, run-as user and environment as the sandbox's own command; its only
    network exit is the sandbox's proxy. It ends when the sandbox ends.
    Exit codes: the command's own; 128+N when it is killed by signal N; 125 when stockade
    fails (no such running sandbox, a layer that cannot be applied); 126 when the command
    cannot be executed; 127 when it is not found.
    """
    try:
        from ..isolation.enter import exec_in_sandbox

        code = exec_in_sandbox(name, command, workdir)
    except StockadeError as exc:
        _fail(str(exc), getattr(exc, "exit_code", EXIT_STOCKADE_FAILURE))
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        _fail(f"internal error: {type(exc).__name__}: {exc}", EXIT_STOCKADE_FAILURE)
    sys.exit(code)


def _fail(message: str, code: int) -> None:
    # Plain writes: once inside the sandbox's view this process imports nothing more.
    sys.stderr.write(f"stockade: {message}\n")
    sys.stderr.flush()
    sys.exit(code if code in (125, 126, 127) else EXIT_STOCKADE_FAILURE)
