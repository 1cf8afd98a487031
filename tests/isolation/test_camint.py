"""The CA helper (isolation/camint.py): prestarted (`stockade run`) or forked on demand, what
it sends back, and the signals it leaves alone."""

import os
import re
import signal
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from stockade.isolation import camint


@pytest.fixture(autouse=True)
def _no_leftover_helper():
    yield
    if camint._prestarted is not None:  # a test failed between prestart and fork_minter
        pid, label_w, answer_r = camint._prestarted
        camint._prestarted = None
        os.close(label_w)
        os.close(answer_r)
        os.waitpid(pid, 0)


@pytest.mark.parametrize("prestarted", [True, False], ids=["prestarted", "on-demand"])
def test_the_helper_sends_an_ec_p256_ca_and_the_bundle(prestarted):
    if prestarted:
        camint.prestart()
    pid, fd = camint.fork_minter("quiet-otter")
    assert camint._prestarted is None
    material = camint.receive(pid, fd)
    ca = material.load()
    cert = ca.certificate
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "stockade sandbox CA (quiet-otter)"
    assert isinstance(ca.key.curve, ec.SECP256R1)
    assert cert.public_key() == ca.key.public_key()
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert material.bundle_pem.endswith(material.certificate_pem)
    assert b"PRIVATE KEY" not in material.bundle_pem + material.certificate_pem + repr(material).encode()


def test_the_on_demand_helper_closes_the_parents_private_descriptors():
    r, w = os.pipe()
    pid, fd = camint.fork_minter("brave-lynx", close=(r, w))
    os.close(w)
    assert os.read(r, 1) == b""  # EOF: the helper's copy of the write end is closed too
    os.close(r)
    camint.receive(pid, fd)


def test_a_prestarted_helper_nobody_asks_exits_without_minting():
    camint.prestart()
    pid, label_w, answer_r = camint._prestarted
    camint._prestarted = None
    os.close(label_w)  # the run ended before it needed a CA (a usage error, an invalid name)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.read(answer_r, 100) == b""
    os.close(answer_r)


@pytest.mark.parametrize("prestarted", [True, False], ids=["prestarted", "on-demand"])
def test_the_helper_leaves_the_terminals_signals_to_the_supervisor(prestarted):
    """A Ctrl-C while the sandbox starts reaches the helper too (same process group): it must
    not die of it, or the run ends as a CA failure (125) instead of an interrupted one (130)."""
    if prestarted:
        camint.prestart()
    pid, fd = camint.fork_minter("ctrl-c")
    wanted = [signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP]
    deadline = time.monotonic() + 30
    while True:  # the answer (the system bundle) fills the pipe: the helper waits for us to read
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
        if re.search(r"^State:\s*Z", status, re.M):
            camint.receive(pid, fd)
            pytest.skip("the helper ended before it could be observed (no system CA bundle?)")
        ignored = int(re.search(r"^SigIgn:\s*([0-9a-f]+)", status, re.M).group(1), 16)
        if all(ignored & (1 << (s - 1)) for s in wanted):
            break
        assert time.monotonic() < deadline, "the helper never ignored the terminal's signals"
        time.sleep(0.001)
    os.kill(pid, signal.SIGINT)
    assert camint.receive(pid, fd).certificate_pem.startswith(b"-----BEGIN CERTIFICATE-----")


def test_a_failed_helper_is_an_error_with_its_reason():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, bytes(4) + b"ValueError: no entropy")
        os._exit(1)
    os.close(w)
    with pytest.raises(OSError, match="minting the sandbox CA: ValueError: no entropy"):
        camint.receive(pid, r)


# -- how the CA is minted: the system's openssl when trusted, else cryptography -----------------

def _certificate(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _assert_sandbox_ca(key_pem: bytes, cert_pem: bytes, label: str) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    cert, key = _certificate(cert_pem), load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    assert cert.public_key() == key.public_key()
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == f"stockade sandbox CA ({label})"
    assert cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value == "stockade"
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature and not usage.value.key_encipherment
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 30 * 86400 <= lifetime.total_seconds() <= 30 * 86400 + 2 * 3600
    cert.verify_directly_issued_by(cert)


def _need_openssl() -> str:
    openssl = camint.trusted_openssl()
    if openssl is None:
        pytest.skip(f"{camint.OPENSSL} is missing or not root's (scripts/system-deps.sh installs it)")
    return openssl


def test_openssl_mints_the_same_ca_as_cryptography():
    minted = camint.mint_with_openssl(_need_openssl(), "quiet-otter")
    assert minted is not None
    _assert_sandbox_ca(*minted, "quiet-otter")
    _assert_sandbox_ca(*camint._mint_with_cryptography("quiet-otter"), "quiet-otter")


def test_a_ca_minted_by_openssl_signs_leaves_the_bundle_verifies():
    import ssl
    import tempfile

    from stockade.network.tls import LeafCache

    key, cert = camint.mint_with_openssl(_need_openssl(), "leafy")
    material = camint.CaMaterial(key, cert, cert)
    leaf_context = LeafCache(material.load()).server_context("api.example.com")
    with tempfile.NamedTemporaryFile(suffix=".pem") as bundle:
        bundle.write(material.bundle_pem)
        bundle.flush()
        client = ssl.create_default_context(cafile=bundle.name)
    a, b = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = leaf_context.wrap_bio(a, b, server_side=True)
    c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client.wrap_bio(c_in, c_out, server_hostname="api.example.com")
    for _ in range(10):  # drive the handshake through memory
        for side in (tls, server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        a.write(c_out.read())
        c_in.write(b.read())
    assert tls.getpeercert()["subject"] == ((("commonName", "api.example.com"),),)


@pytest.mark.parametrize("label", ["a/b", "x=y", "plus+", "", "ünï"])
def test_openssl_is_not_asked_to_spell_a_label_it_would_read_specially(label):
    assert camint.mint_with_openssl(_need_openssl(), label) is None


def test_a_failing_openssl_is_none():
    assert camint.mint_with_openssl("/bin/false", "x") is None
    assert camint.mint_with_openssl("/nonexistent/openssl", "x") is None


def test_the_system_openssl_is_trusted_by_its_real_path(tmp_path):
    openssl = _need_openssl()
    assert openssl == os.path.realpath(camint.OPENSSL)
    link = tmp_path / "openssl-link"
    link.symlink_to(openssl)
    assert camint.trusted_openssl(str(link)) == openssl  # followed: the real file is what runs
    assert camint.trusted_openssl(str(tmp_path / "missing")) is None
    assert camint.trusted_openssl("/etc/passwd") is None  # root's, but not executable


def test_only_an_openssl_nobody_but_root_can_replace_is_trusted(tmp_path):
    """Owner and mode of the file and of every directory above it, the real path's included."""
    import shutil
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("files owned by root in a root-only directory: needs root")
    from tests.support.netns import NOBODY_GID, NOBODY_UID

    trusted_dir = tempfile.mkdtemp(dir="/run", prefix="stockade-test-")  # /run: root's, 0755
    try:
        os.chmod(trusted_dir, 0o755)
        fake = os.path.join(trusted_dir, "openssl")
        shutil.copy("/bin/true", fake)
        os.chmod(fake, 0o755)
        assert camint.trusted_openssl(fake) == fake
        os.chown(fake, NOBODY_UID, NOBODY_GID)  # someone else's file
        assert camint.trusted_openssl(fake) is None
        os.chown(fake, 0, 0)
        os.chmod(fake, 0o757)  # anyone may rewrite it
        assert camint.trusted_openssl(fake) is None
        os.chmod(fake, 0o775)  # its group may
        assert camint.trusted_openssl(fake) is None
        os.chmod(fake, 0o755)
        os.chmod(trusted_dir, 0o777)  # anyone may replace it in its directory
        assert camint.trusted_openssl(fake) is None
        os.chmod(trusted_dir, 0o755)
        (tmp_path / "link").symlink_to(fake)
        assert camint.trusted_openssl(str(tmp_path / "link")) == fake
        moved = tmp_path / "openssl"  # the same file below /tmp (world-writable)
        shutil.copy(fake, moved)
        assert camint.trusted_openssl(str(moved)) is None
    finally:
        shutil.rmtree(trusted_dir)


def test_without_a_trusted_openssl_the_helper_mints_with_cryptography(monkeypatch):
    monkeypatch.setattr(camint, "OPENSSL", "/nonexistent/openssl")
    pid, fd = camint.fork_minter("no-openssl")
    material = camint.receive(pid, fd)
    _assert_sandbox_ca(material.key_pem, material.certificate_pem, "no-openssl")
    assert material.bundle_pem.endswith(material.certificate_pem)
