"""The policy layer (sans-IO): OpenShell policy YAML -> typed model -> compiled decision engine.

    load_policy_file / check_policy_file   loader.py     YAML -> Policy, located diagnostics
    compile_policy -> Engine.decide        engine.py     L4 decision (host, port, binary)
    check_request -> RequestDecision       l7.py         L7 REST decision on an allowed connection
    canonicalize_target                    target.py     request-target canonicalisation
    policy_sha256 / dump_policy            canonical.py  canonical form, hash, YAML round trip
    default_policy                         default.py    the built-in starting point
    static_differences / merge_rule        reload.py     hot reload and proposal approval
"""

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
from .reload import merge_rule, static_differences
from .target import CanonicalTarget, InvalidTarget, canonicalize_target

__all__ = [
    "CanonicalTarget", "CheckResult", "Decision", "Diagnostic", "Engine", "InvalidTarget",
    "Policy", "PolicyError", "RequestDecision", "canonical_json", "canonicalize_target",
    "check_policy_file", "check_policy_text", "check_request", "compile_policy",
    "default_policy", "default_policy_text", "dump_policy", "load_policy_file",
    "load_policy_text", "merge_rule", "policy_sha256", "static_differences",
]
