"""The CA helper (isolation/camint.py): what it sends back, and the signals it leaves alone."""

import os
import re
import signal
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from stockade.isolation import camint


def test_the_helper_sends_an_ec_p256_ca_and_the_bundle():
    pid, fd = camint.fork_minter("quiet-otter")
    material = camint.receive(pid, fd)
    ca = material.load()
    cert = ca.certificate
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "stockade sandbox CA (quiet-otter)"
    assert isinstance(ca.key.curve, ec.SECP256R1)
    assert cert.public_key() == ca.key.public_key()
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert material.bundle_pem.endswith(material.certificate_pem)
    assert b"PRIVATE KEY" not in material.bundle_pem + material.certificate_pem + repr(material).encode()


def test_the_helper_leaves_the_terminals_signals_to_the_supervisor():
    """A Ctrl-C while the sandbox starts reaches the helper too (same process group): it must
    not die of it, or the run ends as a CA failure (125) instead of an interrupted one (130)."""
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
