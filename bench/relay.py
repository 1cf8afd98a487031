"""Bare CONNECT relays, the reference rows of the CONNECT bulk table: no policy, no logging, no
limits, only what any relay must do. They show how fast a relay can be on this machine at all,
so stockade's row reads against that ceiling as well as against the direct transfer.

- copy: uvloop Protocols, each chunk written into the other transport with pause/resume flow
  control (what stockade's raw tunnel does once its policy decision is made);
- splice: a thread per direction moving bytes socket -> pipe -> socket with splice(2), never
  through user space (the kernel-side alternative; a blocking thread per direction, its own
  pipe each, so neither direction can wait on the other's pipe).

Run as: python -m bench.relay copy|splice HOST PORT
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import sys
import threading

PIPE_SIZE = 1 << 20


def _parse_target(head: bytes) -> tuple[str, int]:
    host, port = head.split(b" ", 2)[1].decode().rsplit(":", 1)
    return host.strip("[]"), int(port)


# -- copy: uvloop Protocols -----------------------------------------------------------------------


class _Side(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.peer.transport.write(data)  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        if self.peer is None:  # before the tunnel exists (a port probe): close
            return False
        self.peer.transport.write_eof()  # type: ignore[union-attr]
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def pause_writing(self) -> None:
        self.peer.transport.pause_reading()  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        self.peer.transport.resume_reading()  # type: ignore[union-attr]


class _Client(_Side):
    """Reads the CONNECT head, dials, answers 200, then relays like any side."""

    def __init__(self) -> None:
        super().__init__()
        self.head = b""

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            super().data_received(data)
            return
        self.head += data
        if b"\r\n\r\n" in self.head:
            self.transport.pause_reading()  # type: ignore[union-attr]
            self.dialing = asyncio.ensure_future(self._dial())  # referenced: tasks are weak

    async def _dial(self) -> None:
        head, early = self.head.split(b"\r\n\r\n", 1)
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(_Side, *_parse_target(head))
        except (OSError, ValueError):
            self.transport.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")  # type: ignore[union-attr]
            self.transport.close()  # type: ignore[union-attr]
            return
        upstream.peer, self.peer = self, upstream
        self.transport.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")  # type: ignore[union-attr]
        if early:
            upstream.transport.write(early)
        self.transport.resume_reading()  # type: ignore[union-attr]


async def _serve_copy(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Client, host, port, backlog=128)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


# -- splice: a thread per direction ---------------------------------------------------------------


def _splice_one_way(src: socket.socket, dst: socket.socket) -> None:
    out, into = os.pipe()
    try:
        fcntl.fcntl(into, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass
    try:
        while count := os.splice(src.fileno(), into, PIPE_SIZE):
            while count:
                count -= os.splice(out, dst.fileno(), count)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        os.close(out)
        os.close(into)


def _splice_tunnel(client: socket.socket) -> None:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = client.recv(4096)
        if not chunk:
            client.close()
            return
        head += chunk
    head, early = head.split(b"\r\n\r\n", 1)
    upstream = socket.create_connection(_parse_target(head))
    for sock in (client, upstream):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
    upstream.sendall(early)
    back = threading.Thread(target=_splice_one_way, args=(upstream, client), daemon=True)
    back.start()
    _splice_one_way(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _serve_splice(host: str, port: int) -> None:
    listener = socket.create_server((host, port), backlog=128)
    print("ready", flush=True)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_splice_tunnel, args=(client,), daemon=True).start()


def main(argv: list[str]) -> None:
    mode, host, port = argv[0], argv[1], int(argv[2])
    if mode == "splice":
        _serve_splice(host, port)
        return
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve_copy(host, port))


if __name__ == "__main__":
    main(sys.argv[1:])
