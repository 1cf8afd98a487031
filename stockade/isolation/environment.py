"""The command's environment: the user's, plus the proxy, the sandbox's name and the CA files.

One pure function. `overrides` replace user variables the sandbox must not hold as they are:
`--secret` values become their placeholders, inference route keys become a placeholder the
router strips (stockade/inference/sandbox.py), so a secret never enters the sandbox.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..records import Struct

NO_PROXY = "127.0.0.1,localhost,::1"
CA_DIR = "/run/stockade"  # in the namespace mode: private to the sandbox, read-only
CA_FILE = "ca.pem"
BUNDLE_FILE = "ca-bundle.pem"
# Variables that point TLS clients to the merged bundle (system roots + the sandbox CA).
BUNDLE_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "PIP_CERT")
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
# Stockade's own variables that must not leak into the sandbox (none are secret today; the
# list is where supervisor-only settings go).
STRIPPED: tuple[str, ...] = ()


class EnvironmentInputs(Struct, frozen=True):
    sandbox: str
    proxy_url: str  # http://127.0.0.1:3128
    ca_dir: str = CA_DIR
    # Root mode: the run-as user's USER, LOGNAME and HOME replace root's.
    identity: tuple[tuple[str, str], ...] = ()
    # Applied over the user's environment (before stockade's own variables, which always win).
    overrides: tuple[tuple[str, str], ...] = ()


def build_environment(user_env: Mapping[str, str], inputs: EnvironmentInputs) -> dict[str, str]:
    env = {k: v for k, v in user_env.items() if k not in STRIPPED}
    env.update(inputs.identity)
    env.update(inputs.overrides)
    for name in PROXY_VARIABLES:
        env[name] = env[name.lower()] = inputs.proxy_url
    env["NO_PROXY"] = env["no_proxy"] = NO_PROXY
    env["STOCKADE_SANDBOX"] = inputs.sandbox
    bundle = f"{inputs.ca_dir}/{BUNDLE_FILE}"
    for name in BUNDLE_VARIABLES:
        env[name] = bundle
    env["NODE_EXTRA_CA_CERTS"] = f"{inputs.ca_dir}/{CA_FILE}"
    return env
