"""The built-in default policy (default.yaml): read-only system paths, a writable working
directory and /tmp, Landlock best effort, and no network rules (all egress denied except the
inference endpoint, which the proxy serves without policy).

best_effort rather than hard_requirement: the default must start on every kernel and every
distribution (`/lib64` does not exist everywhere, old kernels lack Landlock); the startup report
says what is not enforced, and a policy can ask for hard_requirement.

default.yaml is the only source of the default policy. `stockade run` without --policy would
spend ~35 ms importing PyYAML and the loader to read these 30 lines, so this module also holds
the Policy the loader makes of them, and returns it while default.yaml is byte for byte the text
it was made from (its length and CRC-32 below). Any other text goes through the loader.
tests/policy/test_default.py checks that the copy equals the loader's result and that it is
the one in use, so an edit to default.yaml alone fails the tests, never the policy.
"""

from __future__ import annotations

import functools
import os
import zlib
from types import MappingProxyType

from .model import Compatibility, FilesystemPolicy, LandlockPolicy, Policy

DEFAULT_SOURCE = "<default>"

# The text the prebuilt policy was made from (update both with default.yaml).
PREBUILT_TEXT_LENGTH = 1522
PREBUILT_TEXT_CRC32 = 0xD5BCFD80


@functools.cache
def default_policy_text() -> str:
    """The YAML of the default policy, with its comments (what `stockade policy default` prints)."""
    # A plain read beside this module: the package is always installed as files (pyproject's
    # package-data), and importlib.resources costs ~10 ms of imports (zipfile, tempfile...).
    with open(os.path.join(os.path.dirname(__file__), "default.yaml"), encoding="utf-8") as f:
        return f.read()


def default_policy() -> Policy:
    """The default policy, validated like any other."""
    text = default_policy_text()
    if prebuilt_applies(text):
        return _prebuilt()
    from .loader import load_policy_text

    return load_policy_text(text, DEFAULT_SOURCE)


def prebuilt_applies(text: str) -> bool:
    data = text.encode("utf-8")
    return len(data) == PREBUILT_TEXT_LENGTH and zlib.crc32(data) == PREBUILT_TEXT_CRC32


def _prebuilt() -> Policy:
    """load_policy_text(default.yaml, DEFAULT_SOURCE), as the loader builds it."""
    return Policy(
        version=1,
        filesystem=FilesystemPolicy(
            include_workdir=True,
            read_only=("/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc", "/opt", "/proc", "/dev/urandom",
                       "/dev/random", "/dev/zero"),
            read_write=("/tmp", "/dev/null"),
        ),
        landlock=LandlockPolicy(compatibility=Compatibility.BEST_EFFORT),
        process=None,
        network_policies=MappingProxyType({}),
        source=DEFAULT_SOURCE,
    )
