"""The L7 part of an endpoint: `rules: [- allow: {method, path, command, query}]` (policy.md §1.5).

Part of the loader. Request-path patterns are checked against what canonical request paths can
look like (target.py), so a pattern that could never match (`repos/**`, `/a/../b`, `/%61`,
non-ASCII) is an error instead of a silent deny. Query matchers are a glob string, `{any: [...]}`,
or `{glob: x}` (accepted as the string form).
"""

from __future__ import annotations

import re
from types import MappingProxyType
from urllib.parse import quote

import yaml

from .diagnostics import did_you_mean
from .glob import GlobError, path_glob, query_glob
from .model import L7Allow, Protocol, QueryMatcher
from .yamlnodes import NULL, Reader, describe

RULE_ITEM_KEYS = ("allow",)
ALLOW_KEYS = ("method", "path", "command", "query")
MATCHER_KEYS = ("any", "glob")
KNOWN_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_PCT = re.compile(r"%(..?)")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class L7RuleReader:
    def __init__(self, reader: Reader) -> None:
        self.r = reader

    def l7_rules(self, node: yaml.Node, path: str, protocol: Protocol | None,
                 ) -> tuple[L7Allow, ...]:
        r = self.r
        items = r.sequence(node, path, "a list of `- allow: {...}` items")
        if items is None:
            return ()
        if not items:
            r.error(node, path, "rules list cannot be empty (would deny all traffic)",
                    hint="use `access: full` or list the allowed requests")
            return ()
        result = []
        for i, item in enumerate(items):
            if not r.count(item):
                break
            where = f"{path}[{i}]"
            entries = r.mapping(item, where, RULE_ITEM_KEYS, what="a mapping with `allow`")
            if entries is None:
                continue
            if "allow" not in entries:
                r.error(item, where, "missing required key 'allow'")
                continue
            allow = self.allow(entries["allow"][1], f"{where}.allow", protocol)
            if allow is not None:
                result.append(allow)
        return tuple(result)

    def allow(self, node: yaml.Node, path: str, protocol: Protocol | None) -> L7Allow | None:
        r = self.r
        entries = r.mapping(node, path, ALLOW_KEYS)
        if entries is None:
            return None
        value = {k: v for k, (_, v) in entries.items()}
        ok = True
        method = request_path = command = None
        query: dict[str, QueryMatcher] = {}
        if protocol is Protocol.SQL:
            for key in ("method", "path", "query"):
                if key in entries:
                    r.warn(entries[key][0], f"{path}.{key}", f"'{key}' is ignored for "
                           "protocol: sql")
            if "command" not in value:
                r.error(node, path, "a SQL rule needs 'command' (e.g. SELECT, or '*')")
                return None
            command = r.string(value["command"], f"{path}.command")
            return L7Allow(command=command.upper()) if command else None
        if "command" in entries:
            r.warn(entries["command"][0], f"{path}.command", "'command' is only used by "
                   "protocol: sql; it is ignored here")
        if "method" not in value:
            r.error(node, path, "missing 'method'; a rule without one never matches",
                    hint="use `method: '*'` for any method")
            ok = False
        else:
            method = self.method(value["method"], f"{path}.method")
            ok = ok and method is not None
        if "path" not in value:
            r.error(node, path, "missing 'path'; a rule without one never matches",
                    hint="use `path: '**'` for any path")
            ok = False
        else:
            request_path = self.path_pattern(value["path"], f"{path}.path")
            ok = ok and request_path is not None
        if "query" in value:
            matchers = self.query(value["query"], f"{path}.query")
            ok = ok and matchers is not None
            query = matchers or {}
        if not ok:
            return None
        return L7Allow(method=method, path=request_path, query=MappingProxyType(query))

    def method(self, node: yaml.Node, path: str) -> str | None:
        r = self.r
        text = r.string(node, path, "an HTTP method or '*'")
        if text is None:
            return None
        if text != "*" and not _TOKEN.fullmatch(text):
            r.error(node, path, f"'{text}' is not an HTTP method; expected one of "
                    f"{', '.join(KNOWN_METHODS)} or '*'")
            return None
        method = text.upper()
        if method != "*" and method not in KNOWN_METHODS:
            r.warn(node, path, f"unknown HTTP method '{text}'{did_you_mean(method, KNOWN_METHODS)}"
                   f"; expected one of {', '.join(KNOWN_METHODS)} or '*'")
        return method

    def path_pattern(self, node: yaml.Node, path: str) -> str | None:
        r = self.r
        text = r.string(node, path, "a path glob starting with '/', or '**'")
        if text is None:
            return None
        problem = request_path_problem(text)
        if problem:
            r.error(node, path, problem[0], hint=problem[1])
            return None
        try:
            path_glob(text)
        except GlobError as exc:
            r.error(node, path, f"invalid glob: {exc}")
            return None
        return text

    def query(self, node: yaml.Node, path: str) -> dict[str, QueryMatcher] | None:
        r = self.r
        if not isinstance(node, yaml.MappingNode):
            r.error(node, path, "expected map of query matchers (parameter: glob), got "
                    f"{describe(node)}")
            return None
        result: dict[str, QueryMatcher] = {}
        ok = True
        for key_node, value_node in node.value:
            name = r.key(key_node, path)
            if name is None:
                ok = False
                continue
            where = f"{path}.{name}"
            if name in result or not name:
                r.error(key_node, where, "duplicate query parameter" if name else
                        "empty query parameter name")
                ok = False
                continue
            matcher = self.matcher(value_node, where)
            if matcher is None:
                ok = False
            else:
                result[name] = matcher
        return result if ok else None

    def matcher(self, node: yaml.Node, path: str) -> QueryMatcher | None:
        r = self.r
        if isinstance(node, yaml.ScalarNode) and node.tag != NULL:
            globs = [(node, path, r.string(node, path))]
        elif isinstance(node, yaml.MappingNode):
            entries = r.mapping(node, path, MATCHER_KEYS, what="a glob string or {any: [...]}")
            if entries is None:
                return None
            if "any" in entries and "glob" in entries:
                r.error(node, path, "matcher cannot specify both `glob` and `any`")
                return None
            if "glob" in entries:
                globs = [(entries["glob"][1], f"{path}.glob",
                          r.string(entries["glob"][1], f"{path}.glob", "a glob string"))]
            elif "any" in entries:
                items = r.sequence(entries["any"][1], f"{path}.any", "a list of glob strings")
                if items is None:
                    return None
                if not items:
                    r.error(entries["any"][1], f"{path}.any", "list must not be empty (the "
                            "parameter could never match)")
                    return None
                globs = [(n, f"{path}.any[{i}]", r.string(n, f"{path}.any[{i}]", "a glob string"))
                         for i, n in enumerate(items)]
            else:
                r.error(node, path, "object matcher requires `glob` string or non-empty `any` list")
                return None
        else:
            r.error(node, path, f"expected a glob string or {{any: [...]}}, got {describe(node)}")
            return None
        patterns = []
        for n, where, text in globs:
            if not r.count(n):
                return None
            if text is None:
                return None
            try:
                query_glob(text)
            except GlobError as exc:
                r.error(n, where, f"invalid glob: {exc}")
                return None
            patterns.append(text)
        return QueryMatcher(tuple(patterns))


def request_path_problem(text: str) -> tuple[str, str | None] | None:
    """Why a request-path pattern could never match a canonical request path, or None."""
    if text == "**":
        return None
    if not text.startswith("/"):
        return (f"path pattern must start with '/' (or be '**'), got '{text}'",
                f"write '/{text}'" if text else "use '**' for any path")
    bad = [c for c in text if not ("\x21" <= c <= "\x7e") or c == "#"]
    if bad:
        return (f"path pattern '{text}' contains {bad[0]!r}; canonical request paths never do",
                f"percent-encode it as requests carry it: '{quote(text, safe='/*?[]{}!,^')}'")
    segments = text.split("/")[1:]
    if any(s in (".", "..") for s in segments) or "" in segments[:-1]:
        return (f"path pattern '{text}' has a '.', '..' or empty segment; requests are "
                "canonicalised first, so it could never match", None)
    for m in _PCT.finditer(text):
        hexdigits = m.group(1)
        if len(hexdigits) < 2 or any(c not in "0123456789abcdefABCDEF" for c in hexdigits):
            return f"path pattern '{text}' has malformed percent-encoding", None
        char = chr(int(hexdigits, 16))
        if char in _UNRESERVED:
            return (f"path pattern '{text}' encodes '{char}' as %{hexdigits}; requests are "
                    "compared after decoding it", f"write '{char}' instead")
        if char == "/":
            return f"path pattern '{text}' contains %2F; encoded slashes are always refused", None
        if hexdigits != hexdigits.upper():
            return (f"path pattern '{text}' uses lower-case %{hexdigits}; canonical requests "
                    f"use upper case", f"write %{hexdigits.upper()}")
    return None
