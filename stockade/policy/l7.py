"""L7 (REST) evaluation of one request on an allowed connection (policy.md §3.8), sans-IO.

The request target is canonicalised first (target.py); the proxy forwards
`RequestDecision.target`, so the upstream sees exactly the path the rules were checked against.
A request is permitted when any allow rule of the connection's Decision matches: the method
(case-insensitive, `*` any, and HEAD wherever GET is allowed, as OpenShell HEAD does), the path
glob, and every configured query parameter (present with at least one value, every value
matching one of its globs; extra parameters are ignored).

Outcomes: `allow`; `audit` (a violation on an endpoint whose enforcement is audit: forwarded and
recorded); `deny` (a violation under enforce). A target that cannot be canonicalised is denied
even under audit: it is not a rule violation to observe but a request with no single meaning.
An endpoint without `protocol: rest` has no L7 check.
"""

from __future__ import annotations

import re

from ..records import Struct
from . import explain
from .engine import Decision
from .model import Enforcement
from .target import InvalidTarget, canonicalize_target

# Reason codes of a RequestDecision that is not a plain allow.
CONNECTION_DENIED = "connection_denied"  # the Decision itself was a deny
INVALID_REQUEST = "invalid_request"  # the method or target cannot be evaluated safely
NOT_PERMITTED = "l7_not_permitted"  # no allow rule matches (a deny, or an audit when forwarded)
REQUEST_REASON_CODES = (CONNECTION_DENIED, INVALID_REQUEST, NOT_PERMITTED)

_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")

ALLOW, AUDIT, DENY = "allow", "audit", "deny"


class RequestDecision(Struct, frozen=True):
    allowed: bool  # forward the request (True for an audit violation too)
    audit: bool  # a violation forwarded only because enforcement is audit
    inspected: bool  # whether L7 rules were evaluated (False on an L4-only endpoint)
    method: str  # upper case
    target: str  # the canonical target to forward (the raw one if it could not be canonicalised)
    reason: str  # e.g. "DELETE /repos/x not permitted by policy", or why it was allowed
    reason_code: str | None = None  # one of REQUEST_REASON_CODES, None for a clean allow
    rule: str | None = None  # the rule that allowed it, or whose endpoint config decided the deny
    hint: str | None = None  # the smallest YAML change that would allow it

    @property
    def action(self) -> str:
        """"allow", "audit" or "deny"."""
        return DENY if not self.allowed else AUDIT if self.audit else ALLOW


def check_request(decision: Decision, method: str, target: str | bytes) -> RequestDecision:
    """Evaluate one HTTP request sent over the connection `decision` allowed."""
    raw = target.decode("latin-1") if isinstance(target, bytes) else target
    m = method.upper()
    if not decision.allowed:
        return RequestDecision(False, False, False, m, raw,
                               f"the connection itself is denied: {decision.reason}",
                               CONNECTION_DENIED, None, decision.hint)
    if not _TOKEN.fullmatch(method):
        return RequestDecision(False, False, decision.l7_enabled, m, raw,
                               f"invalid HTTP method {method[:40]!r}", INVALID_REQUEST,
                               decision.endpoint_rule)
    try:
        canonical = canonicalize_target(raw)
    except InvalidTarget as exc:
        if not decision.l7_enabled:
            return RequestDecision(True, False, False, m, raw,
                                   f"allowed by rule '{decision.rule}' (no L7 rules)",
                                   None, decision.rule)
        return RequestDecision(False, False, True, m, raw, f"invalid request target: "
                               f"{exc.reason}", INVALID_REQUEST, decision.endpoint_rule)
    if not decision.l7_enabled:
        return RequestDecision(True, False, False, m, canonical.target,
                               f"allowed by rule '{decision.rule}' (no L7 rules)", None,
                               decision.rule)
    for allow in decision.l7_rules:
        if allow.matches(m, canonical):
            return RequestDecision(True, False, True, m, canonical.target, allow.allow_reason,
                                   None, allow.rule)
    reason = f"{m} {canonical.path} not permitted by policy"
    hint = explain.request_hint(decision, m, canonical.path)
    audit = decision.enforcement is not Enforcement.ENFORCE
    return RequestDecision(audit, audit, True, m, canonical.target, reason, NOT_PERMITTED,
                           decision.endpoint_rule, hint)
