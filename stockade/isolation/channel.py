"""How the sandbox's processes talk to the supervisor.

Two channels, created by the supervisor before it forks the launcher:

- the *status pipe* (close-on-exec): setup failures, one record per write (layer, errno,
  message). The supervisor sees EOF once the command has been exec'd (or everyone died); a
  record means stockade failed and tells it which layer and why.
- the *control socket* (AF_UNIX stream socketpair): length-prefixed messages, optionally
  carrying file descriptors (SCM_RIGHTS): the proxy listener, the sandbox's /proc, the setup
  facts, the CA files, and job-control notifications.
"""

from __future__ import annotations

import array
import errno as errno_mod
import json
import os
import socket
import struct
from typing import Any

from .record import Record


_HEADER = struct.Struct("!I")
_MAX_FDS = 4
_RECORD_LIMIT = 3800  # below PIPE_BUF, so each record is one atomic write


class SetupError(Exception):
    """A layer of the sandbox could not be set up; `layer` names it in the user's message."""

    def __init__(self, layer: str, message: str, err: int = 0) -> None:
        super().__init__(message)
        self.layer = layer
        self.message = message
        self.errno = err

    @classmethod
    def from_os(cls, layer: str, exc: OSError) -> SetupError:
        return cls(layer, str(exc.strerror or exc), exc.errno or 0)


def report_failure(fd: int, error: SetupError) -> None:
    """Write one failure record to the status pipe (best effort: the writer is about to exit)."""
    record = json.dumps({"layer": error.layer, "errno": error.errno, "message": error.message[:3000]})
    try:
        os.write(fd, record.encode()[:_RECORD_LIMIT] + b"\n")
    except OSError:
        pass


def parse_failures(data: bytes) -> list[SetupError]:
    errors = []
    for line in data.splitlines():
        try:
            rec = json.loads(line)
            errors.append(SetupError(rec["layer"], rec["message"], int(rec.get("errno", 0))))
        except (ValueError, KeyError, TypeError):
            errors.append(SetupError("internal", f"unreadable status record {line[:200]!r}"))
    return errors


class Message(Record):
    kind: str
    data: dict[str, Any]
    fds: tuple[int, ...] = ()
    blob: bytes = b""


def send(sock: socket.socket, kind: str, data: dict[str, Any] | None = None, *,
         fds: tuple[int, ...] = (), blob: bytes = b"") -> None:
    head = json.dumps({"kind": kind, "data": data or {}, "blob": len(blob)}).encode()
    frame = _HEADER.pack(len(head)) + head
    if fds:
        sent = sock.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        frame = frame[sent:]
    if frame or blob:
        sock.sendall(frame + blob)


def recv(sock: socket.socket) -> Message | None:
    """The next message, or None at EOF. Received descriptors are close-on-exec."""
    fds: list[int] = []
    head = _recv_exact(sock, _HEADER.size, fds)
    if head is None:
        return None
    (length,) = _HEADER.unpack(head)
    body = _recv_exact(sock, length, fds)
    if body is None:
        raise ConnectionError("control channel closed mid-message")
    meta = json.loads(body)
    blob = b""
    if meta.get("blob"):
        blob = _recv_exact(sock, int(meta["blob"]), fds) or b""
    return Message(meta["kind"], meta["data"], tuple(fds), blob)


def _recv_exact(sock: socket.socket, size: int, fds: list[int]) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        try:
            data, ancdata, _flags, _addr = sock.recvmsg(size - len(chunks), socket.CMSG_SPACE(_MAX_FDS * 4),
                                                       socket.MSG_CMSG_CLOEXEC)
        except InterruptedError:
            continue
        except ConnectionResetError:  # the peer died with our last message unread in its queue
            data, ancdata = b"", []
        for level, ctype, payload in ancdata:
            if level == socket.SOL_SOCKET and ctype == socket.SCM_RIGHTS:
                arr = array.array("i")
                arr.frombytes(payload[: len(payload) - (len(payload) % arr.itemsize)])
                fds.extend(arr)
        if not data:
            if chunks:
                raise ConnectionError("control channel closed mid-message")
            return None
        chunks += data
    return bytes(chunks)


def errno_name(err: int) -> str:
    return errno_mod.errorcode.get(err, str(err))
