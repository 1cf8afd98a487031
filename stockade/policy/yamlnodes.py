"""Typed reads from a composed YAML node tree, recording a located diagnostic for each problem.

The policy is composed (not constructed) with PyYAML's safe loader, so every value keeps its
line and column and nothing is ever instantiated from a tag. Reads are strict in the way serde
is for OpenShell (unknown keys, wrong types), and stricter where YAML 1.1 would silently turn
`yes` into a boolean or `0x1BB` into a port. A failed read returns None and the caller moves on,
so one pass collects every error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
import yaml

from ..records import Struct, field
from .diagnostics import ERROR, WARNING, Diagnostic, did_you_mean, one_of

_CORE = "tag:yaml.org,2002:"
STR, INT, BOOL, NULL, FLOAT = (_CORE + t for t in ("str", "int", "bool", "null", "float"))
SCALAR_TAGS = frozenset({STR, INT, BOOL, NULL, FLOAT, _CORE + "timestamp"})
MAP, SEQ = _CORE + "map", _CORE + "seq"
MAX_NODES = 200_000  # aliases can make a small file a huge tree; refuse it instead of walking it

_DECIMAL = re.compile(r"[+]?[0-9]+")
_TRUE, _FALSE = frozenset({"true", "True", "TRUE"}), frozenset({"false", "False", "FALSE"})


def compose(text: str, source: str) -> yaml.Node | None:
    """The node tree of one YAML document (None for an empty one); raises yaml.YAMLError."""
    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = loader_cls(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def describe(node: yaml.Node) -> str:
    """How a node reads in an error message: `string 'x'`, `a list`, `null`..."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    kind = {STR: "string", INT: "integer", BOOL: "boolean", NULL: "null", FLOAT: "number"}
    if node.tag == NULL:
        return "null (an empty value)"
    return f"{kind.get(node.tag, node.tag)} {_quote(node.value)}"


def _quote(value: str) -> str:
    text = value if len(value) <= 80 else value[:77] + "..."
    return repr(text) if any(c in text for c in "'\n\t") else f"'{text}'"


class Reader(Struct):
    """Collects diagnostics while the loader walks the tree."""

    source: str
    diagnostics: list[Diagnostic] = field(default_factory=list)
    nodes_seen: int = 0

    # -- recording -------------------------------------------------------------------------------

    def error(self, node: yaml.Node | None, path: str, message: str, hint: str | None = None) -> None:
        self._add(ERROR, node, path, message, hint)

    def warn(self, node: yaml.Node | None, path: str, message: str, hint: str | None = None) -> None:
        self._add(WARNING, node, path, message, hint)

    def _add(self, severity: str, node: yaml.Node | None, path: str, message: str,
             hint: str | None) -> None:
        line = node.start_mark.line + 1 if node is not None else 0
        column = node.start_mark.column + 1 if node is not None else 0
        self.diagnostics.append(Diagnostic(severity, message, self.source, line, column, path, hint))

    @property
    def failed(self) -> bool:
        return any(d.is_error for d in self.diagnostics)

    def count(self, node: yaml.Node) -> bool:
        """Count a visited node; False (with one error) once the tree is absurdly large."""
        self.nodes_seen += 1
        if self.nodes_seen == MAX_NODES:
            self.error(node, "", f"the policy expands to more than {MAX_NODES} YAML nodes "
                       "(through aliases?); refusing to read it")
        return self.nodes_seen < MAX_NODES

    # -- structure -------------------------------------------------------------------------------

    def mapping(self, node: yaml.Node, path: str, known: Sequence[str], *,
                what: str = "a mapping", unsupported: dict[str, str] | None = None,
                ) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        """The entries of a mapping whose keys must all be in `known`. Null reads as empty."""
        if node.tag == NULL:
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.error(node, path, f"expected {what}, got {describe(node)}")
            return None
        entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = self.key(key_node, path)
            if key is None:
                continue
            where = f"{path}.{key}" if path else key
            if key in entries:
                first = entries[key][0].start_mark.line + 1
                self.error(key_node, where, f"duplicate key '{key}' (first given on line {first})")
                continue
            if key not in known:
                self._unknown_key(key_node, path, key, known, unsupported or {})
                continue
            entries[key] = (key_node, value_node)
        return entries

    def _unknown_key(self, key_node: yaml.Node, path: str, key: str, known: Sequence[str],
                     unsupported: dict[str, str]) -> None:
        if key in unsupported:
            self.error(key_node, path, f"key '{key}' is not supported by stockade: {unsupported[key]}")
            return
        if key == "<<":
            self.error(key_node, path, "YAML merge keys ('<<') are not supported; "
                       "write the keys out (anchors and aliases are fine)")
            return
        self.error(key_node, path, f"unknown key '{key}'{did_you_mean(key, known)}; "
                   f"expected one of: {one_of(known)}")

    def key(self, node: yaml.Node, path: str) -> str | None:
        if node.tag == _CORE + "merge":
            return "<<"  # reported as an unsupported merge key by the caller
        if not isinstance(node, yaml.ScalarNode) or node.tag not in SCALAR_TAGS or node.tag == NULL:
            self.error(node, path, f"a key must be a string, got {describe(node)}")
            return None
        return node.value

    def sequence(self, node: yaml.Node, path: str, what: str = "a list") -> list[yaml.Node] | None:
        """The items of a list. Null reads as an empty list."""
        if node.tag == NULL:
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, path, f"expected {what}, got {describe(node)}")
            return None
        return list(node.value)

    # -- scalars ---------------------------------------------------------------------------------

    def string(self, node: yaml.Node, path: str, what: str = "a string") -> str | None:
        """A scalar as written: `run_as_user: 1000` reads as the string '1000', as in serde."""
        if not isinstance(node, yaml.ScalarNode) or node.tag == NULL:
            self.error(node, path, f"expected {what}, got {describe(node)}")
            return None
        if node.tag not in SCALAR_TAGS:
            self.error(node, path, f"unsupported YAML tag {node.tag}; expected {what}")
            return None
        return node.value

    def integer(self, node: yaml.Node, path: str, what: str = "an integer") -> int | None:
        """A plain decimal integer: not a quoted string, a boolean, a float or 0x/0o notation."""
        if (isinstance(node, yaml.ScalarNode) and node.tag == INT and not node.style
                and _DECIMAL.fullmatch(node.value)):
            return int(node.value)
        self.error(node, path, f"expected {what}, got {describe(node)}")
        return None

    def boolean(self, node: yaml.Node, path: str) -> bool | None:
        """`true` or `false` only: YAML 1.1's yes/no/on/off are refused (serde reads YAML 1.2)."""
        if isinstance(node, yaml.ScalarNode) and not node.style:
            if node.value in _TRUE:
                return True
            if node.value in _FALSE:
                return False
        self.error(node, path, f"expected true or false, got {describe(node)}")
        return None

    def choice(self, node: yaml.Node, path: str, choices: Iterable[str], *,
               casefold: bool = False, extra: Iterable[str] = ()) -> str | None:
        """One value of an enum. `extra` values are accepted but not advertised (deprecated)."""
        value = self.string(node, path)
        if value is None:
            return None
        allowed = list(choices)
        candidate = value.lower() if casefold else value
        if candidate in allowed or candidate in set(extra):
            return candidate
        shown = "empty string" if value == "" else f"'{value}'"
        self.error(node, path, f"{shown} is not a valid value{did_you_mean(value, allowed)}; "
                   f"expected one of: {one_of(allowed)}")
        return None
