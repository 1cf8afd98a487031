"""Trust on first use: the SHA-256 of each executable path, fixed the first time it is seen."""

from __future__ import annotations

import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable

from ..records import Struct, field
from .procfs import IdentityError

HASH_CHUNK = 64 * 1024
MAX_BAD = 8  # known-bad fingerprints kept per path

Fingerprint = tuple[int, int, int, int, int]  # size, mtime ns, ctime ns, dev, ino


def sha256_fd(fd: int) -> str:
    """SHA-256 (hex) of an open file, read from offset 0 in 64 KiB chunks."""
    digest = hashlib.sha256()
    buf = bytearray(HASH_CHUNK)
    view = memoryview(buf)
    offset = 0
    while True:
        n = os.preadv(fd, [buf], offset)
        if n == 0:
            return digest.hexdigest()
        digest.update(view[:n])
        offset += n


def fingerprint(st: os.stat_result) -> Fingerprint:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_dev, st.st_ino)


class _Entry(Struct):
    sha256: str  # the hash trusted on first use; never replaced
    good: deque[Fingerprint] = field(default_factory=lambda: deque(maxlen=8))
    bad: dict[Fingerprint, str] = field(default_factory=dict)  # -> its hash; at most MAX_BAD


class BinaryHasher:
    """Trust-on-first-use hashes per executable path, shared by the whole sandbox.

    The first hash seen for a path is trusted; afterwards a file whose content hashes differently
    is refused (`binary_changed`) and the entry is kept, so the path stays denied until its old
    content is restored. Metadata fingerprints (size, mtime, ctime, dev, ino: ctime cannot be
    forged by a process) avoid rehashing unchanged files; several good fingerprints are kept per
    path because an old process can keep running a replaced, identical binary. Known-bad
    fingerprints are remembered too, so a refused 100 MB binary is not rehashed on every connect.
    Thread-safe: the proxy resolves identities in a thread pool.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._path_locks: dict[str, threading.Lock] = {}
        self.hash_count = 0  # files hashed so far (statistics, tests)

    def verify(self, path: str, open_exe: Callable[[], int]) -> str:
        """Hash of the file `open_exe()` opens (the fd is closed here), checked against `path`."""
        try:
            fd = open_exe()
        except OSError as exc:
            raise IdentityError("exe_unreadable", f"cannot open {path}: {exc.strerror}") from exc
        try:
            return self.verify_fd(path, fd)
        finally:
            os.close(fd)

    def verify_fd(self, path: str, fd: int) -> str:
        fp = fingerprint(os.fstat(fd))
        cached = self._lookup(path, fp)
        if cached is not None:
            return cached
        with self._path_lock(path):  # one hash per path at a time, even with many connects
            cached = self._lookup(path, fp)
            if cached is not None:
                return cached
            digest = sha256_fd(fd)
            with self._lock:
                self.hash_count += 1
            if fingerprint(os.fstat(fd)) != fp:
                raise IdentityError("binary_unstable", f"{path} changed while it was hashed")
            with self._lock:
                entry = self._entries.get(path)
                if entry is None:
                    entry = self._entries[path] = _Entry(digest)
                if entry.sha256 == digest:
                    entry.good.append(fp)
                    return digest
                if len(entry.bad) >= MAX_BAD:
                    del entry.bad[next(iter(entry.bad))]
                entry.bad[fp] = digest
                trusted = entry.sha256
        raise IdentityError("binary_changed", f"binary integrity violation: {path} hash changed "
                            f"(trusted {trusted}, now {digest})", binary=path, trusted=trusted,
                            observed=digest)

    def trusted(self, path: str) -> str | None:
        """The hash trusted for `path`, if it has been seen."""
        with self._lock:
            entry = self._entries.get(path)
            return entry.sha256 if entry else None

    def _lookup(self, path: str, fp: Fingerprint) -> str | None:
        with self._lock:
            entry = self._entries.get(path)
            if entry is None or fp not in entry.bad:
                return entry.sha256 if entry is not None and fp in entry.good else None
            trusted, observed = entry.sha256, entry.bad[fp]
        raise IdentityError("binary_changed", f"binary integrity violation: {path} differs "
                            f"from trusted {trusted}", binary=path, trusted=trusted,
                            observed=observed)

    def _path_lock(self, path: str) -> threading.Lock:
        with self._lock:
            return self._path_locks.setdefault(path, threading.Lock())
