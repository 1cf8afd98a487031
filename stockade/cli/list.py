"""`stockade list`: running and recent sandboxes, from the store and the run locks."""

from __future__ import annotations

import json
import time

import click

from .logs import clean_errors


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array instead of a table.")
def list_sandboxes(as_json: bool) -> None:
    """List running and recent sandboxes: name, status, pid, uptime, policy revision,
    allowed/denied counts and command.

    A sandbox is running while its supervisor holds its lock; `lost` means the supervisor
    ended without recording an exit (it was killed).
    """
    with clean_errors():
        from ..events.views import open_existing_store, run_json, runs_table
        from ..state import is_running

        store = open_existing_store()
        runs = store.latest_runs() if store is not None else []
        now = time.time_ns() // 1_000_000
        items = [(run, run.status == "running" and is_running(run.sandbox)) for run in runs]
        items.sort(key=lambda item: (not item[1], -item[0].started_ms))
        if as_json:
            click.echo(json.dumps([run_json(run, running, now) for run, running in items], indent=2))
        elif items:
            click.echo(runs_table(items, now))
        else:
            click.echo("no sandboxes yet: start one with `stockade run -- COMMAND`")
