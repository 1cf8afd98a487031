"""Credential placeholders on the proxy's HTTP paths (the SecretStore does the substitution).

Only requests the proxy sees in plaintext are touched: the forward proxy and terminated or
plaintext tunnels. A request that carries a placeholder is substituted when the secret is bound
to the destination host, and refused (403, a finding) when it is not or cannot be resolved:
neither the secret nor the placeholder then leaves the proxy. Requests without a placeholder
pay one substring scan.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..events.types import FindingEvent
from .credentials import CredentialError
from .httphead import Headers
from .responses import ProxyError, denied

if TYPE_CHECKING:
    from .pipeline import Caller


def shown_path(secrets: Any, target: str) -> str:
    """The path of `target` as events and answers show it: without the query, credentials
    redacted."""
    path = target.split("?", 1)[0]
    return secrets.redact(path) if secrets is not None else path


def _refuse(recorder: Any, caller: Caller, title: str, host: str, port: int, reason: str, *,
            detail: str, hint: str | None, code: str) -> ProxyError:
    """The placeholder_misuse finding, recorded, and the 403 that refuses the request."""
    recorder.record(FindingEvent("placeholder_misuse", title, "high", caller.actor, reason, host, port))
    return ProxyError(denied(
        error="credential_refused", detail=detail, host=host, port=port, binary=caller.binary,
        policy=None, reason=reason, hint=hint, extra={"reason_code": code}))


def refuse_placeholder_host(server: Any, caller: Caller, host: str, port: int, recorder: Any) -> None:
    """A destination host that carries a placeholder is refused before it is decided: deciding
    a wildcard rule would resolve it, and the DNS query would carry the placeholder out."""
    secrets = server.secrets
    if secrets is None or not secrets.contains_placeholder(host):
        return
    shown = secrets.redact(host)
    raise _refuse(
        recorder, caller, f"credential placeholder in the destination {shown}:{port}", shown, port,
        "the destination host contains a credential placeholder",
        detail="a credential placeholder may not be part of a destination host; nothing was resolved "
        "or dialled", hint=None, code="placeholder_in_host")


def apply_secrets(server: Any, caller: Caller, host: str, port: int, target: str,
                  headers: Headers, recorder: Any) -> tuple[str, Headers]:
    """(target, headers) to forward; raises ProxyError when a placeholder may not go there."""
    secrets = server.secrets
    if secrets is None:
        return target, headers
    blob = "\n".join([target, *(part for pair in headers for part in pair)])
    if not secrets.contains_placeholder(blob):
        return target, headers
    try:
        sub = secrets.substitute(host, target, headers)
    except CredentialError as exc:
        key = exc.key
        raise _refuse(
            recorder, caller, f"credential placeholder refused for {host}:{port}", host, port, exc.message,
            detail=f"a credential placeholder in this request may not be sent to {host}:{port}; the request "
            "was not forwarded",
            hint=(f"if {host} should receive {key}, bind it: --secret {key}={host}"
                  if key and exc.code == "wrong_host" else None),
            code=exc.code) from None
    return sub.target, list(sub.headers)
