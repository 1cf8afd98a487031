"""`stockade logs [NAME]`: a sandbox's events, as one-line shorthand or OCSF JSON lines.

`--follow` polls the store for ids above the last one printed (every 150 ms). Polling rather
than inotify: the stdlib has no inotify, SQLite's WAL file is rewritten in place by every
sandbox's writer and reset by checkpoints (so a change notification says little), and an
indexed `id > ?` query on a WAL database costs microseconds without blocking the writer. Ids
only grow and commit in order, so a follower never misses or repeats an event; filtering by
name keeps following across runs (a new sandbox with the same name continues the stream).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import click

from ..errors import EXIT_INVALID, StockadeError

POLL_S = 0.15
PAGE = 1000


def fail(message: str, hint: str | None = None) -> None:
    """One clear line on stderr, exit 1."""
    click.echo(f"stockade: {message}" + (f" ({hint})" if hint else ""), err=True)
    sys.exit(EXIT_INVALID)


@contextmanager
def clean_errors() -> Iterator[None]:
    """StockadeError → one line and exit 1; Ctrl-C and a closed pipe end quietly."""
    try:
        yield
    except StockadeError as exc:
        fail(exc.message, exc.hint)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        try:
            sys.stdout = None  # type: ignore[assignment] - nothing more can be written
        finally:
            sys.exit(0)


@click.command("logs")
@click.argument("name", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events as they are recorded.")
@click.option("--json", "as_json", is_flag=True, help="OCSF 1.7 JSON, one event per line.")
@click.option("--since", metavar="WHEN", help="Only events since a duration ago (10m, 2h, 1d) or an ISO time.")
@click.option("--denied", is_flag=True, help="Only denials.")
def logs(name: str | None, follow: bool, as_json: bool, since: str | None, denied: bool) -> None:
    """Show the events of sandbox NAME (default: the most recently started sandbox).

    \b
    Every connection decision, HTTP request, process start and exit, finding and policy
    change, as `TIME ACTION BINARY -> DESTINATION [RULE] REASON` lines; times are local.
      stockade logs --denied --since 10m
      stockade logs brave-otter --follow --json | jq .
    """
    with clean_errors():
        from ..events.shorthand import shorthand
        from ..events.views import open_existing_store, parse_since, use_colour
        from ..state import validate_name

        since_ms = parse_since(since, time.time_ns() // 1_000_000) if since else None
        store = open_existing_store()
        if name is None:
            name = store.latest_sandbox() if store is not None else None
            if name is None:
                fail("no sandbox has run yet", "start one with `stockade run -- COMMAND`")
        else:
            validate_name(name)
            if not follow and (store is None or store.latest_run(name) is None):
                fail(f"no sandbox named {name!r} has run", "`stockade list` shows the known ones")
        assert name is not None
        colour = not as_json and use_colour(sys.stdout)
        out = sys.stdout
        cursor = 0
        while True:
            if store is None:  # following a name before anything ever ran
                store = open_existing_store()
            rows = store.events(name, after_id=cursor, since_ms=since_ms, denied=denied, limit=PAGE) if store else []
            for row in rows:
                out.write((row.ocsf if as_json else shorthand(json.loads(row.ocsf), color=colour, local_time=True)) + "\n")
            if rows:
                cursor = rows[-1].id
                out.flush()
                if len(rows) == PAGE:
                    continue
            if not follow:
                return
            time.sleep(POLL_S)
