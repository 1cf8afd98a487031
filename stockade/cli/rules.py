"""`stockade rules`: the rule proposals made from a sandbox's denials, and their approval.

Approval goes through the running sandbox's control socket (op `rules_approve`): the
supervisor merges the rule into the live policy through the hot-reload path and records the
revision. Rejection only changes the store, through the socket when the sandbox runs.
"""

from __future__ import annotations

import json
import time

import click

from .logs import clean_errors, fail

STATUSES = ("pending", "approved", "rejected", "all")


class _RulesGroup(click.Group):
    """`rules [NAME] [--status S] [--json]` lists; `rules approve|reject NAME ID` decides.
    A first word that is not a subcommand goes to the (hidden) listing command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["show", *args]
        return super().parse_args(ctx, args)


@click.group("rules", cls=_RulesGroup)
def rules() -> None:
    """Rule proposals made from denied connections.

    \b
      stockade rules [NAME] [--status pending|approved|rejected|all] [--json]
      stockade rules approve NAME ID     merge into the running sandbox's live policy
      stockade rules reject NAME ID
    NAME defaults to the most recently started sandbox; --status defaults to pending.
    """


@rules.command("show", hidden=True)
@click.argument("name", required=False)
@click.option("--status", type=click.Choice(STATUSES), default="pending", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON array, with each rule's YAML.")
def show(name: str | None, status: str, as_json: bool) -> None:
    with clean_errors():
        from ..events.views import open_existing_store, proposal_json, proposals_table
        from ..state import validate_name

        store = open_existing_store()
        if name is None:
            name = store.latest_sandbox() if store is not None else None
            if name is None:
                fail("no sandbox has run yet", "start one with `stockade run -- COMMAND`")
        validate_name(name)
        assert name is not None
        items = store.proposals(name, status=None if status == "all" else status) if store is not None else []
        if as_json:
            click.echo(json.dumps([proposal_json(p) for p in items], indent=2))
        elif items:
            click.echo(proposals_table(items, time.time_ns() // 1_000_000))
            if any(p.status == "pending" for p in items):
                click.echo(f"\napprove one with: stockade rules approve {name} ID")
        else:
            click.echo(f"no {'' if status == 'all' else status + ' '}proposals for {name}")


@rules.command("approve")
@click.argument("name")
@click.argument("proposal_id", metavar="ID", type=int)
def approve(name: str, proposal_id: int) -> None:
    """Merge proposal ID into the live policy of running sandbox NAME."""
    with clean_errors():
        from ..control import call
        from ..state import control_socket_path, is_running, validate_name

        validate_name(name)
        if not is_running(name):
            fail(f"sandbox {name!r} is not running, so there is no live policy to approve into",
                 f"add the rule from `stockade rules {name} --json` to your policy file instead")
        reply = call(control_socket_path(name), "rules_approve", id=proposal_id)
        what = "policy revision {}".format(reply.get("revision")) if reply.get("changed", True) else "no change needed"
        proposed = reply.get("proposed_rule", reply.get("rule", "?"))
        key, how = reply.get("rule", proposed), reply.get("how")
        if how == "renamed":  # its key names a rule for other destinations, left as it was
            what += f"; added as new rule {key}, since rule {proposed} covers other destinations"
        elif how == "merged" and key != proposed:
            what += f"; its binaries were added to rule {key}, which has exactly this endpoint"
        click.echo(f"approved proposal {proposal_id} ({proposed}): {what}")


@rules.command("reject")
@click.argument("name")
@click.argument("proposal_id", metavar="ID", type=int)
def reject(name: str, proposal_id: int) -> None:
    """Reject proposal ID of sandbox NAME (it is not proposed again)."""
    with clean_errors():
        from ..control import ControlError, call
        from ..events.views import open_existing_store
        from ..state import control_socket_path, is_running, validate_name

        validate_name(name)
        if is_running(name):
            try:
                call(control_socket_path(name), "rules_reject", id=proposal_id)
            except ControlError as exc:
                if exc.error != "unsupported":
                    raise
            else:
                click.echo(f"rejected proposal {proposal_id}")
                return
        store = open_existing_store()
        if store is None:
            fail(f"sandbox {name!r} has no proposal {proposal_id}")
        assert store is not None
        store.decide_proposal(name, proposal_id, "rejected")
        click.echo(f"rejected proposal {proposal_id}")
