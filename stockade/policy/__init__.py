"""The policy layer (sans-IO): OpenShell policy YAML -> typed model -> compiled decision engine.

    load_policy_file / check_policy_file   loader.py     YAML -> Policy, located diagnostics
    compile_policy -> Engine.decide        engine.py     L4 decision (host, port, binary)
    check_request -> RequestDecision       l7.py         L7 REST decision on an allowed connection
    canonicalize_target                    target.py     request-target canonicalisation
    policy_sha256 / dump_policy            canonical.py  canonical form, hash, YAML round trip
    default_policy                         default.py    the built-in starting point
    static_differences                     reload.py     what a hot reload may not change
    merge_proposed_rule -> Merge           reload.py     proposal approval

The names below are re-exported lazily (PEP 562): `stockade run` imports `policy.model`, the
loader and the default policy before it starts the sandbox, and should not pay for the engine,
the L7 matcher, reload and the canonical form on that path.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# name -> the submodule that defines it
_EXPORTS = {
    "canonical_json": "canonical", "dump_policy": "canonical", "policy_sha256": "canonical",
    "default_policy": "default", "default_policy_text": "default",
    "Diagnostic": "diagnostics", "PolicyError": "diagnostics",
    "Decision": "engine", "Engine": "engine", "compile_policy": "engine",
    "RequestDecision": "l7", "check_request": "l7",
    "CheckResult": "loader", "check_policy_file": "loader", "check_policy_text": "loader",
    "load_policy_file": "loader", "load_policy_text": "loader",
    "Policy": "model",
    "Merge": "reload", "merge_proposed_rule": "reload", "static_differences": "reload",
    "CanonicalTarget": "target", "InvalidTarget": "target", "canonicalize_target": "target",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # once resolved, a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from .canonical import canonical_json, dump_policy, policy_sha256
    from .default import default_policy, default_policy_text
    from .diagnostics import Diagnostic, PolicyError
    from .engine import Decision, Engine, compile_policy
    from .l7 import RequestDecision, check_request
    from .loader import (
        CheckResult,
        check_policy_file,
        check_policy_text,
        load_policy_file,
        load_policy_text,
    )
    from .model import Policy
    from .reload import Merge, merge_proposed_rule, static_differences
    from .target import CanonicalTarget, InvalidTarget, canonicalize_target
