"""OpenShell policy YAML -> the typed Policy, with every problem reported at its line and column.

The schema is OpenShell's (policy.md §1). The checks are stricter where OpenShell's leniency
hides mistakes (§1.8 "not validated anywhere"): enum typos, a `version` other than 1, `port`
with `ports`, L7 rules without `protocol`, bad globs, unsafe `allowed_ips`. Those are errors;
risky but valid choices are warnings. One pass collects them all.

Defaults are OpenShell's: `enforcement` absent means audit (with a warning), a missing
`filesystem_policy` section means include_workdir true while a present section without the key
means false, `landlock.compatibility` absent means best_effort.

Decisions where OpenShell was silent or lenient (each reported with the value and the fix):
- A query matcher may be written `{glob: x}` (OpenShell's YAML rejects it, its proto and its
  validator accept it); it means the same as the string `x`.
- `protocol` is read case-insensitively, as OpenShell does; other enums are exact, with a
  "did you mean" for a case slip.
- `rules`/`access` without `protocol`, REST rules without `method` or `path`, binaries and
  request paths that can never match a real value (relative, `..`, `//`) are errors.
- `process.run_as_user/run_as_group` may be any user name or numeric id except root (HEAD's
  rule); `process.seccomp.allow` is our own key and may only list `memfd_create`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType

import yaml

from ..records import Struct
from . import rules as _rules
from .diagnostics import Diagnostic, PolicyError
from .model import (
    Compatibility,
    FilesystemPolicy,
    LandlockPolicy,
    NetworkRule,
    Policy,
    ProcessPolicy,
)
from .yamlnodes import Reader, compose

MAX_POLICY_BYTES = 4 * 1024 * 1024
MAX_FILESYSTEM_PATHS = 256  # OpenShell's MAX_FILESYSTEM_PATHS
MAX_PATH_LENGTH = 4096  # OpenShell's MAX_PATH_LENGTH
SECCOMP_LIFTABLE = ("memfd_create",)

TOP_KEYS = ("version", "filesystem_policy", "landlock", "process", "network_policies")
FILESYSTEM_KEYS = ("include_workdir", "read_only", "read_write")
LANDLOCK_KEYS = ("compatibility",)
PROCESS_KEYS = ("run_as_user", "run_as_group", "seccomp")
SECCOMP_KEYS = ("allow",)
_ROOT_IDS = frozenset({"root", "0"})


class CheckResult(Struct, frozen=True):
    """The outcome of checking one policy: the Policy when there is no error, and every finding."""

    source: str
    policy: Policy | None
    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        return self.policy is not None

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.is_error)

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if not d.is_error)

    def policy_or_raise(self) -> Policy:
        if self.policy is None:
            raise PolicyError(self.diagnostics)
        return self.policy


def check_policy_text(text: str, source: str = "<string>") -> CheckResult:
    """Parse and validate a policy; never raises for bad input (the result carries errors)."""
    reader = Reader(source)
    if len(text.encode("utf-8", "surrogatepass")) > MAX_POLICY_BYTES:
        reader.error(None, "", f"the policy is larger than {MAX_POLICY_BYTES} bytes")
        return CheckResult(source, None, tuple(reader.diagnostics))
    try:
        root = compose(text, source)
    except yaml.YAMLError as exc:
        reader.diagnostics.append(_yaml_error(exc, source))
        return CheckResult(source, None, tuple(reader.diagnostics))
    policy = _Loader(reader).policy(root)
    # Sorted by place; an aliased node reports its problem once, not once per alias.
    diagnostics = tuple(sorted(dict.fromkeys(reader.diagnostics),
                               key=lambda d: (d.line, d.column)))
    if reader.failed:
        policy = None
    return CheckResult(source, policy, diagnostics)


def load_policy_text(text: str, source: str = "<string>") -> Policy:
    """The Policy of `text`; raises PolicyError listing every error."""
    return check_policy_text(text, source).policy_or_raise()


def check_policy_file(path: str | os.PathLike[str]) -> CheckResult:
    """Read and check a policy file (the one I/O edge of the policy package)."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            data = f.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return CheckResult(source, None, (Diagnostic("error", f"cannot read the policy: {reason}",
                                                     source, 0, 0),))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return CheckResult(source, None, (Diagnostic(
            "error", f"the policy is not UTF-8 (invalid byte at offset {exc.start})", source, 0, 0),))
    return check_policy_text(text, source)


def load_policy_file(path: str | os.PathLike[str]) -> Policy:
    """The Policy in a file; raises PolicyError listing every error."""
    return check_policy_file(path).policy_or_raise()


def _yaml_error(exc: yaml.YAMLError, source: str) -> Diagnostic:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
    return Diagnostic("error", message, source, line, column)


class _Loader:
    """Walks the node tree section by section; each method returns None when it failed."""

    def __init__(self, reader: Reader) -> None:
        self.r = reader

    def policy(self, root: yaml.Node | None) -> Policy | None:
        r = self.r
        if root is None:
            r.error(None, "", "the policy is empty; expected a mapping starting with `version: 1`")
            return None
        entries = r.mapping(root, "", TOP_KEYS, what="a mapping with `version: 1` at the top")
        if entries is None:
            return None
        version = self._version(root, entries)
        filesystem = self._filesystem(entries["filesystem_policy"][1]) \
            if "filesystem_policy" in entries else None
        landlock = self._landlock(entries["landlock"][1]) if "landlock" in entries else None
        process = self._process(entries["process"][1]) if "process" in entries else None
        network: dict[str, NetworkRule] = {}
        if "network_policies" in entries:
            network = _rules.RuleReader(r).network_policies(entries["network_policies"][1])
        if version is None:
            return None
        return Policy(version, filesystem, landlock, process, MappingProxyType(network),
                      source=r.source)

    def _version(self, root: yaml.Node, entries: Mapping[str, tuple[yaml.Node, yaml.Node]],
                 ) -> int | None:
        if "version" not in entries:
            self.r.error(root, "", "missing required key 'version'", hint="add `version: 1`")
            return None
        node = entries["version"][1]
        version = self.r.integer(node, "version", "the integer 1")
        if version is not None and version != 1:
            self.r.error(node, "version", f"unsupported version {version}; expected 1")
            return None
        return version

    # -- static sections ----------------------------------------------------------------------

    def _filesystem(self, node: yaml.Node) -> FilesystemPolicy | None:
        r, path = self.r, "filesystem_policy"
        if node.tag.endswith(":null"):
            return None  # `filesystem_policy:` with nothing: serde reads it as absent
        entries = r.mapping(node, path, FILESYSTEM_KEYS)
        if entries is None:
            return None
        include = False  # a present section without the key means false (policy.md §1.2)
        if "include_workdir" in entries:
            include = r.boolean(entries["include_workdir"][1], f"{path}.include_workdir") or False
        lists: dict[str, list[str]] = {}
        raw_count = 0
        for key in ("read_only", "read_write"):
            lists[key] = []
            if key not in entries:
                continue
            items = r.sequence(entries[key][1], f"{path}.{key}", "a list of absolute paths")
            raw_count += len(items or [])
            for i, item in enumerate(items or []):
                if not r.count(item):
                    break
                p = self._fs_path(item, f"{path}.{key}[{i}]", read_write=key == "read_write")
                if p is None:
                    continue
                if p in lists[key]:
                    r.warn(item, f"{path}.{key}[{i}]", f"'{p}' is listed twice")
                    continue
                lists[key].append(p)
        if raw_count > MAX_FILESYSTEM_PATHS:
            r.error(node, path, f"too many filesystem paths ({raw_count} > {MAX_FILESYSTEM_PATHS})")
        for p in set(lists["read_only"]) & set(lists["read_write"]):
            r.warn(entries["read_only"][1], f"{path}.read_only",
                   f"'{p}' is in both read_only and read_write; it will be writable")
        return FilesystemPolicy(include, tuple(lists["read_only"]), tuple(lists["read_write"]))

    def _fs_path(self, node: yaml.Node, path: str, *, read_write: bool) -> str | None:
        r = self.r
        value = r.string(node, path, "an absolute path")
        if value is None:
            return None
        if len(value.encode()) > MAX_PATH_LENGTH:
            shown = value if len(value) <= 80 else value[:77] + "..."
            r.error(node, path, f"path exceeds maximum length ({len(value.encode())} > "
                    f"{MAX_PATH_LENGTH}): {shown}")
            return None
        if "\0" in value:
            r.error(node, path, f"path {value!r} contains a NUL byte")
            return None
        if not value.startswith("/"):
            r.error(node, path, f"path must be absolute (start with '/'): '{value}'")
            return None
        if ".." in value.split("/"):
            r.error(node, path, f"path contains '..' traversal component: '{value}'",
                    hint="write the resolved absolute path")
            return None
        normal = normalize_path(value)
        if read_write and normal == "/":
            r.error(node, path, f"read-write path is overly broad: '{value}'",
                    hint="list the directories the agent must write, e.g. /tmp")
            return None
        if any(c in value for c in "*?["):
            r.warn(node, path, f"'{value}' is taken literally: filesystem paths are not globs")
        return normal

    def _landlock(self, node: yaml.Node) -> LandlockPolicy | None:
        if node.tag.endswith(":null"):
            return None
        entries = self.r.mapping(node, "landlock", LANDLOCK_KEYS)
        if entries is None:
            return None
        if "compatibility" not in entries:
            return LandlockPolicy()
        value = self.r.choice(entries["compatibility"][1], "landlock.compatibility",
                              [c.value for c in Compatibility])
        return LandlockPolicy(Compatibility(value)) if value else None

    def _process(self, node: yaml.Node) -> ProcessPolicy | None:
        r = self.r
        if node.tag.endswith(":null"):
            return None
        entries = r.mapping(node, "process", PROCESS_KEYS)
        if entries is None:
            return None
        ids: dict[str, str | None] = {}
        for key in ("run_as_user", "run_as_group"):
            ids[key] = None
            if key not in entries:
                continue
            value_node = entries[key][1]
            value = r.string(value_node, f"process.{key}", "a user or group name")
            if value is None:
                continue
            if value.lower() in _ROOT_IDS:
                r.error(value_node, f"process.{key}", f"{key} must not be root, got '{value}'",
                        hint="name an unprivileged account, e.g. `sandbox` or 1000")
            elif not _valid_account(value):
                shown = "empty string" if not value else f"'{value}'"
                r.error(value_node, f"process.{key}", f"{shown} is not a valid user or group "
                        "name (letters, digits, '_', '-', '.'; or a numeric id)",
                        hint="omit the key to keep the current user")
            else:
                ids[key] = value
        seccomp: frozenset[str] = frozenset()
        if "seccomp" in entries:
            seccomp = self._seccomp(entries["seccomp"][1])
        return ProcessPolicy(ids["run_as_user"], ids["run_as_group"], seccomp)

    def _seccomp(self, node: yaml.Node) -> frozenset[str]:
        r = self.r
        entries = r.mapping(node, "process.seccomp", SECCOMP_KEYS)
        names: set[str] = set()
        if not entries or "allow" not in entries:
            return frozenset()
        items = r.sequence(entries["allow"][1], "process.seccomp.allow", "a list of syscall names")
        for i, item in enumerate(items or []):
            name = r.choice(item, f"process.seccomp.allow[{i}]", SECCOMP_LIFTABLE)
            if name:
                names.add(name)
        return frozenset(names)


def normalize_path(path: str) -> str:
    """OpenShell's lexical normalisation: collapse `//`, drop `.`, drop a trailing `/`; keep `..`."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return "/" + "/".join(parts)


def _valid_account(name: str) -> bool:
    if name.isdigit():
        return len(name) <= 10
    return (0 < len(name) <= 32 and (name[0].isalpha() or name[0] == "_")
            and all(c.isalnum() or c in "_-." for c in name) and name.isascii())
