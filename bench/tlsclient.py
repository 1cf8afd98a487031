"""TLS load client for the L7 benchmark: keep-alive requests/s and new connections/s, either
directly to the origin or through a proxy with CONNECT. Prints "<keep-alive req/s> <new conn/s>".
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import time

REQUEST = "GET /v1/models HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n"


async def open_tls(args: argparse.Namespace, ctx: ssl.SSLContext):
    if args.direct:
        return await asyncio.open_connection(args.host, args.port, ssl=ctx, server_hostname=args.host)
    phost, pport = args.proxy.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(phost, int(pport))
    writer.write(f"CONNECT {args.host}:{args.port} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"CONNECT refused: {head!r}")
    await writer.start_tls(ctx, server_hostname=args.host)
    return reader, writer


async def one_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> None:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected response {head[:80]!r}")
    await reader.readexactly(length)


async def keep_alive(args, ctx, request, deadline) -> int:
    reader, writer = await open_tls(args, ctx)
    count = 0
    while time.perf_counter() < deadline:
        await one_request(reader, writer, request)
        count += 1
    writer.close()
    return count


async def new_connections(args, ctx, request, deadline) -> int:
    count = 0
    while time.perf_counter() < deadline:
        reader, writer = await open_tls(args, ctx)
        await one_request(reader, writer, request)
        writer.close()
        count += 1
    return count


async def main(args: argparse.Namespace) -> None:
    ctx = ssl.create_default_context(cafile=args.cafile)
    ctx.set_alpn_protocols(["http/1.1"])
    request = REQUEST.format(host=args.host, port=args.port).encode()
    start = time.perf_counter()
    counts = await asyncio.gather(*(keep_alive(args, ctx, request, start + args.seconds) for _ in range(8)))
    keep_rate = sum(counts) / (time.perf_counter() - start)
    start = time.perf_counter()
    counts = await asyncio.gather(*(new_connections(args, ctx, request, start + args.seconds) for _ in range(4)))
    new_rate = sum(counts) / (time.perf_counter() - start)
    print(f"{keep_rate:.1f} {new_rate:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--direct", action="store_true")
    parser.add_argument("--proxy")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cafile", required=True)
    parser.add_argument("--seconds", type=float, default=8.0)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(parser.parse_args()))
