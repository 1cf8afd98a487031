"""The `network_policies` section: rules, endpoints and binaries (policy.md §1.5); the L7
`rules` of an endpoint are read by l7rules.py.

Part of the loader (see loader.py for the error conventions and the decisions taken). Every
glob is compiled here once, so a bad one is an error with its line instead of a failure when the
first request arrives.
"""

from __future__ import annotations

import ipaddress

import yaml

from ..network.addresses import AddressClass, blocked_overlap, classify, is_blocked_hostname
from .glob import GlobError, compile_glob
from .hosts import HostError, parse_host
from .l7rules import L7RuleReader
from .model import (
    Access,
    Binary,
    Endpoint,
    Enforcement,
    IPNetwork,
    L7Allow,
    NetworkRule,
    Protocol,
    Tls,
    expand_access,
)
from .yamlnodes import NULL, Reader, describe

RULE_KEYS = ("name", "endpoints", "binaries")
ENDPOINT_KEYS = ("host", "port", "ports", "protocol", "tls", "enforcement", "access", "rules",
                 "allowed_ips")
BINARY_KEYS = ("path", "harness")
TLS_VALUES = ("skip", "auto")
TLS_DEPRECATED = ("terminate", "passthrough")
MAX_KEY_LENGTH = 256
MAX_BINARY_LENGTH = 4096
BROAD_PREFIX = {4: 16, 6: 48}  # allowed_ips shorter than this get a warning

# Keys OpenShell added after 1cabd25 (policy.md §8): say so instead of "unknown key".
_HEAD_ENDPOINT_KEYS = {
    k: "it is a later OpenShell addition" for k in (
        "deny_rules", "allow_encoded_slash", "path", "credential_binding", "credential_signing",
        "signing_service", "signing_region", "request_body_credential_rewrite",
        "websocket_credential_rewrite", "allow_uninspected_credentials", "persisted_queries",
        "graphql_persisted_queries", "graphql_max_body_bytes", "json_rpc", "mcp")
}


class RuleReader:
    def __init__(self, reader: Reader) -> None:
        self.r = reader

    def network_policies(self, node: yaml.Node) -> dict[str, NetworkRule]:
        r = self.r
        if node.tag == NULL:
            return {}
        if not isinstance(node, yaml.MappingNode):
            r.error(node, "network_policies", f"expected a mapping of rule names to rules, "
                    f"got {describe(node)}")
            return {}
        rules: dict[str, NetworkRule] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = r.key(key_node, "network_policies")
            if key is None:
                continue
            path = f"network_policies.{key}"
            if key in first_line:
                r.error(key_node, path, f"duplicate rule '{key}' (first given on line "
                        f"{first_line[key]})")
                continue
            first_line[key] = key_node.start_mark.line + 1
            if not key or len(key) > MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
                r.error(key_node, path, f"rule name {key!r} must be 1 to {MAX_KEY_LENGTH} "
                        "printable ASCII characters (it appears in logs and HTTP headers)")
                continue
            if not r.count(value_node):
                break
            rule = self.rule(key, value_node, path)
            if rule is not None:
                rules[key] = rule
        return rules

    def rule(self, key: str, node: yaml.Node, path: str) -> NetworkRule | None:
        r = self.r
        entries = r.mapping(node, path, RULE_KEYS, what="a rule (name, endpoints, binaries)")
        if entries is None:
            return None
        name = key
        if "name" in entries:
            name = r.string(entries["name"][1], f"{path}.name") or key
        endpoints: list[Endpoint] = []
        ok = True
        if "endpoints" in entries:
            items = r.sequence(entries["endpoints"][1], f"{path}.endpoints", "a list of endpoints")
            ok = items is not None
            for i, item in enumerate(items or []):
                if not r.count(item):
                    return None
                ep = self.endpoint(item, f"{path}.endpoints[{i}]")
                ok = ok and ep is not None
                if ep is not None:
                    endpoints.append(ep)
        binaries: list[Binary] = []
        if "binaries" in entries:
            items = r.sequence(entries["binaries"][1], f"{path}.binaries", "a list of binaries")
            ok = ok and items is not None
            for i, item in enumerate(items or []):
                if not r.count(item):
                    return None
                b = self.binary(item, f"{path}.binaries[{i}]")
                if b is None:
                    ok = False
                elif b in binaries:
                    r.warn(item, f"{path}.binaries[{i}]", f"binary '{b.path}' is listed twice")
                else:
                    binaries.append(b)
        if ok and not endpoints:
            r.warn(node, path, "the rule has no endpoints, so it never allows anything")
        if ok and not binaries:
            r.warn(entries["binaries"][1] if "binaries" in entries else node, path,
                   "the rule lists no binaries, so it never matches (OpenShell semantics)",
                   hint="add the executables that may connect, e.g. `binaries: [{ path: "
                   "/usr/bin/curl }]`")
        return NetworkRule(key, name, tuple(endpoints), tuple(binaries)) if ok else None

    # -- binaries ----------------------------------------------------------------------------

    def binary(self, node: yaml.Node, path: str) -> Binary | None:
        r = self.r
        if isinstance(node, yaml.ScalarNode) and node.tag != NULL:
            r.error(node, path, f"expected a mapping with `path`, got {describe(node)}",
                    hint=f"write `- {{ path: {node.value} }}`")
            return None
        entries = r.mapping(node, path, BINARY_KEYS, what="a binary mapping with `path`")
        if entries is None:
            return None
        if "harness" in entries:
            r.boolean(entries["harness"][1], f"{path}.harness")
            r.warn(entries["harness"][0], f"{path}.harness", "'harness' is deprecated and ignored")
        if "path" not in entries:
            r.error(node, path, "missing required key 'path'")
            return None
        value_node = entries["path"][1]
        value = r.string(value_node, f"{path}.path", "an absolute executable path or glob")
        if value is None:
            return None
        problem = _binary_problem(value)
        if problem:
            r.error(value_node, f"{path}.path", problem[0], hint=problem[1])
            return None
        if "*" in value:
            try:
                compile_glob(value, "/")
            except GlobError as exc:
                r.error(value_node, f"{path}.path", f"invalid glob: {exc}")
                return None
        elif any(c in value for c in "?[{"):
            r.warn(value_node, f"{path}.path", f"'{value}' has no '*', so it is compared "
                   "literally ('?', '[' and '{' only act as wildcards in a path with '*')")
        return Binary(value)

    # -- endpoints ---------------------------------------------------------------------------

    def endpoint(self, node: yaml.Node, path: str) -> Endpoint | None:
        r = self.r
        entries = r.mapping(node, path, ENDPOINT_KEYS, what="an endpoint mapping",
                            unsupported=_HEAD_ENDPOINT_KEYS)
        if entries is None:
            return None
        before = len([d for d in r.diagnostics if d.is_error])
        value = {k: v for k, (_, v) in entries.items()}
        nets = self.allowed_ips(value["allowed_ips"], f"{path}.allowed_ips") \
            if "allowed_ips" in value else ()
        host = ""
        if "host" in value:
            host = self.host(value["host"], f"{path}.host", nets)
        elif not nets:
            r.error(node, path, "endpoint has no host; only an endpoint with allowed_ips may "
                    "omit it (any host on its ports)", hint="add `host: api.example.com`")
        ports = self.ports(node, value, path)
        protocol = tls = enforcement = access = None
        if "protocol" in value:
            p = r.choice(value["protocol"], f"{path}.protocol", [x.value for x in Protocol],
                         casefold=True)
            protocol = Protocol(p) if p else None
        if "tls" in value:
            t = r.choice(value["tls"], f"{path}.tls", TLS_VALUES, extra=TLS_DEPRECATED)
            if t in TLS_DEPRECATED:
                r.warn(value["tls"], f"{path}.tls", f"tls: {t} is deprecated and means the "
                       "default (auto: terminate TLS where needed); remove it")
            tls = Tls.SKIP if t == "skip" else Tls.AUTO
        if "enforcement" in value:
            e = r.choice(value["enforcement"], f"{path}.enforcement",
                         [x.value for x in Enforcement])
            enforcement = Enforcement(e) if e else None
        if "access" in value:
            a = r.choice(value["access"], f"{path}.access", [x.value for x in Access])
            access = Access(a) if a else None
        rules: tuple[L7Allow, ...] = ()
        if "rules" in value:
            rules = L7RuleReader(r).l7_rules(value["rules"], f"{path}.rules", protocol)
        self._l7_consistency(entries, path, protocol, ports, tls)
        if len([d for d in r.diagnostics if d.is_error]) > before or ports is None:
            return None
        if access is not None:
            rules = expand_access(access)
        return Endpoint(host=host, ports=ports, protocol=protocol, tls=tls or Tls.AUTO,
                        enforcement=enforcement or Enforcement.AUDIT,
                        enforcement_explicit="enforcement" in value, access=access,
                        rules=rules, allowed_ips=nets)

    def _l7_consistency(self, entries: dict[str, tuple[yaml.Node, yaml.Node]], path: str,
                        protocol: Protocol | None, ports: tuple[int, ...] | None,
                        tls: Tls | None) -> None:
        r = self.r
        has_rules, has_access = "rules" in entries, "access" in entries
        if has_rules and has_access:
            r.error(entries["access"][0], path, "rules and access are mutually exclusive",
                    hint="keep `access` for a preset, or list the `rules` yourself")
        if "protocol" not in entries:
            for key in ("rules", "access"):
                if key in entries:
                    r.error(entries[key][0], f"{path}.{key}", f"'{key}' has no effect without "
                            "'protocol' (the endpoint would allow everything at L4)",
                            hint="add `protocol: rest` to inspect HTTP requests")
            if "enforcement" in entries:
                r.warn(entries["enforcement"][0], f"{path}.enforcement",
                       "'enforcement' has no effect without 'protocol'")
            return
        if protocol is None:
            return  # the protocol value itself was an error
        if not has_rules and not has_access:
            r.error(entries["protocol"][0], path, "protocol requires rules or access to define "
                    "allowed traffic", hint="add `access: read-only` or a `rules:` list")
        if protocol is Protocol.SQL:
            enforcement = entries.get("enforcement")
            if enforcement is not None and enforcement[1].value == "enforce":
                r.error(enforcement[1], f"{path}.enforcement", "SQL enforcement requires full "
                        "SQL parsing (not available); use `enforcement: audit`")
            else:
                r.warn(entries["protocol"][1], f"{path}.protocol", "SQL is not inspected; "
                       "the connection is relayed as plain TCP")
        elif "enforcement" not in entries:
            r.warn(entries["protocol"][0], path, "no 'enforcement' on an L7 endpoint means "
                   "audit: requests that break the rules are only logged, never blocked",
                   hint="add `enforcement: enforce` to block them")
        if tls is Tls.SKIP and ports and ({443, 8443} & set(ports)):
            r.warn(entries["tls"][1], f"{path}.tls", "tls: skip with L7 rules on port "
                   f"{min({443, 8443} & set(ports))}: the rules cannot see inside encrypted "
                   "traffic, so they never apply")

    def host(self, node: yaml.Node, path: str, nets: tuple[IPNetwork, ...]) -> str:
        r = self.r
        text = r.string(node, path, "a host name, IP address or wildcard pattern")
        if text is None:
            return ""
        if text == "":
            if not nets:
                r.error(node, path, "empty host without allowed_ips never matches",
                        hint="name the host, or set allowed_ips for any host on these ports")
            return ""
        try:
            pattern = parse_host(text)
        except HostError as exc:
            r.error(node, path, str(exc), hint=exc.hint)
            return ""
        host = pattern.pattern
        if is_blocked_hostname(host):
            r.warn(node, path, f"'{host}' is always blocked by SSRF protection; this endpoint "
                   "can never connect")
        elif ":" in host or host.replace(".", "").isdigit():
            addr = ipaddress.ip_address(host)
            if classify(addr).klass is AddressClass.BLOCKED:
                r.warn(node, path, f"{host} is always blocked ({classify(addr).reason}); this "
                       "endpoint can never connect")
            elif nets and not any(addr.version == n.version and addr in n for n in nets):
                r.warn(node, path, f"{host} is outside this endpoint's allowed_ips, so the "
                       "connection will always be refused")
        return host

    def ports(self, node: yaml.Node, value: dict[str, yaml.Node], path: str,
              ) -> tuple[int, ...] | None:
        r = self.r
        if "port" in value and "ports" in value:
            r.error(value["ports"], path, "port and ports are mutually exclusive; use ports "
                    "for multiple ports")
            return None
        if "port" in value:
            port = self._port(value["port"], f"{path}.port")
            return None if port is None else (port,)
        if "ports" not in value:
            r.error(node, path, "endpoint has no port; it would never match",
                    hint="add `port: 443` (or `ports: [80, 443]`)")
            return None
        items = r.sequence(value["ports"], f"{path}.ports", "a list of ports")
        if items is None:
            return None
        if not items:
            r.error(value["ports"], f"{path}.ports", "ports is empty; the endpoint would never "
                    "match")
            return None
        ports: list[int] = []
        for i, item in enumerate(items):
            port = self._port(item, f"{path}.ports[{i}]")
            if port is None:
                return None
            if port in ports:
                r.warn(item, f"{path}.ports[{i}]", f"port {port} is listed twice")
            else:
                ports.append(port)
        return tuple(sorted(ports))

    def _port(self, node: yaml.Node, path: str) -> int | None:
        port = self.r.integer(node, path, "a port number 1-65535")
        if port is not None and not 1 <= port <= 65535:
            self.r.error(node, path, f"port {port} is out of range; expected 1-65535")
            return None
        return port

    def allowed_ips(self, node: yaml.Node, path: str) -> tuple[IPNetwork, ...]:
        r = self.r
        items = r.sequence(node, path, "a list of CIDRs or IP addresses")
        nets: list[IPNetwork] = []
        for i, item in enumerate(items or []):
            where = f"{path}[{i}]"
            text = r.string(item, where, "a CIDR or IP address")
            if text is None:
                continue
            try:
                net = ipaddress.ip_network(text.strip(), strict=False)
            except ValueError:
                r.error(item, where, f"'{text}' is not an IP address or CIDR (e.g. 10.0.5.0/24)")
                continue
            if net.prefixlen == 0:
                r.error(item, where, f"'{text}' matches every address; allowed_ips must name "
                        "the internal ranges this endpoint may reach")
                continue
            blocked = blocked_overlap(net)
            if blocked is not None:
                r.error(item, where, f"'{text}' overlaps the always-blocked range "
                        f"{classify(blocked.network_address).reason}; loopback, link-local and "
                        "unspecified addresses are never reachable")
                continue
            if net.prefixlen < BROAD_PREFIX[net.version]:
                r.warn(item, where, f"'{text}' is a very broad range (shorter than "
                       f"/{BROAD_PREFIX[net.version]}); SSRF protection is lifted for all of it")
            nets.append(net)
        return tuple(nets)


def _binary_problem(value: str) -> tuple[str, str | None] | None:
    """Why a binary path could never match an executable's path, or None."""
    if not value:
        return "binary path is empty", None
    if len(value) > MAX_BINARY_LENGTH or not value.isprintable():
        return f"binary path {value[:80]!r} is too long or has control characters", None
    if not value.startswith("/"):
        return (f"binary path must be absolute, got '{value}'",
                f"use the full path, e.g. the output of `readlink -f $(command -v {value})`")
    segments = value.split("/")[1:]
    if any(s in (".", "..") for s in segments) or "" in segments[:-1] or value.endswith("/"):
        return (f"binary path '{value}' is not canonical ('.', '..', '//' or a trailing '/'); "
                "executable paths never contain those", None)
    return None
