"""Credential placeholders: the sandbox holds stand-ins, the proxy swaps in the real secrets.

`stockade run --secret KEY[=HOST,...]` sets KEY in the sandbox to a placeholder

    stockade-ph-<KEY>-<32 lowercase hex digits>       (128 random bits per secret and sandbox)

made only of URL-unreserved characters (`A-Z a-z 0-9 - _`), so it travels unencoded in header
values, `Bearer`/`token` credentials, Basic user:password pairs, path segments and query values,
and one fixed prefix finds it with a single substring search. The proxy substitutes the real
value (read from the supervisor's environment) only on requests to the hosts the secret is bound
to: an explicit `=HOST,...` list (exact names or policy-style wildcards), else the hosts of the
policy's rules. A placeholder headed anywhere else, one that is not ours, or one that survives
substitution (percent-encoded, base64-wrapped outside a Basic credential, embedded in other text
in a header value, in a query key, the authority or a fragment) refuses the whole request: it
leaves the proxy neither with the secret nor as the placeholder.

Sans-IO: strings and bytes in, strings and bytes out. Request bodies are not inspected (and
request trailers are dropped by the proxy, exchange.py); a destination host carrying a
placeholder is refused before it is decided or resolved (placeholders.py).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets as _random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote, unquote, unquote_to_bytes

from ..policy.hosts import HostError, HostPattern, normalize_host, parse_host
from ..records import Struct

PREFIX = "stockade-ph-"
PLACEHOLDER_RE = re.compile(r"stockade-ph-([A-Za-z_][A-Za-z0-9_]*)-([0-9a-f]{32})")
_PLACEHOLDER_B = re.compile(PLACEHOLDER_RE.pattern.encode())
_PREFIX_B = PREFIX.encode()
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Anything that starts like a placeholder, for redaction (also mangled or foreign ones).
_PREFIXED = re.compile(r"stockade-ph-([A-Za-z0-9_]*)(?:-[0-9A-Fa-f]*)?")
# `<auth-scheme> <credentials>` (RFC 9110 token, then spaces).
_SCHEME_FORM = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+)( +)(.*)", re.S)
_BASIC = re.compile(rb"([Bb][Aa][Ss][Ii][Cc])( +)([A-Za-z0-9+/]+=*)")
# Path: RFC 3986 pchar kept as is (unreserved, sub-delims, ":", "@"); everything else encoded.
_PATH_SAFE = "!$&'()*+,;=:@"
_PATH_UNSAFE = ("/", "\\", "?", "#")
CREDENTIAL_MARK = "[CREDENTIAL:{}]"

H = TypeVar("H", str, bytes)


class CredentialError(Exception):
    """A request (or --secret spec) that must not go through; the proxy answers 403.

    Codes: bad_spec (a --secret argument or its environment variable), unknown_secret (a
    placeholder-shaped token that is not ours), wrong_host (the secret is not bound to the
    destination), unsafe_value (the secret cannot be placed there without changing the request's
    structure), unresolvable (a placeholder where it cannot be substituted, or encoded).
    Messages never contain a secret value.
    """

    def __init__(self, code: str, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.key = key
        self.message = message


class Substitution(Struct, frozen=True):
    target: str
    headers: list[tuple[Any, Any]]  # the same type (bytes or str pairs) as given
    used: frozenset[str]  # keys of the secrets substituted

    def __repr__(self) -> str:
        # target and headers carry the substituted secret values: never in a repr
        return (f"Substitution(target=<redacted>, headers=<{len(self.headers)} redacted>, "
                f"used={self.used!r})")

    def __rich_repr__(self) -> Iterator[tuple[str, Any]]:  # Struct's default would list every field
        yield "used", self.used


class _Secret(Struct, frozen=True, eq=False):
    key: str
    value: str
    raw: bytes  # the value as it goes into a header (UTF-8, undecodable bytes preserved)
    placeholder: str
    hosts: tuple[HostPattern, ...] | None  # explicit binding; None: the policy's hosts

    def __repr__(self) -> str:
        # value and raw are the secret, the placeholder is redacted from events too
        return f"_Secret(key={self.key!r}, value=<redacted>, hosts={self.hosts!r})"

    def __rich_repr__(self) -> Iterator[tuple[str, Any]]:  # Struct's default would list every field
        yield "key", self.key
        yield "hosts", self.hosts


def _base64_forms(text: bytes) -> tuple[bytes, ...]:
    """The base64 characters fully determined by `text` at each of the three alignments, in
    both alphabets: finding one means `text` is somewhere inside a base64 blob."""
    forms = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + text + b"\0\0")
        start, end = -(-8 * shift // 6), 8 * (shift + len(text)) // 6
        form = encoded[start:end]
        forms.update({form, form.translate(bytes.maketrans(b"+/", b"-_"))})
    return tuple(sorted(forms))


_B64_FORMS = _base64_forms(PREFIX.encode())
_B64_FORMS_STR = tuple(f.decode() for f in _B64_FORMS)


# A '%' escape of a character of the prefix (or of '%' itself: double encoding). Only when one
# is present is a percent-decoded copy searched: common escapes (%20, %2F, %3D) cost nothing.
_PERCENT_HINT = re.compile(r"%(?:2[5Dd]|6[134589BbFf]|7[034])")
_PERCENT_HINT_B = re.compile(_PERCENT_HINT.pattern.encode())


def placeholder_evidence(data: str | bytes) -> bool:
    """Whether `data` carries something that looks like a placeholder: the prefix as is,
    percent-encoded (also twice), or inside base64 (any alignment, either alphabet)."""
    if isinstance(data, str):
        if PREFIX in data or any(form in data for form in _B64_FORMS_STR):
            return True
        if not _PERCENT_HINT.search(data):
            return False
    else:
        if _PREFIX_B in data or any(form in data for form in _B64_FORMS):
            return True
        if not _PERCENT_HINT_B.search(data):
            return False
    decoded = unquote_to_bytes(data)
    return _PREFIX_B in decoded or _PREFIX_B in unquote_to_bytes(decoded)


class SecretStore:
    """The secrets of one sandbox, their placeholders and host bindings."""

    def __init__(self, secrets: Iterable[_Secret] = ()) -> None:
        self._by_key: dict[str, _Secret] = {s.key: s for s in secrets}
        self._by_placeholder: dict[str, _Secret] = {s.placeholder: s for s in self._by_key.values()}
        self._default_hosts: tuple[HostPattern, ...] = ()
        self._redactor = self._build_redactor()

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def from_specs(cls, specs: Sequence[str], environ: Mapping[str, str]) -> SecretStore:
        """Parse `KEY[=HOST,...]` specs; values come from `environ`. Raises CredentialError
        (bad_spec) for a bad key, a duplicate, a bad host, a missing or empty variable, or a
        value that cannot travel in a header (CR, LF, NUL or another control character)."""
        parsed: list[_Secret] = []
        seen: set[str] = set()
        for spec in specs:
            key, sep, host_list = spec.partition("=")
            key = key.strip()
            if not _KEY.fullmatch(key):
                raise CredentialError("bad_spec", f"--secret {spec!r}: KEY must be an environment "
                                      "variable name (letters, digits, '_'; not a digit first)")
            if key in seen:
                raise CredentialError("bad_spec", f"--secret {key} is given twice", key)
            seen.add(key)
            hosts = _parse_hosts(key, host_list) if sep else None
            value = environ.get(key)
            if not value:
                raise CredentialError("bad_spec", f"--secret {key}: the environment variable "
                                      f"{key} is {'empty' if value == '' else 'not set'}", key)
            bad = sorted({f"0x{ord(c):02x}" for c in value if ord(c) < 0x20 and c != "\t"
                          or ord(c) == 0x7F})
            if bad:
                raise CredentialError("bad_spec", f"--secret {key}: the value contains control "
                                      f"characters ({', '.join(bad)}) that cannot travel in an "
                                      "HTTP header", key)
            if PREFIX in value:
                raise CredentialError("bad_spec", f"--secret {key}: the value is a placeholder",
                                      key)
            placeholder = f"{PREFIX}{key}-{_random.token_hex(16)}"
            raw = value.encode("utf-8", "surrogateescape")
            parsed.append(_Secret(key, value, raw, placeholder, hosts))
        return cls(parsed)

    @classmethod
    def from_environment(
        cls,
        specs: Sequence[str] | Mapping[str, Sequence[str] | None],
        policy: Any = None,
        environ: Mapping[str, str] | None = None,
    ) -> SecretStore:
        """from_specs over os.environ, bound by default to the hosts of `policy` (a Policy).
        `specs` may also be {KEY: hosts or None}, as the CLI parses --secret."""
        if isinstance(specs, Mapping):
            specs = [key if hosts is None else f"{key}={','.join(hosts)}"
                     for key, hosts in specs.items()]
        store = cls.from_specs(specs, os.environ if environ is None else environ)
        if policy is not None:
            store.bind_default_hosts(policy_hosts(policy))
        return store

    def bind_default_hosts(self, patterns: Iterable[str]) -> None:
        """The policy's hosts, for secrets without an explicit list (call again on reload).
        Patterns the policy loader accepted always parse; an empty host (a hostless
        allowed_ips endpoint, i.e. any host) binds nothing."""
        compiled = []
        for pattern in patterns:
            if not pattern:
                continue
            try:
                compiled.append(parse_host(pattern))
            except HostError:
                continue  # fail closed: a pattern we cannot read binds nothing
        self._default_hosts = tuple(compiled)  # one atomic swap: readers see old or new

    # -- queries -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_key)

    def keys(self) -> list[str]:
        return list(self._by_key)

    def placeholder_env(self) -> dict[str, str]:
        return {s.key: s.placeholder for s in self._by_key.values()}

    def bound_hosts(self, key: str) -> tuple[str, ...]:
        return tuple(p.pattern for p in self._patterns(self._by_key[key]))

    def may_travel_to(self, host: str) -> bool:
        """Some secret is bound to `host`: the proxy must terminate TLS there to substitute."""
        name = normalize_host(host)
        return any(self._bound(s, name) for s in self._by_key.values())

    def contains_placeholder(self, data: bytes | str) -> bool:
        """Fast scan: does `data` (a request head, or its target and header values) need
        substitute()? True also for encoded forms, which substitute() then refuses."""
        return placeholder_evidence(data)

    # -- substitution --------------------------------------------------------------------------

    def substitute(self, host: str, target: str,
                   headers: Sequence[tuple[H, H]]) -> Substitution:
        """The request to forward to `host`, placeholders replaced by secrets; raises
        CredentialError when any placeholder may not or cannot be replaced. Header pairs may
        be bytes or (latin-1) str; the result has the same type."""
        if not placeholder_evidence(_blob(target, headers)):  # the hot path: one scan
            return Substitution(target, list(headers), frozenset())
        name = normalize_host(host)
        used: set[str] = set()
        new_target = self._substitute_target(name, target, used)
        new_headers: list[tuple[Any, Any]] = []
        for hname, value in headers:
            as_str = isinstance(value, str)
            raw = value.encode("latin-1") if as_str else value  # type: ignore[union-attr]
            raw = self._substitute_header(name, raw, used)
            new_headers.append((hname, raw.decode("latin-1") if as_str else raw))
        self._check_leftovers(new_target, new_headers)
        return Substitution(new_target, new_headers, frozenset(used))

    def _resolve(self, host: str, token: str, used: set[str]) -> _Secret:
        secret = self._by_placeholder.get(token)
        if secret is None:
            key = PLACEHOLDER_RE.fullmatch(token)
            raise CredentialError("unknown_secret", "the request carries a credential placeholder "
                                  "that this sandbox did not issue", key.group(1) if key else None)
        if not self._bound(secret, host):
            bound = ", ".join(self.bound_hosts(secret.key)) or "no host"
            raise CredentialError("wrong_host", f"secret {secret.key} is bound to {bound}, not "
                                  f"{host}", secret.key)
        used.add(secret.key)
        return secret

    def _substitute_target(self, host: str, target: str, used: set[str]) -> str:
        head, rest = "", target
        if not target.startswith("/"):
            scheme, sep, after = target.partition("://")
            if not sep:
                return target  # authority- or asterisk-form: nothing to substitute
            cut = min((i for i in (after.find(c) for c in "/?#") if i >= 0), default=len(after))
            head, rest = f"{scheme}://{after[:cut]}", after[cut:]  # the authority stays as is
        rest, hsep, fragment = rest.partition("#")
        path, qsep, query = rest.partition("?")
        path = "/".join(self._substitute_segment(host, seg, used) if PREFIX in seg else seg
                        for seg in path.split("/"))
        if PREFIX in query:
            query = "&".join(self._substitute_pair(host, pair, used) for pair in query.split("&"))
        return f"{head}{path}{qsep}{query}{hsep}{fragment}"

    def _substitute_segment(self, host: str, segment: str, used: set[str]) -> str:
        def put(match: re.Match[str]) -> str:
            secret = self._resolve(host, match.group(0), used)
            if any(c in secret.value for c in _PATH_UNSAFE) or secret.value in (".", ".."):
                raise CredentialError("unsafe_value", f"secret {secret.key} contains characters "
                                      "that would change the request path", secret.key)
            return quote(secret.value, safe=_PATH_SAFE, errors="surrogateescape")

        result = PLACEHOLDER_RE.sub(put, segment)
        if unquote(result) in (".", ".."):  # e.g. "%2E<ph>" with the secret "."
            raise CredentialError("unsafe_value", "a substituted path segment would be a dot "
                                  "segment", next(iter(used), None))
        return result

    def _substitute_pair(self, host: str, pair: str, used: set[str]) -> str:
        key, eq, value = pair.partition("=")
        if not eq or PREFIX not in value:
            return pair  # a placeholder in a key is left for the leftover check to refuse

        def put(match: re.Match[str]) -> str:
            secret = self._resolve(host, match.group(0), used)
            return quote(secret.value, safe="", errors="surrogateescape")  # unreserved only

        return f"{key}={PLACEHOLDER_RE.sub(put, value)}"

    def _substitute_header(self, host: str, value: bytes, used: set[str]) -> bytes:
        if _PLACEHOLDER_B.fullmatch(value):
            return self._resolve(host, value.decode(), used).raw
        basic = _BASIC.fullmatch(value)
        if basic:
            return self._substitute_basic(host, basic, used)
        scheme = _SCHEME_FORM.fullmatch(value)
        if scheme and _PLACEHOLDER_B.fullmatch(scheme.group(3)):  # Bearer <ph>, token <ph>
            secret = self._resolve(host, scheme.group(3).decode(), used)
            return scheme.group(1) + scheme.group(2) + secret.raw
        return value  # anything else with a placeholder is refused by the leftover check

    def _substitute_basic(self, host: str, basic: re.Match[bytes], used: set[str]) -> bytes:
        try:
            decoded = base64.b64decode(basic.group(3), validate=True)
        except (binascii.Error, ValueError):
            return basic.group(0)
        if _PREFIX_B not in decoded:
            return basic.group(0)
        user_end = decoded.find(b":")

        def put(match: re.Match[bytes]) -> bytes:
            secret = self._resolve(host, match.group(0).decode(), used)
            if b":" in secret.raw and (user_end < 0 or match.start() < user_end):
                raise CredentialError("unsafe_value", f"secret {secret.key} contains ':' and "
                                      "cannot be a Basic user name", secret.key)
            return secret.raw

        credentials = _PLACEHOLDER_B.sub(put, decoded)
        return basic.group(1) + basic.group(2) + base64.b64encode(credentials)

    def _check_leftovers(self, target: str, headers: list[tuple[Any, Any]]) -> None:
        """Fail closed: nothing placeholder-like may remain, in any encoding we know."""
        where = None
        if placeholder_evidence(target):
            where = "the request target"
        for hname, value in headers:
            if where is None and (placeholder_evidence(hname) or placeholder_evidence(value)):
                name = hname.decode("latin-1") if isinstance(hname, bytes) else hname
                where = f"the {name} header"
        if where is not None:
            found = _PREFIXED.search(unquote(target)) if where.startswith("the request") else None
            raise CredentialError(
                "unresolvable", f"a credential placeholder in {where} cannot be substituted "
                "(encoded, embedded in other text, or in a position that carries no credential)",
                found.group(1) if found and found.group(1) in self._by_key else None)

    # -- binding -------------------------------------------------------------------------------

    def _patterns(self, secret: _Secret) -> tuple[HostPattern, ...]:
        return secret.hosts if secret.hosts is not None else self._default_hosts

    def _bound(self, secret: _Secret, host: str) -> bool:
        return any(p.match(host) for p in self._patterns(secret))

    # -- redaction -----------------------------------------------------------------------------

    def _build_redactor(self) -> re.Pattern[str]:
        forms: dict[str, str] = {}
        for s in self._by_key.values():
            for form in (s.value, quote(s.value, safe=_PATH_SAFE, errors="surrogateescape"),
                         quote(s.value, safe="", errors="surrogateescape")):
                forms.setdefault(form, s.key)
        self._forms = forms
        ordered = sorted(forms, key=len, reverse=True)  # the longest form wins
        # One pass, so a mark never gets rewritten by a later replacement.
        return re.compile("|".join([_PREFIXED.pattern, *(re.escape(f) for f in ordered)]))

    def redact(self, text: str) -> str:
        """`text` with every placeholder (ours or not) and every secret value, raw or
        percent-encoded, replaced by [CREDENTIAL:KEY]. Base64 forms (a Basic header after
        substitution) are not recognised: never log credential headers."""
        def mark(m: re.Match[str]) -> str:
            key = self._forms.get(m.group(0)) if m.group(1) is None else (m.group(1) or "?")
            return CREDENTIAL_MARK.format(key)

        return self._redactor.sub(mark, text)


def _blob(target: str, headers: Sequence[tuple[Any, Any]]) -> str | bytes:
    """Target, header names and values in one buffer, for a single evidence scan."""
    if headers and isinstance(headers[0][0], bytes):
        parts = [target.encode("latin-1", "replace")]
        parts += [part for pair in headers for part in pair]
        return b"\n".join(parts)
    return "\n".join([target, *(part for pair in headers for part in pair)])


def _parse_hosts(key: str, host_list: str) -> tuple[HostPattern, ...]:
    names = [h.strip() for h in host_list.split(",")]
    if not any(names):
        raise CredentialError("bad_spec", f"--secret {key}=: the host list is empty (omit '=' "
                              "to bind the secret to the policy's hosts)", key)
    hosts = []
    for name in names:
        if not name:
            continue
        try:
            hosts.append(parse_host(name))
        except HostError as exc:
            raise CredentialError("bad_spec", f"--secret {key}: {exc}", key) from None
    return tuple(hosts)


def policy_hosts(policy: Any) -> list[str]:
    """Every endpoint host of a Policy (exact names and wildcard patterns)."""
    return [endpoint.host for rule in policy.network_policies.values()
            for endpoint in rule.endpoints if endpoint.host]
