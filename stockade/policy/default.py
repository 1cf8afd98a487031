"""The built-in default policy (default.yaml): read-only system paths, a writable working
directory and /tmp, Landlock best effort, and no network rules (all egress denied except the
inference endpoint, which the proxy serves without policy).

best_effort rather than hard_requirement: the default must start on every kernel and every
distribution (`/lib64` does not exist everywhere, old kernels lack Landlock); the startup report
says what is not enforced, and a policy can ask for hard_requirement.
"""

from __future__ import annotations

import functools
import os

from .loader import load_policy_text
from .model import Policy

DEFAULT_SOURCE = "<default>"


@functools.cache
def default_policy_text() -> str:
    """The YAML of the default policy, with its comments (what `stockade policy default` prints)."""
    # A plain read beside this module: the package is always installed as files (pyproject's
    # package-data), and importlib.resources costs ~10 ms of imports (zipfile, tempfile...).
    with open(os.path.join(os.path.dirname(__file__), "default.yaml"), encoding="utf-8") as f:
        return f.read()


def default_policy() -> Policy:
    """The default policy, validated like any other."""
    return load_policy_text(default_policy_text(), DEFAULT_SOURCE)
