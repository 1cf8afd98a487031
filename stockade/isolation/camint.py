"""Minting the sandbox CA on the other core, while the supervisor does its own work.

Importing `cryptography` and generating the CA is the costliest step of `stockade run` after
the interpreter itself. A short-lived helper process does it: it sends back the PEM of the key,
the certificate and the merged bundle over a pipe and exits. The key never touches the disk; it
lives in the supervisor's memory (CaMaterial), and `load()` turns it into the
`CertificateAuthority` the proxy signs with, importing cryptography only when it is needed.

The helper mints with the system's `openssl` (~15 ms) when it is the trusted /usr/bin/openssl
(owned by root, writable by root only: never one found on PATH, which the agent may be able to
write to), run with an empty environment and configuration; otherwise, or if openssl fails,
with cryptography (~100 ms of imports, then ~10 ms). Both give the same CA: EC P-256, critical
basic constraints (CA, path length 0) and key usage (certificate and CRL signing), 30 days.

`stockade run` starts the helper early (`prestart`, from `main()`, right after the launcher and
before click and the supervisor are imported), and, when it will need cryptography, the helper
imports it while it waits for the sandbox's name. `fork_minter` hands it the name, or forks a
helper on the spot when none was prestarted. Both are forked from the main thread before any
other thread exists. This module imports nothing but `os` at first: `prestart` runs before the
interpreter has loaded anything else.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # not `from typing import`: typing alone costs ~5 ms before the fork
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from ..network.ca import CertificateAuthority

_HEAD = 4  # bytes of big-endian length before each message on the pipes
OPENSSL = "/usr/bin/openssl"
CA_DAYS = 30  # network/ca.py CA_DAYS
_PEM_KEY = (b"-----BEGIN PRIVATE KEY-----\n", b"-----END PRIVATE KEY-----\n")
_PEM_CERT = (b"-----BEGIN CERTIFICATE-----\n", b"-----END CERTIFICATE-----\n")


class CaMaterial:
    """The sandbox CA as PEM bytes, kept in the supervisor's memory only."""

    __slots__ = ("key_pem", "certificate_pem", "bundle_pem", "_loaded")

    def __init__(self, key_pem: bytes, certificate_pem: bytes, bundle_pem: bytes) -> None:
        self.key_pem = key_pem
        self.certificate_pem = certificate_pem
        self.bundle_pem = bundle_pem
        self._loaded: Any = None

    def __repr__(self) -> str:  # never the key
        return f"CaMaterial(certificate_pem={self.certificate_pem!r}, bundle_pem=<{len(self.bundle_pem)} bytes>)"

    def load(self) -> CertificateAuthority:
        """The CertificateAuthority (imports cryptography on first use; cached)."""
        if self._loaded is None:
            from cryptography import x509
            from cryptography.hazmat.primitives.serialization import load_pem_private_key

            from ..network.ca import CertificateAuthority

            key = load_pem_private_key(self.key_pem, password=None)
            self._loaded = CertificateAuthority(key=key, certificate=x509.load_pem_x509_certificate(
                self.certificate_pem))
        return self._loaded


# (pid, write end of the label pipe, read end of the answer pipe) of a prestarted helper
_prestarted: tuple[int, int, int] | None = None


def prestart(close: tuple[int, ...] = ()) -> None:
    """Fork the helper now; it imports cryptography and waits for `fork_minter`'s label.
    `close` are the caller's descriptors the helper must not keep (the launcher's).

    When the run ends before asking (a usage error, an invalid name), the helper reads EOF
    and exits without minting anything.
    """
    global _prestarted
    if _prestarted is not None:
        return
    label_r, label_w = os.pipe2(os.O_CLOEXEC)
    answer_r, answer_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(label_w)
        os.close(answer_r)
        for fd in close:
            os.close(fd)
        _helper(answer_w, label_r)
    os.close(label_r)
    os.close(answer_w)
    _prestarted = (pid, label_w, answer_r)


def private_fds() -> tuple[int, ...]:
    """The prestarted helper's pipe ends, which a process forked later must not keep."""
    return _prestarted[1:] if _prestarted is not None else ()


def fork_minter(label: str, close: tuple[int, ...] = ()) -> tuple[int, int]:
    """The helper for this sandbox: (its pid, the read end of its pipe), for `receive`.

    The prestarted helper when there is one (it was forked before `close`'s descriptors
    existed); otherwise a new fork, which closes `close`, the parent's private descriptors.
    """
    global _prestarted
    if _prestarted is not None:
        pid, label_w, answer_r = _prestarted
        _prestarted = None
        data = label.encode()
        try:
            _write_all(label_w, len(data).to_bytes(_HEAD, "big") + data)
        except OSError:
            pass  # the helper died: `receive` reports it
        os.close(label_w)
        return pid, answer_r
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        for other in close:
            os.close(other)
        _helper(write_fd, None, label)
    os.close(write_fd)
    return pid, read_fd


def _helper(fd: int, label_fd: int | None, label: str | None = None) -> NoReturn:
    """Mint the CA (label from `label_fd` when it is None) and write it to `fd`; never returns."""
    code = 1
    try:
        import signal

        # The terminal's signals are the supervisor's to handle: a Ctrl-C while the sandbox
        # starts ends the run with 130, not 125 because this helper died of it first.
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP):
            signal.signal(sig, signal.SIG_IGN)
        openssl = trusted_openssl()
        if openssl is None:  # import cryptography while the supervisor works
            import importlib

            importlib.import_module("..network.ca", __package__)
        if label is None:
            assert label_fd is not None
            raw = _read_message(label_fd)
            if raw is None:
                os._exit(0)  # nobody asked: the run ended before it needed a CA
            label = raw.decode()
        minted = mint_with_openssl(openssl, label) if openssl is not None else None
        key, certificate = minted or _mint_with_cryptography(label)
        from ..network.trust import sandbox_bundle

        parts = [key, certificate, sandbox_bundle(certificate)]
        head = b"".join(len(p).to_bytes(_HEAD, "big") for p in parts)
        _write_all(fd, len(head).to_bytes(_HEAD, "big") + head + b"".join(parts))
        code = 0
    except BaseException as exc:  # the supervisor reports a missing CA as a setup failure
        try:
            _write_all(fd, bytes(_HEAD) + f"{type(exc).__name__}: {exc}".encode()[:2000])
        except OSError:
            pass
    os._exit(code)


def trusted_openssl(path: str | None = None) -> str | None:
    """The real path of `path` (default OPENSSL) when it is an executable file that only root
    can replace: it and every directory above it owned by root and writable by no one else
    (a symlink is followed, and its target checked the same way); None otherwise."""
    import stat

    try:
        real = os.path.realpath(path or OPENSSL, strict=True)
        st = os.stat(real)
        if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o111:
            return None
        target = real
        while True:
            st = os.stat(target)
            if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                return None
            if target == "/":
                return real
            target = os.path.dirname(target)
    except (OSError, ValueError):
        return None


def mint_with_openssl(openssl: str, label: str) -> tuple[bytes, bytes] | None:
    """(key PEM, certificate PEM) of a new CA minted by `openssl`; None when it could not
    (a label it cannot spell, a failure, an unexpected answer): cryptography mints then."""
    if not label or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in label):
        return None  # -subj treats '/', '+', '=' and '\\' specially
    argv = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", "-", "-out", "-", "-sha256", "-days", str(CA_DAYS),  # -nodes: 1.1.1 too
            "-subj", f"/CN=stockade sandbox CA ({label})/O=stockade",
            "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    env = {"PATH": "/usr/bin:/bin", "OPENSSL_CONF": "/dev/null"}  # no user configuration or engine
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    try:
        pid = os.posix_spawn(openssl, argv, env, file_actions=[
            (os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, write_fd, 1), (os.POSIX_SPAWN_DUP2, null, 2)])
    except OSError:
        os.close(read_fd)
        return None
    finally:
        os.close(write_fd)
        os.close(null)
    out = bytearray()
    with os.fdopen(read_fd, "rb") as answer:
        while chunk := answer.read(65536):
            out += chunk
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return None
    key, certificate = _pem(bytes(out), _PEM_KEY), _pem(bytes(out), _PEM_CERT)
    return (key, certificate) if key and certificate else None


def _pem(data: bytes, markers: tuple[bytes, bytes]) -> bytes | None:
    """The one PEM block between `markers` in `data`; None when there is not exactly one."""
    begin, end = markers
    if data.count(begin) != 1 or data.count(end) != 1:
        return None
    start = data.index(begin)
    stop = data.index(end, start) + len(end)
    return data[start:stop]


def _mint_with_cryptography(label: str) -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives import serialization

    from ..network.ca import CertificateAuthority

    ca = CertificateAuthority.generate(label)
    key = ca.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    return key, ca.certificate_pem


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
    if len(data) < _HEAD:
        raise OSError("the CA helper died")
    head_len = int.from_bytes(data[:_HEAD], "big")
    if head_len == 0:
        raise OSError(f"minting the sandbox CA: {bytes(data[_HEAD:]).decode(errors='replace')}")
    head = data[_HEAD:_HEAD + head_len]
    sizes = [int.from_bytes(head[i:i + _HEAD], "big") for i in range(0, head_len, _HEAD)]
    offset, parts = _HEAD + head_len, []
    for size in sizes:
        parts.append(bytes(data[offset:offset + size]))
        offset += size
    if len(parts) != 3 or offset != len(data):
        raise OSError("the CA helper's answer is malformed")
    return CaMaterial(parts[0], parts[1], parts[2])


def _read_message(fd: int) -> bytes | None:
    """One length-prefixed message, or None on EOF before it is complete. Not read to EOF:
    the launcher, forked after `prestart`, holds a copy of the write end (close-on-exec)."""
    data = b""
    want = _HEAD
    while len(data) < want:
        chunk = os.read(fd, want - len(data))
        if not chunk:
            return None
        data += chunk
        if want == _HEAD and len(data) == _HEAD:
            want += int.from_bytes(data, "big")
    return data[_HEAD:]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
