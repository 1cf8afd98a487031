"""TLS for the proxy: leaf certificates per terminated host, and the SSL contexts.

Every leaf is signed by the per-sandbox CA (ca.py) and shares one EC P-256 key generated per
cache: a leaf's key protects nothing the CA key does not, and one key saves a key generation per
host. Leaves are short-lived (7 days, backdated an hour for clock skew, never past the CA) and
rebuilt before they expire. The key never touches a disk: Python's ssl loads a chain only from a
path, so the PEM goes to an anonymous memfd opened through /proc/self/fd and closed at once.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import shutil
import ssl
import tempfile
import threading
import time
from collections import OrderedDict

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..records import Struct
from .ca import CLOCK_SKEW, CertificateAuthority, certificate_builder
from .trust import SYSTEM_BUNDLES

log = logging.getLogger("stockade.tls")

ALPN = ["http/1.1"]
LEAF_LIFETIME = datetime.timedelta(days=7)
REFRESH_MARGIN = datetime.timedelta(days=1)  # rebuild a cached leaf this long before it expires
MAX_DNS_NAME = 253

HostName = str  # normalised: lower-case DNS name without trailing dot, or a compressed IP
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


def normalize_host(host: str) -> tuple[HostName, IPAddr | None]:
    """The name a leaf is issued for, and its IP when it is a literal; ValueError if unusable.

    Accepts `[v6]`, a zone id (dropped: certificates carry none), upper case and a trailing dot.
    """
    name = host.strip()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        ip = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        pass
    else:
        return str(ip), ip
    name = name.lower().rstrip(".")
    if not name or len(name) > MAX_DNS_NAME or not name.isascii():
        raise ValueError(f"not a host name a certificate can carry: {host!r}")
    for label in name.split("."):
        if not label or len(label) > 63 or not all(c.isalnum() or c in "-_" for c in label):
            raise ValueError(f"not a host name a certificate can carry: {host!r}")
    return name, None


class _Cached(Struct):
    context: ssl.SSLContext
    refresh_at: float  # time.time() after which the leaf is rebuilt


class LeafCache:
    """Server-side SSL contexts per host, signed by the sandbox CA, LRU-bounded.

    Thread-safe. A context is built outside the lock; two concurrent first uses of one host may
    both build one, and the first stored wins.
    """

    def __init__(self, ca: CertificateAuthority, size: int = 256) -> None:
        if size < 1:
            raise ValueError("the leaf cache needs room for at least one host")
        self.ca = ca
        self.size = size
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._key_pem = self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._ca_pem = ca.certificate_pem
        self._ski = x509.SubjectKeyIdentifier.from_public_key(self._key.public_key())
        try:
            ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            self._aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_ski.value)
        except x509.ExtensionNotFound:
            self._aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
        self._lock = threading.Lock()
        self._contexts: OrderedDict[HostName, _Cached] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.key_storage = "memfd"  # or "tempfile" once memfd was found unusable

    def __len__(self) -> int:
        return len(self._contexts)

    def __contains__(self, host: str) -> bool:
        return normalize_host(host)[0] in self._contexts

    def server_context(self, host: str) -> ssl.SSLContext:
        """The context that presents a leaf for `host` (the CONNECT host); ValueError if the
        name cannot be carried by a certificate."""
        now = time.time()
        with self._lock:
            # Fast path: a host already in normal form (the usual CONNECT host) is its own key.
            cached = self._contexts.get(host)
            if cached is not None and cached.refresh_at > now:
                self._contexts.move_to_end(host)
                self.hits += 1
                return cached.context
        name, ip = normalize_host(host)
        with self._lock:
            cached = self._contexts.get(name)
            if cached is not None and cached.refresh_at > now:
                self._contexts.move_to_end(name)
                self.hits += 1
                return cached.context
            self.misses += 1
        context, refresh_at = self._build(name, ip, _now())
        with self._lock:
            current = self._contexts.get(name)
            if current is not None and current.refresh_at > now:
                context = current.context  # a concurrent builder won
            else:
                self._contexts[name] = _Cached(context, refresh_at)
            self._contexts.move_to_end(name)
            while len(self._contexts) > self.size:
                self._contexts.popitem(last=False)
        return context

    def leaf(self, host: str) -> x509.Certificate:
        """A fresh leaf for `host` (what server_context presents; for tests and diagnostics)."""
        name, ip = normalize_host(host)
        return self._leaf(name, ip, _now())

    def upstream_context(self, extra_ca_file: str | None = None) -> ssl.SSLContext:
        return upstream_context(extra_ca_file)

    # -- building ------------------------------------------------------------------------------

    def _leaf(self, name: HostName, ip: IPAddr | None, now: datetime.datetime) -> x509.Certificate:
        ca_cert = self.ca.certificate
        not_after = min(now + LEAF_LIFETIME, ca_cert.not_valid_after_utc)
        san: x509.GeneralName = x509.IPAddress(ip) if ip is not None else x509.DNSName(name)
        # CN is informative only (clients match the SAN) and limited to 64 characters.
        subject = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, name)] if len(name) <= 64 else []
        )
        not_before = max(now - CLOCK_SKEW, ca_cert.not_valid_before_utc)
        builder = (
            certificate_builder(subject, ca_cert.subject, self._key.public_key(), not_before,
                                not_after, ca=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            # RFC 5280: the SAN must be critical when the subject is empty.
            .add_extension(x509.SubjectAlternativeName([san]), critical=not len(subject))
            .add_extension(self._ski, critical=False)
            .add_extension(self._aki, critical=False)
        )
        return builder.sign(self.ca.key, hashes.SHA256())

    def _build(self, name: HostName, ip: IPAddr | None,
               now: datetime.datetime) -> tuple[ssl.SSLContext, float]:
        leaf = self._leaf(name, ip, now)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
        context.set_alpn_protocols(ALPN)
        # Key first, then the chain [leaf, CA]: OpenSSL takes the first certificate as the leaf.
        pem = self._key_pem + leaf.public_bytes(serialization.Encoding.PEM) + self._ca_pem
        self._load_chain(context, pem)
        not_after = leaf.not_valid_after_utc
        refresh_at = not_after - min(REFRESH_MARGIN, (not_after - now) / 2)
        return context, refresh_at.timestamp()

    def _load_chain(self, context: ssl.SSLContext, pem: bytes) -> None:
        if self.key_storage == "memfd":
            try:
                _load_from_memfd(context, pem)
                return
            except (AttributeError, OSError) as exc:  # no memfd_create, or no /proc
                self.key_storage = "tempfile"
                log.warning("memfd unavailable (%s): leaf keys pass through a private 0600 "
                            "temporary file, deleted immediately", exc)
        _load_from_tempfile(context, pem)


def _load_from_memfd(context: ssl.SSLContext, pem: bytes) -> None:
    fd = os.memfd_create("stockade-leaf", os.MFD_CLOEXEC)
    try:
        view = memoryview(pem)
        while view:
            view = view[os.write(fd, view):]
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _load_from_tempfile(context: ssl.SSLContext, pem: bytes) -> None:
    directory = tempfile.mkdtemp(prefix="stockade-tls-")  # 0700
    path = os.path.join(directory, "leaf.pem")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, pem)
        finally:
            os.close(fd)
        context.load_cert_chain(path)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


# --------------------------------------------------------------------------------------------
# Upstream


def upstream_context(extra_ca_file: str | None = None) -> ssl.SSLContext:
    """What the proxy verifies upstream servers against: the system roots, plus a private CA
    (`--upstream-ca FILE`; an unreadable or empty file is an error, not a silent no-op)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
    # OpenSSL's compiled-in paths may not be the distribution's store (pyenv, static builds):
    # load the first bundle that exists, once (parsing ~150 roots costs ~100 ms).
    defaults = ssl.get_default_verify_paths()
    for bundle in (defaults.cafile, *SYSTEM_BUNDLES):
        if bundle and os.path.isfile(bundle):
            try:
                context.load_verify_locations(cafile=bundle)
                break
            except (ssl.SSLError, OSError):
                continue
    if defaults.capath and os.path.isdir(defaults.capath):
        context.load_verify_locations(capath=defaults.capath)  # looked up lazily, by hash
    if extra_ca_file:
        context.load_verify_locations(cafile=extra_ca_file)
        # A private intermediate may be the trust anchor (what Python 3.13 does by default).
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(ALPN)
    return context

