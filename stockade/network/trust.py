"""The system trust store, and the bundle a sandbox trusts: the system's CAs and its own.

No cryptography here: the CA helper (isolation/camint.py) builds the bundle on the critical
path of `stockade run`, where importing cryptography costs ~100 ms.
"""

from __future__ import annotations

# Where distributions keep the system trust store (Debian/Ubuntu, Fedora/RHEL, openSUSE, others).
SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
)


def system_bundle() -> bytes:
    """The first non-empty system trust store, b"" when there is none."""
    for candidate in SYSTEM_BUNDLES:
        try:
            with open(candidate, "rb") as f:
                data = f.read()
        except OSError:
            continue
        if data.strip():
            return data
    return b""


def sandbox_bundle(ca_pem: bytes) -> bytes:
    """The system trust store followed by the sandbox CA: what SSL_CERT_FILE points the sandbox to."""
    system = system_bundle()
    if system and not system.endswith(b"\n"):
        system += b"\n"
    return system + ca_pem
