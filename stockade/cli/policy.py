"""`stockade policy ...`: check, explain and print policies; show and hot-reload the policy of a
running sandbox (`show`, `set`, through its control socket). Thin: parse, call, print.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import click

from ..errors import EXIT_INVALID
from ..policy.canonical import policy_sha256
from ..policy.default import default_policy_text
from ..policy.diagnostics import Diagnostic
from ..policy.loader import CheckResult, check_policy_file, check_policy_text

SHORT_HASH = 12


@click.group("policy")
def policy() -> None:
    """Check, explain and print sandbox policies (OpenShell's YAML format).

    \b
    Start from the default policy and check your edits:
      stockade policy default > policy.yaml
      stockade policy check policy.yaml
      stockade policy explain policy.yaml --host api.github.com --port 443 --binary /usr/bin/gh
    Change the network rules of a running sandbox, and see its revisions:
      stockade policy set NAME policy.yaml
      stockade policy show NAME [--revision N]
    """


def read_policy(path: str) -> CheckResult:
    """Check a policy file, or standard input for `-`."""
    if path == "-":
        return check_policy_text(sys.stdin.read(), "<stdin>")
    return check_policy_file(path)


def _counts(n: int, what: str) -> str:
    return f"{n} {what}{'s' * (n != 1)}"


def _summary(result: CheckResult) -> dict[str, object]:
    out: dict[str, object] = {
        "file": result.source, "ok": result.ok,
        "errors": [d.to_json() for d in result.errors],
        "warnings": [d.to_json() for d in result.warnings],
    }
    if result.policy is not None:
        rules = result.policy.network_policies.values()
        out["rules"] = len(rules)
        out["endpoints"] = sum(len(r.endpoints) for r in rules)
        out["sha256"] = policy_sha256(result.policy)
    return out


def _print_diagnostics(diagnostics: Sequence[Diagnostic]) -> None:
    for d in diagnostics:
        click.echo(d.format())


@policy.command("check")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document for machines.")
def check(files: tuple[str, ...], as_json: bool) -> None:
    """Validate policy files and report every error and warning.

    Prints `ok  FILE  N rules, M endpoints, sha256 PREFIX` for each valid file, and each
    problem as `FILE:LINE:COL: error|warning: ...` with a hint where one helps. Exits 1 if any
    file is invalid (warnings alone do not fail). Use `-` to read standard input.
    """
    results = [read_policy(f) for f in files]
    if as_json:
        click.echo(json.dumps({"ok": all(r.ok for r in results),
                               "files": [_summary(r) for r in results]}, indent=2))
    else:
        for r in results:
            _print_diagnostics(r.diagnostics)
            if r.policy is not None:
                s = _summary(r)
                warn = f", {_counts(len(r.warnings), 'warning')}" if r.warnings else ""
                click.echo(f"ok  {r.source}  {_counts(s['rules'], 'rule')}, "  # type: ignore[arg-type]
                           f"{_counts(s['endpoints'], 'endpoint')}, "  # type: ignore[arg-type]
                           f"sha256 {str(s['sha256'])[:SHORT_HASH]}{warn}")
            else:
                click.echo(f"invalid  {r.source}  {_counts(len(r.errors), 'error')}"
                           + (f", {_counts(len(r.warnings), 'warning')}" if r.warnings else ""))
    if not all(r.ok for r in results):
        sys.exit(EXIT_INVALID)


@policy.command("explain")
@click.argument("file", metavar="FILE")
@click.option("--host", required=True, help="Destination host name or IP address.")
@click.option("--port", required=True, type=click.IntRange(1, 65535), help="Destination port.")
@click.option("--binary", metavar="PATH", default=None,
              help="Resolved path of the calling executable (`readlink -f`). Omit it to "
                   "decide as the standalone proxy does, without process identity.")
@click.option("--ancestor", "ancestors", metavar="PATH", multiple=True,
              help="An ancestor's executable, parent first; repeat for each.")
@click.option("--method", metavar="METHOD", help="HTTP method, to also evaluate L7 rules.")
@click.option("--path", "target", metavar="TARGET",
              help="Request target, e.g. '/repos/x?per_page=10' (with --method).")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
def explain(file: str, host: str, port: int, binary: str | None, ancestors: tuple[str, ...],
            method: str | None, target: str | None, as_json: bool) -> None:
    """Show how FILE decides one connection (and optionally one HTTP request).

    Prints the decision, the rule that allowed it or, for a denial, which condition failed and
    the smallest change to the YAML that would allow it. Exits 0 when the explanation was
    produced (allowed or denied), 1 when FILE is invalid.
    """
    from ..policy.engine import compile_policy
    from ..policy.explain import explain_json, explain_text

    if (method is None) != (target is None):
        raise click.UsageError("--method and --path go together")
    result = read_policy(file)
    if result.policy is None:
        _print_diagnostics(result.diagnostics)
        click.echo(f"invalid  {result.source}  {_counts(len(result.errors), 'error')}", err=True)
        sys.exit(EXIT_INVALID)
    decision = compile_policy(result.policy).decide(host, port, binary, ancestors)
    request = decision.check_request(method, target) if method and target is not None else None
    if as_json:
        click.echo(json.dumps(explain_json(decision, request), indent=2))
    else:
        click.echo(explain_text(decision, request))


@policy.command("default")
def default() -> None:
    """Print the built-in default policy (a safe starting point to copy and edit).

    Read-only system paths, a writable working directory and /tmp, and no network rules: all
    egress is denied except the inference endpoint, which the proxy serves itself.
    """
    click.echo(default_policy_text(), nl=False)


# -- a running sandbox's policy (through its control socket) ----------------------------------

WAIT_S = 30.0


@policy.command("set")
@click.argument("name")
@click.argument("file", metavar="FILE")
@click.option("--wait", is_flag=True,
              help="If NAME is not running yet, wait for it to start (up to --timeout) instead of failing.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=WAIT_S, show_default=True,
              metavar="S", help="How long --wait waits for the sandbox.")
def set_policy(name: str, file: str, wait: bool, timeout: float) -> None:
    """Replace the network rules of running sandbox NAME with those of FILE (`-`: stdin).

    \b
    Only network_policies may change while a sandbox runs; a change to filesystem_policy,
    landlock or process is refused with the list of differences, and an invalid policy is
    refused with its errors: in both cases the live policy is untouched. Otherwise the new
    policy is live when this command returns: new connections, and the next request on every
    kept-alive or TLS-terminated connection, are decided by it, and raw tunnels it no longer
    allows are closed. Prints the new revision and its SHA-256 (`stockade policy show NAME`).
    """
    from .logs import clean_errors, fail

    with clean_errors():
        from ..control import call
        from ..state import control_socket_path, validate_name

        validate_name(name)
        if file == "-":
            text, source = sys.stdin.read(), "<stdin>"
        else:
            try:
                with open(file, encoding="utf-8") as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError) as exc:
                fail(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}")
            source = file
        _await_running(name, timeout if wait else 0.0)
        reply = call(control_socket_path(name), "policy_set", yaml_text=text, source=source, wait=True)
        sha = str(reply.get("sha256", ""))
        if not reply.get("changed", True):
            click.echo(f"{name}: unchanged, revision {reply.get('revision')} already has sha256 {sha[:SHORT_HASH]}")
            return
        closed = int(reply.get("tunnels_closed", 0))
        tunnels = f"; {_counts(closed, 'raw tunnel')} closed" if closed else ""
        click.echo(f"{name}: policy revision {reply.get('revision')} is live, sha256 {sha[:SHORT_HASH]}{tunnels}")


@policy.command("show")
@click.argument("name")
@click.option("--revision", type=click.IntRange(min=1), default=None, metavar="N",
              help="Show revision N (default: the live one, or the latest of a stopped sandbox).")
@click.option("--json", "as_json", is_flag=True, help="Print the revision as JSON (with its YAML).")
def show_policy(name: str, revision: int | None, as_json: bool) -> None:
    """Print the policy of sandbox NAME as YAML, after a comment saying which revision it is.

    A running sandbox answers through its control socket; for one that is not running, the
    revisions stored in the state directory are read.
    """
    from .logs import clean_errors, fail

    with clean_errors():
        from ..state import control_socket_path, is_running, validate_name

        validate_name(name)
        if is_running(name):
            from ..control import call

            params = {"revision": revision} if revision is not None else {}
            rev = call(control_socket_path(name), "policy_show", **params)
        else:
            from ..events.views import open_existing_store

            store = open_existing_store()
            found = store.revision(name, revision) if store is not None else None
            if found is None:
                what = f"revision {revision}" if revision is not None else "policy revision"
                fail(f"sandbox {name!r} has no {what}", "`stockade list` shows the known sandboxes")
            assert found is not None
            rev = {"revision": found.revision, "sha256": found.sha256, "source": found.source,
                   "time_ms": found.time_ms, "yaml_text": found.yaml, "live": False}
        if as_json:
            click.echo(json.dumps({"sandbox": name, **rev}, indent=2))
            return
        import datetime as dt

        when = dt.datetime.fromtimestamp(int(rev["time_ms"]) / 1000).astimezone().isoformat(timespec="seconds")
        state = "live" if rev.get("live") else "not live"
        click.echo(f"# sandbox {name}, revision {rev['revision']} ({state}), sha256 {rev['sha256']}\n"
                   f"# {when}, from {rev['source']}")
        text = str(rev["yaml_text"])
        click.echo(text, nl=not text.endswith("\n"))


def _await_running(name: str, timeout: float) -> None:
    """Return once NAME's control socket answers; fail after `timeout` (0: look once)."""
    import time

    from ..control import ControlError, call
    from ..state import control_socket_path, is_running
    from .logs import fail

    deadline = time.monotonic() + timeout
    while True:
        if is_running(name):
            try:
                call(control_socket_path(name), "ping", timeout=5)
                return
            except ControlError as exc:
                if exc.error != "unavailable" or time.monotonic() >= deadline:
                    raise
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    fail(f"sandbox {name!r} is not running" + (f" (waited {timeout:g}s)" if timeout else ""),
         "start it with `stockade run --name NAME ...`, or pass --wait")
