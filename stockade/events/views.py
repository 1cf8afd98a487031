"""What the `logs`, `list` and `rules` commands show, as plain data and text (sans-IO apart
from opening the store): time windows, run status, plain-text tables."""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Sequence
from typing import Any

from ..errors import StockadeError
from .store import Proposal, Run, Store

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now_ms: int) -> int:
    """`--since`: a duration back from now (`90s`, `10m`, `2h`, `1d`, `1w`) or an ISO 8601 time
    (local time when it has no offset). Returns epoch milliseconds."""
    value = text.strip()
    m = _DURATION.fullmatch(value.lower())
    if m:
        return now_ms - int(float(m.group(1)) * _UNIT_S[m.group(2)] * 1000)
    try:
        moment = _dt.datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise StockadeError(f"invalid --since {text!r}", hint="use a duration like 10m, 2h, 1d or an ISO time") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # naive means local time
    return int(moment.timestamp() * 1000)


def open_existing_store() -> Store | None:
    """The user's store, or None when no sandbox has ever run (never creates it)."""
    from ..state import db_path

    path = db_path()
    return Store(path) if os.path.exists(path) else None


def run_status(run: Run, running: bool) -> str:
    """`running`; `lost` when the run never recorded its end and nothing holds its lock (the
    supervisor was killed); otherwise the recorded end, e.g. `exited 0`."""
    if running:
        return "running"
    if run.status == "running":
        return "lost"
    return f"{run.status} {run.exit_code}" if run.exit_code is not None else run.status


def duration(ms: int | None) -> str:
    if ms is None or ms < 0:
        return "-"
    s = ms // 1000
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def ago(ms: int | None, now_ms: int) -> str:
    return "-" if ms is None else f"{duration(now_ms - ms)} ago"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: left-aligned columns two spaces apart; the last column is not padded."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) if i < len(widths) - 1 else c for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def run_json(run: Run, running: bool, now_ms: int) -> dict[str, Any]:
    end = now_ms if running else run.ended_ms
    return {
        "name": run.sandbox, "status": run_status(run, running), "running": running, "run_id": run.id,
        "pid": run.pid, "command": list(run.command), "policy_source": run.policy_source,
        "policy_revision": run.policy_revision, "started_ms": run.started_ms, "ended_ms": run.ended_ms,
        "exit_code": run.exit_code, "uptime_s": None if end is None else (end - run.started_ms) / 1000,
        "allowed": run.allowed, "denied": run.denied, "dropped": run.dropped,
    }


def runs_table(items: Sequence[tuple[Run, bool]], now_ms: int) -> str:
    rows = []
    for run, running in items:
        end = now_ms if running else run.ended_ms
        rows.append((
            run.sandbox, run_status(run, running), run.pid if running else "-",
            duration(None if end is None else end - run.started_ms), run.policy_revision, run.allowed,
            run.denied, _command(run.command),
        ))
    return table(("NAME", "STATUS", "PID", "UPTIME", "REV", "ALLOWED", "DENIED", "COMMAND"), rows)


def _command(argv: Sequence[str], width: int = 60) -> str:
    text = " ".join(argv)
    return text if len(text) <= width else text[: width - 1] + "…"


def proposal_json(p: Proposal) -> dict[str, Any]:
    return {
        "id": p.id, "sandbox": p.sandbox, "status": p.status, "rule": p.rule_key, "host": p.host,
        "port": p.port, "binaries": list(p.binaries), "hit_count": p.hit_count,
        "first_seen_ms": p.first_seen_ms, "last_seen_ms": p.last_seen_ms, "rationale": p.rationale,
        "rule_yaml": p.rule_yaml, "created_ms": p.created_ms, "decided_ms": p.decided_ms, "revision": p.revision,
    }


def proposals_table(items: Sequence[Proposal], now_ms: int) -> str:
    rows = [
        (p.id, p.status, p.rule_key, f"{p.host}:{p.port}", p.hit_count, ago(p.last_seen_ms, now_ms),
         ", ".join(p.binaries))
        for p in items
    ]
    return table(("ID", "STATUS", "RULE", "DESTINATION", "HITS", "LAST SEEN", "BINARIES"), rows)


def use_colour(stream: Any) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (no-color.org)."""
    return bool(getattr(stream, "isatty", lambda: False)()) and "NO_COLOR" not in os.environ and \
        os.environ.get("TERM") != "dumb"
