"""The typed policy model: what a validated OpenShell policy YAML becomes.

Every value here has already been validated by the loader; code that consumes a Policy never
re-checks it. Instances are immutable so a policy generation can be shared across threads and
swapped atomically on hot reload.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from types import MappingProxyType

from ..records import Struct, field

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Compatibility(enum.Enum):
    """`landlock.compatibility`: what to do when a Landlock layer cannot be applied."""

    BEST_EFFORT = "best_effort"
    HARD_REQUIREMENT = "hard_requirement"


class Protocol(enum.Enum):
    """`endpoint.protocol`: which L7 inspection applies (absent = L4 only)."""

    REST = "rest"
    SQL = "sql"


class Tls(enum.Enum):
    """`endpoint.tls`: AUTO terminates only where L7 rules or credentials need it; SKIP never."""

    AUTO = "auto"  # the key absent; `terminate` and `passthrough` (deprecated) also mean AUTO
    SKIP = "skip"


class Enforcement(enum.Enum):
    """`endpoint.enforcement`: ENFORCE answers 403 to an L7 violation, AUDIT forwards and records."""

    ENFORCE = "enforce"
    AUDIT = "audit"


class Access(enum.Enum):
    """`endpoint.access`: a preset that expands to L7 allow rules at load time."""

    READ_ONLY = "read-only"
    READ_WRITE = "read-write"
    FULL = "full"


class FilesystemPolicy(Struct, frozen=True):
    include_workdir: bool
    read_only: tuple[str, ...]
    read_write: tuple[str, ...]


class LandlockPolicy(Struct, frozen=True):
    compatibility: Compatibility = Compatibility.BEST_EFFORT


class ProcessPolicy(Struct, frozen=True):
    run_as_user: str | None = None
    run_as_group: str | None = None
    # Our own optional key `process.seccomp.allow`: syscalls lifted from the default denylist.
    # Only `memfd_create` may be lifted (JIT runtimes, CUDA).
    seccomp_allow: frozenset[str] = frozenset()


class QueryMatcher(Struct, frozen=True):
    """One `query` entry of an allow rule: every value of the parameter must match one glob.

    YAML `tag: "foo-*"` gives globs=("foo-*",); `tag: {any: [a-*, b-*]}` gives both globs.
    """

    globs: tuple[str, ...]


class L7Allow(Struct, frozen=True):
    """One `rules[].allow` entry. None means the key was absent."""

    method: str | None = None
    path: str | None = None
    command: str | None = None
    query: Mapping[str, QueryMatcher] = field(default_factory=lambda: MappingProxyType({}))


class Endpoint(Struct, frozen=True):
    host: str  # lower-cased; "" only together with allowed_ips (any host on these ports)
    ports: tuple[int, ...]
    protocol: Protocol | None = None
    tls: Tls = Tls.AUTO
    enforcement: Enforcement = Enforcement.AUDIT
    enforcement_explicit: bool = False  # False when the key was absent (OpenShell's audit default)
    access: Access | None = None
    # The allow rules after preset expansion (`access` becomes rules here).
    rules: tuple[L7Allow, ...] = ()
    allowed_ips: tuple[IPNetwork, ...] = ()

    @property
    def has_extended_config(self) -> bool:
        """OpenShell's test for the endpoint whose L7/TLS/SSRF settings apply (policy.md §3.5)."""
        return self.protocol is not None or bool(self.allowed_ips) or self.tls is Tls.SKIP


class Binary(Struct, frozen=True):
    path: str  # absolute path, or a glob with `/` as separator


class NetworkRule(Struct, frozen=True):
    key: str  # the map key: the rule's identity everywhere (logs, 403 bodies, merges)
    name: str  # display name; the key when `name` is absent
    endpoints: tuple[Endpoint, ...]
    binaries: tuple[Binary, ...]


class Policy(Struct, frozen=True):
    version: int
    filesystem: FilesystemPolicy | None
    landlock: LandlockPolicy | None
    process: ProcessPolicy | None
    network_policies: Mapping[str, NetworkRule]
    # Where the policy came from (a path, "<default>", "<string>"); not part of its identity.
    source: str = "<string>"

    # `source` is left out of equality by hand (a Struct has no per-field compare=False): the
    # same policy read from another file is the same policy. Hashing raises TypeError on the
    # `network_policies` mapping.
    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._identity() == other._identity()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._identity())

    def _identity(self) -> tuple[object, ...]:
        return (self.version, self.filesystem, self.landlock, self.process, self.network_policies)


# The methods each `access` preset stands for (policy.md §1.5); every preset path is `**`.
ACCESS_METHODS: Mapping[Access, tuple[str, ...]] = MappingProxyType({
    Access.READ_ONLY: ("GET", "HEAD", "OPTIONS"),
    Access.READ_WRITE: ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH"),
    Access.FULL: ("*",),
})


def expand_access(access: Access) -> tuple[L7Allow, ...]:
    """The explicit allow rules an `access` preset expands to at load time."""
    return tuple(L7Allow(method=m, path="**") for m in ACCESS_METHODS[access])
