"""The per-sandbox certificate authority (EC P-256; its private key lives only in memory).

The sandbox trusts this CA through the files the launcher writes into the sandbox's private
/run/stockade (DESIGN.md §1); the proxy signs a leaf per terminated host with it.
"""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .trust import sandbox_bundle

CA_DAYS = 30  # isolation/camint.py mints with the same lifetime
CA_LIFETIME = datetime.timedelta(days=CA_DAYS)
CLOCK_SKEW = datetime.timedelta(hours=1)


class CertificateAuthority:
    """A CA key and its certificate. A plain class: the CA helper process (isolation/camint.py)
    imports this module on the critical path of `stockade run`, and msgspec or pathlib would
    add ~30 ms of imports there for nothing."""

    __slots__ = ("key", "certificate")

    def __init__(self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        self.key = key
        self.certificate = certificate

    def __repr__(self) -> str:  # never the key
        return f"CertificateAuthority(certificate={self.certificate.subject.rfc4514_string()!r})"

    @classmethod
    def generate(cls, label: str = "stockade") -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, f"stockade sandbox CA ({label})"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "stockade"),
        ])
        now = datetime.datetime.now(datetime.timezone.utc)
        public = key.public_key()
        cert = (
            certificate_builder(name, name, public, now - CLOCK_SKEW, now + CA_LIFETIME, ca=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key=key, certificate=cert)

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def bundle_pem(self) -> bytes:
        """The system trust store followed by this CA: what SSL_CERT_FILE points the sandbox to."""
        return sandbox_bundle(self.certificate_pem)


def certificate_builder(subject: x509.Name, issuer: x509.Name,
                        public_key: ec.EllipticCurvePublicKey, not_before: datetime.datetime,
                        not_after: datetime.datetime, *, ca: bool) -> x509.CertificateBuilder:
    """What every certificate stockade issues has in common: a random serial, the validity, and
    critical basic constraints and key usage, those of a CA (signs certificates and CRLs, no
    intermediates below it) or of a TLS leaf (signs handshakes only)."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    )
