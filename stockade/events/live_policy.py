"""LivePolicy: the running sandbox's policy generation, its revisions in the store, and the
control ops that change it — hot reload (`policy_set`), `policy_show`, `rules_approve`,
`rules_reject`. The supervisor embeds it and keeps only the swap:

    live = LivePolicy(store=store, sandbox=name, run_id=run_id, policy=policy,
                      yaml_text=text, swap=proxy.set_policy, recorder=recorder)
    server = ControlServer(path, {**live.handlers(), "status": ..., "exec_info": ...}, ...)

`swap(policy)` must compile the new generation and install it atomically, or raise and change
nothing (new connections and the next request on a kept-alive connection use the new one).

Rules (issue 6, policy.md §2):
- the new YAML is validated completely first; an invalid policy changes nothing;
- only `network_policies` may change: any difference in a static section from the policy the
  sandbox started with is refused, listing every difference;
- a policy with the live one's SHA-256 is a no-op; anything else becomes revision N+1 of the
  sandbox (number, SHA-256, time, source, YAML), and the run's current revision;
- approving a proposal merges its rule into the live policy (policy.merge_rule) and goes through
  exactly the same path, then marks the proposal approved with the revision it produced.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import yaml

from ..control import ControlError
from ..policy import (
    PolicyError,
    dump_policy,
    load_policy_text,
    merge_rule,
    policy_sha256,
    static_differences,
)
from ..policy.model import NetworkRule, Policy
from .store import Proposal, Store
from .types import ConfigEvent, Recorder


def proposal_rule(proposal: Proposal) -> NetworkRule:
    """The proposal's rule as a validated NetworkRule (through the same loader as a file)."""
    entry = yaml.safe_load(proposal.rule_yaml)
    text = yaml.safe_dump({"version": 1, "network_policies": entry}, sort_keys=False)
    policy = load_policy_text(text, f"<proposal {proposal.id}>")
    return policy.network_policies[proposal.rule_key]


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
        swap: Callable[[Policy], None],
        recorder: Recorder | None = None,
    ) -> None:
        self._store = store
        self.sandbox = sandbox
        self.run_id = run_id
        self.baseline = policy  # static sections are compared with the policy the sandbox started with
        self.policy = policy
        self.sha256 = policy_sha256(policy)
        self._swap = swap
        self._recorder = recorder
        self._lock = threading.Lock()
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
        """Hot reload. The reply comes after the swap, so `wait` needs no extra work."""
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
                merged = merge_rule(self.policy, proposal_rule(proposal))
            except PolicyError as exc:
                raise _invalid(exc) from None
            result = self._apply(merged, dump_policy(merged), f"rules approve {id}")
            self._store.decide_proposal(self.sandbox, id, "approved", revision=result["revision"])
            return {**result, "id": id, "rule": proposal.rule_key}

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

    def _apply(self, new: Policy, yaml_text: str, source: str) -> dict[str, Any]:
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
            return {"revision": self.revision, "sha256": sha, "changed": False}
        try:
            self._swap(new)
        except Exception as exc:  # noqa: BLE001 - the swap failed: the old generation stays live
            self._record(ConfigEvent(f"policy reload failed: {exc}", severity="high"))
            raise ControlError("reload_failed", f"the new policy could not be installed: {exc}") from None
        self.policy, self.sha256 = new, sha
        rev = self._store.add_revision(self.sandbox, yaml_text=yaml_text, sha256=sha, source=source,
                                       run_id=self.run_id)
        self.revision = rev.revision
        self._record(ConfigEvent(f"policy reloaded ({source})", revision=self.revision, sha256=sha))
        return {"revision": self.revision, "sha256": sha, "changed": True}

    def _record(self, event: ConfigEvent) -> None:
        if self._recorder is not None:
            self._recorder.record(event)
