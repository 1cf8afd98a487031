"""The click-free half of `stockade run`: a parser for the plain forms of its options, and the
body that both it and the click command (run.py) call.

Importing click costs 25-45 ms on a small machine, a sixth of a sandbox's start. `main()` tries
`parse()` first; it returns the exact parameters click would give the command, or None for
anything else (help, an unknown option, a bad value, a missing argument, an unusual spelling),
and then click parses, prints its usage and its errors, and calls the same `execute`. So every
message stays click's, and the fast path can only ever accept what click accepts, with the same
meaning: tests/test_cli_runfast.py checks both parsers on every option of run.py's declaration.
"""

from __future__ import annotations

import math
import os
import sys
TYPE_CHECKING = False  # not `from typing import`: typing costs ~10 ms before the launcher's fork
if TYPE_CHECKING:
    from typing import Any, NoReturn

# name -> (the callback's parameter, kind): "value" (last one wins), "multiple", "flag", or a
# tuple of choices. Must list every option of run.py's click declaration (checked by the tests).
OPTIONS: dict[str, tuple[str, Any]] = {
    "--policy": ("policy_path", "value"),
    "--name": ("name", "value"),
    "--workdir": ("workdir", "value"),
    "--timeout": ("timeout", "timeout"),
    "-q": ("quiet", "flag"),
    "--quiet": ("quiet", "flag"),
    "--isolation": ("isolation", ("namespaces", "landlock")),
    "--secret": ("secrets", "multiple"),
    "--upstream-ca": ("upstream_ca", "value"),
    "--inference-routes": ("inference_routes", "value"),
    "--log-file": ("log_file", "value"),
}
DEFAULTS: dict[str, Any] = {
    "policy_path": None, "name": None, "workdir": None, "timeout": None, "quiet": False,
    "isolation": "namespaces", "secrets": (), "upstream_ca": None, "inference_routes": None,
    "log_file": None,
}
COMPLETE_VAR = "_STOCKADE_COMPLETE"  # click's shell completion: click's business


def parse(args: list[str]) -> dict[str, Any] | None:
    """The run command's parameters from the arguments after `run`, as click would pass them;
    None when click must decide (it then also reports the error, or prints the help)."""
    if os.environ.get(COMPLETE_VAR):
        return None
    params = dict(DEFAULTS)
    secrets: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break  # the command: options end at the first argument (no interspersed options)
        name, eq, inline = arg.partition("=")
        spec = OPTIONS.get(name) if name.startswith("--") or not eq else None
        if spec is None:
            return None  # -h, --help, an unknown option, -qq: click says what it is
        param, kind = spec
        if kind == "flag":
            if eq:
                return None
            params[param] = True
            i += 1
            continue
        if eq:
            value, i = inline, i + 1
        elif i + 1 < len(args) and not args[i + 1].startswith("-"):
            value, i = args[i + 1], i + 2
        else:
            return None  # a missing value, or one that looks like an option: click decides
        if kind == "multiple":
            secrets.append(value)
        elif kind == "timeout":
            timeout = _timeout(value)
            if timeout is None:
                return None
            params[param] = timeout
        elif isinstance(kind, tuple):
            if value not in kind:
                return None
            params[param] = value
        else:
            params[param] = value
    command = tuple(args[i:])
    if not command:
        return None  # click: "Missing argument 'COMMAND...'"
    params["secrets"] = tuple(secrets)
    params["command"] = command
    return params


def _timeout(value: str) -> float | None:
    """click.FloatRange(min=0, min_open=True) for the plain cases (a finite positive number)."""
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number > 0 else None


def execute(*, policy_path: str | None, name: str | None, workdir: str | None, timeout: float | None,
            quiet: bool, isolation: str, secrets: tuple[str, ...], upstream_ca: str | None,
            inference_routes: str | None, log_file: str | None, command: tuple[str, ...]) -> NoReturn:
    """Run the command in a sandbox and exit with its code (DESIGN.md §5)."""
    from ..errors import EXIT_STOCKADE_FAILURE, StockadeError

    try:
        from ..services.inputs import ServiceOptions
        from ..supervisor import RunOptions, run_sandbox

        services = ServiceOptions(secrets=secrets, upstream_ca=upstream_ca, inference_routes=inference_routes,
                                  log_file=log_file, exit_after=True)
        code = run_sandbox(RunOptions(argv=command, policy_path=policy_path, name=name, workdir=workdir,
                                      timeout=timeout, quiet=quiet, isolation=isolation, services=services))
    except StockadeError as exc:
        sys.stderr.write(f"stockade: {exc}\n")
        sys.stderr.flush()
        sys.exit(exc.exit_code if exc.exit_code else EXIT_STOCKADE_FAILURE)
    _end(code)


def _end(code: int) -> NoReturn:
    """The run is over and recorded: the process ends without the interpreter's teardown
    (~5 ms of every run's end on a small machine: modules, objects, the last collections).
    Everything the run opened is closed by now, but the state store's connection, which ends
    with the process (ServiceOptions.exit_after, Store.leave_open). The exit handlers registered
    by then have nothing left to do: logging's flushes no handler of ours, and concurrent.futures'
    joins the executors the services' event loop has already shut down. Only the buffered
    output needs writing out."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(code)


def run_fast(params: dict[str, Any]) -> NoReturn:
    """`execute` outside click, with click's answer to an interrupt before the sandbox exists
    (the supervisor forwards signals once it has started)."""
    try:
        execute(**params)
    except (EOFError, KeyboardInterrupt):
        sys.stderr.write("\nAborted!\n")
        sys.stderr.flush()
        sys.exit(1)
