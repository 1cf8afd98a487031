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
