"""Minting the sandbox CA on the other core, while the supervisor loads the policy.

Importing `cryptography` and generating the CA is the costliest step of `stockade run` after
the interpreter itself. The supervisor forks a short-lived helper for it right after the
launcher (both from the main thread, before any thread exists): the helper sends back the PEM
of the key, the certificate and the merged bundle over a pipe and exits. The key never touches
the disk; it lives in the supervisor's memory (CaMaterial), and `load()` turns it into the
`CertificateAuthority` the proxy signs with, importing cryptography only when it is needed.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any, NoReturn

_LEN = struct.Struct("!I")


@dataclass
class CaMaterial:
    key_pem: bytes = field(repr=False)
    certificate_pem: bytes
    bundle_pem: bytes
    _loaded: Any = field(default=None, repr=False)

    def load(self) -> Any:  # -> stockade.network.ca.CertificateAuthority
        """The CertificateAuthority (imports cryptography on first use; cached)."""
        if self._loaded is None:
            from cryptography import x509
            from cryptography.hazmat.primitives.serialization import load_pem_private_key

            from ..network.ca import CertificateAuthority

            key = load_pem_private_key(self.key_pem, password=None)
            self._loaded = CertificateAuthority(key=key, certificate=x509.load_pem_x509_certificate(
                self.certificate_pem))
        return self._loaded


def fork_minter(label: str, close: tuple[int, ...] = ()) -> tuple[int, int]:
    """Fork the helper; (its pid, the read end of its pipe). `close`: the parent's private fds."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        for other in close:
            os.close(other)
        _mint(label, write_fd)
    os.close(write_fd)
    return pid, read_fd


def _mint(label: str, fd: int) -> NoReturn:
    code = 1
    try:
        import signal

        # The terminal's signals are the supervisor's to handle: a Ctrl-C while the sandbox
        # starts ends the run with 130, not 125 because this helper died of it first.
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP):
            signal.signal(sig, signal.SIG_IGN)
        from cryptography.hazmat.primitives import serialization

        from ..network.ca import CertificateAuthority

        ca = CertificateAuthority.generate(label)
        key = ca.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
        parts = [key, ca.certificate_pem, ca.bundle_pem()]
        head = json.dumps([len(p) for p in parts]).encode()
        _write_all(fd, _LEN.pack(len(head)) + head + b"".join(parts))
        code = 0
    except BaseException as exc:  # the supervisor reports a missing CA as a setup failure
        try:
            _write_all(fd, _LEN.pack(0) + f"{type(exc).__name__}: {exc}".encode()[:2000])
        except OSError:
            pass
    os._exit(code)


def receive(pid: int, fd: int) -> CaMaterial:
    """Read the helper's answer and reap it; OSError with its message when minting failed."""
    data = bytearray()
    try:
        while chunk := os.read(fd, 1 << 20):
            data += chunk
    finally:
        os.close(fd)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    if len(data) < _LEN.size:
        raise OSError("the CA helper died")
    (head_len,) = _LEN.unpack_from(data)
    if head_len == 0:
        raise OSError(f"minting the sandbox CA: {bytes(data[_LEN.size:]).decode(errors='replace')}")
    sizes = json.loads(bytes(data[_LEN.size:_LEN.size + head_len]))
    offset, parts = _LEN.size + head_len, []
    for size in sizes:
        parts.append(bytes(data[offset:offset + size]))
        offset += size
    return CaMaterial(parts[0], parts[1], parts[2])


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
