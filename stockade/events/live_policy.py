"""LivePolicy: the running sandbox's policy generation, its revisions in the store, and the
control ops that change it — hot reload (`policy_set`), `policy_show`, `rules_approve`,
`rules_reject`. The supervisor embeds it and keeps only building and installing
a generation:

    live = LivePolicy(store=store, sandbox=name, run_id=run_id, policy=policy,
                      yaml_text=text, prepare=supervisor.prepare_policy, recorder=recorder)
    server = ControlServer(path, {**live.handlers(), "status": ..., "exec_info": ...}, ...)

`prepare(policy)` builds the new generation (compiles it) and returns it as a `Prepared`, or
raises and changes nothing; its `install()` makes it live (new connections and the next request
on a kept-alive connection use it) and its `settle()` finishes the reload once it is recorded.

Rules (issue 6, policy.md §2):
- the new YAML is validated completely first; an invalid policy changes nothing;
- only `network_policies` may change: any difference in a static section from the policy the
  sandbox started with is refused, listing every difference;
- a policy with the live one's SHA-256 is a no-op; anything else becomes revision N+1 of the
  sandbox (number, SHA-256, time, source, YAML), and the run's current revision;
- approving a proposal merges its rule into the live policy (policy.reload.merge_proposed_rule:
  exactly its host:port for exactly its binaries, under `<key>_N` when its key names a rule for
  something else) and goes through exactly the same path; the proposal is marked approved with
  the revision it produced, in the same store transaction as that revision;
- all or nothing, in this order: the new generation is prepared (compiled) before the store
  is touched; the revision (and the approval) is written and the prepared generation installed
  (a reference swap: the only work done holding the store's write lock) inside one transaction,
  then it commits; only then is it settled (raw tunnels the new policy refuses are closed, so
  nothing irreversible happens before the commit). A failed preparation or install leaves no
  revision; a store that cannot be written (locked past its busy timeout, say) leaves the live
  policy untouched; a commit that fails after the install puts the previous generation back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NoReturn

import yaml

from ..control import ControlError
from ..policy import (
    PolicyError,
    dump_policy,
    load_policy_text,
    policy_sha256,
    static_differences,
)
from ..errors import StockadeError
from ..policy.model import NetworkRule, Policy
from ..policy.reload import merge_proposed_rule
from ..records import Struct
from .store import Proposal, Store
from .types import ConfigEvent, Recorder


def proposal_rule(proposal: Proposal) -> NetworkRule:
    """The proposal's rule as a validated NetworkRule (through the same loader as a file)."""
    entry = yaml.safe_load(proposal.rule_yaml)
    text = yaml.safe_dump({"version": 1, "network_policies": entry}, sort_keys=False)
    policy = load_policy_text(text, f"<proposal {proposal.id}>")
    return policy.network_policies[proposal.rule_key]


def _nothing() -> None:
    return None


class Prepared(Struct, frozen=True):
    """A policy generation built and ready to go live (what LivePolicy's `prepare` returns).

    `install()` makes it live and returns the undo that puts the previous generation back; it
    runs inside the store transaction, holding its write lock, so it must be cheap (a reference
    swap) and, if it raises, must have changed nothing. `settle()` runs once the revision has
    committed (the supervisor closes the raw tunnels the new policy refuses); it must not raise."""

    install: Callable[[], Callable[[], None]]
    settle: Callable[[], None] = _nothing


class _InstallFailed(Exception):
    """The install raised inside the store transaction (the cause is its exception)."""


def _invalid(exc: PolicyError) -> ControlError:
    return ControlError(
        "invalid_policy", exc.format_all() or str(exc),
        data={"diagnostics": [d.to_json() for d in exc.diagnostics]},
    )


class LivePolicy:
    def __init__(
        self,
        *,
        store: Store,
        sandbox: str,
        run_id: int | None,
        policy: Policy,
        yaml_text: str | None,
        prepare: Callable[[Policy], Prepared],
        recorder: Recorder | None = None,
        revision: int | None = None,
        sha256: str | None = None,
    ) -> None:
        """`revision` (and `sha256`): `policy`'s revision, already recorded for this run (with
        its "policy loaded" event) by the services; otherwise it is recorded here."""
        self._store = store
        self.sandbox = sandbox
        self.run_id = run_id
        self.baseline = policy  # static sections are compared with the policy the sandbox started with
        self.policy = policy
        self.sha256 = sha256 if sha256 is not None else policy_sha256(policy)
        self._prepare = prepare
        self._recorder = recorder
        self._lock = threading.Lock()
        if revision is not None:
            self.revision = revision
            return
        rev = store.add_revision(
            sandbox, yaml_text=yaml_text if yaml_text is not None else dump_policy(policy), sha256=self.sha256,
            source=policy.source, run_id=run_id,
        )
        self.revision = rev.revision
        self._record(ConfigEvent("policy loaded", revision=self.revision, sha256=self.sha256))

    def handlers(self) -> dict[str, Callable[..., dict[str, Any]]]:
        return {
            "policy_set": self.set_policy, "policy_show": self.show,
            "rules_approve": self.approve, "rules_reject": self.reject,
        }

    # -- ops --------------------------------------------------------------------------------

    def set_policy(self, yaml_text: str, source: str = "policy set", wait: bool = True) -> dict[str, Any]:
        """Hot reload. The reply comes after the install (and settle), so `wait` needs no extra work."""
        try:
            new = load_policy_text(yaml_text, source)
        except PolicyError as exc:
            self._record(ConfigEvent(f"policy reload refused: invalid policy from {source}", severity="medium"))
            raise _invalid(exc) from None
        with self._lock:
            return self._apply(new, yaml_text, source)

    def show(self, revision: int | None = None) -> dict[str, Any]:
        rev = self._store.revision(self.sandbox, revision if revision is not None else self.revision)
        if rev is None:
            raise ControlError("not_found", f"sandbox {self.sandbox!r} has no policy revision {revision}")
        return {
            "revision": rev.revision, "sha256": rev.sha256, "source": rev.source, "time_ms": rev.time_ms,
            "yaml_text": rev.yaml, "live": rev.revision == self.revision,
        }

    def approve(self, id: int) -> dict[str, Any]:  # noqa: A002 - the protocol's parameter name
        with self._lock:
            proposal = self._pending(id)
            try:
                merge = merge_proposed_rule(self.policy, proposal_rule(proposal))
            except PolicyError as exc:
                raise _invalid(exc) from None
            source = f"rules approve {id}"
            if merge.how == "renamed":  # the proposal's key names a rule for other destinations
                source += f" as {merge.key}"
            result = self._apply(merge.policy, dump_policy(merge.policy), source, approve=id)
            return {**result, "id": id, "rule": merge.key, "proposed_rule": proposal.rule_key, "how": merge.how}

    def reject(self, id: int) -> dict[str, Any]:  # noqa: A002
        with self._lock:
            proposal = self._pending(id)
            self._store.decide_proposal(self.sandbox, id, "rejected")
            return {"id": id, "rule": proposal.rule_key}

    # -- internals --------------------------------------------------------------------------

    def _pending(self, proposal_id: int) -> Proposal:
        proposal = self._store.proposal(self.sandbox, proposal_id)
        if proposal is None:
            raise ControlError("not_found", f"sandbox {self.sandbox!r} has no proposal {proposal_id}",
                               hint=f"`stockade rules {self.sandbox}` lists them")
        if proposal.status != "pending":
            raise ControlError("not_pending", f"proposal {proposal_id} is already {proposal.status}")
        return proposal

    def _apply(self, new: Policy, yaml_text: str, source: str, approve: int | None = None) -> dict[str, Any]:
        """Install `new` as the next revision (and approve proposal `approve` with it), or change
        nothing and raise ControlError."""
        diffs = static_differences(self.baseline, new)
        if diffs:
            self._record(ConfigEvent(f"policy reload refused: static sections changed ({source})", severity="medium"))
            raise ControlError(
                "static_change",
                "only network_policies can change on a running sandbox; refused because:\n  - "
                + "\n  - ".join(diffs),
                hint="restart the sandbox to change filesystem_policy, landlock or process",
                data={"differences": diffs},
            )
        sha = policy_sha256(new)
        if sha == self.sha256:
            if approve is not None:  # the live policy already grants it: approved with this revision
                try:
                    self._store.decide_proposal(self.sandbox, approve, "approved", revision=self.revision)
                except Exception as exc:  # noqa: BLE001
                    self._store_failed(exc, source, approve)
            return {"revision": self.revision, "sha256": sha, "changed": False}
        try:
            prepared = self._prepare(new)  # compiled before the store's write lock is taken
        except Exception as exc:  # noqa: BLE001 - nothing changed
            self._reload_failed(exc)
        undo: Callable[[], None] | None = None

        def install(_revision: int) -> None:  # inside the store transaction, before its commit
            nonlocal undo
            try:
                undo = prepared.install()
            except Exception as exc:  # the old generation stays live; the transaction rolls back
                raise _InstallFailed(exc) from exc

        try:
            rev = self._store.add_revision(self.sandbox, yaml_text=yaml_text, sha256=sha, source=source,
                                           run_id=self.run_id, approve=approve, before_commit=install)
        except _InstallFailed as failed:
            self._reload_failed(failed.__cause__)
        except Exception as exc:  # noqa: BLE001 - nothing was stored
            if undo is not None:  # the commit itself failed after the install: put the previous generation back
                try:
                    undo()
                except Exception as back:  # noqa: BLE001 - the new policy stays live, unrecorded
                    self.policy, self.sha256 = new, sha
                    prepared.settle()
                    self._record(ConfigEvent(f"policy reload not recorded and not undone ({source}): {exc}; "
                                             f"restoring the previous policy failed: {back}", severity="high"))
                    raise ControlError("store_failed", f"the policy went live but could not be recorded: {exc}",
                                       hint="`stockade policy set` the intended policy again") from None
            self._store_failed(exc, source, approve)
        self.policy, self.sha256 = new, sha
        self.revision = rev.revision
        prepared.settle()
        self._record(ConfigEvent(f"policy reloaded ({source})", revision=self.revision, sha256=sha))
        return {"revision": self.revision, "sha256": sha, "changed": True}

    def _reload_failed(self, exc: BaseException | None) -> NoReturn:
        self._record(ConfigEvent(f"policy reload failed: {exc}", severity="high"))
        raise ControlError("reload_failed", f"the new policy could not be installed: {exc}") from None

    def _store_failed(self, exc: Exception, source: str, approve: int | None) -> NoReturn:
        if isinstance(exc, StockadeError):  # the proposal was decided (or pruned) meanwhile
            if approve is not None:
                self._pending(approve)  # not_found or not_pending, as when it was looked up
            raise ControlError("not_pending", exc.message) from None
        self._record(ConfigEvent(f"policy reload refused: the store could not be written ({source}): {exc}",
                                 severity="high"))
        raise ControlError(
            "store_failed",
            f"the policy revision could not be recorded, so the live policy was not changed: {exc}",
            hint="retry when the state database is writable again",
        ) from None

    def _record(self, event: ConfigEvent) -> None:
        if self._recorder is not None:
            self._recorder.record(event)
