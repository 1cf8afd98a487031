"""Run a coroutine inside the test network namespace, in this process.

A thread that calls setns(CLONE_NEWNET) lives in that namespace (namespaces are per task), and
so do the threads it starts (the loop's executor). The proxy under test, its upstreams and the
raw clients then share one event loop, and resolvers can be injected: the mount namespace (and
with it the namespace's /etc/hosts) is not entered.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(pid: int) -> None:
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns: {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in_netns(pid: int, factory: Callable[[], Awaitable[Any]], *, timeout: float = 30.0,
                 uvloop: bool = False) -> Any:
    """Run `factory()` to completion on a fresh event loop inside the namespace of `pid`.

    STOCKADE_TEST_UVLOOP=1 runs every in-process test on uvloop instead of asyncio.
    """
    uvloop = uvloop or os.environ.get("STOCKADE_TEST_UVLOOP") == "1"
    result: dict[str, Any] = {}

    def worker() -> None:
        try:
            enter_netns(pid)
            coro = asyncio.wait_for(factory(), timeout)
            if uvloop:
                import uvloop as _uvloop
                result["value"] = _uvloop.run(coro)
            else:
                result["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=worker, name="netns-loop", daemon=True)
    thread.start()
    thread.join(timeout + 10)
    if thread.is_alive():
        raise TimeoutError(f"the in-namespace test did not finish within {timeout + 10} s")
    if "error" in result:
        raise result["error"]
    return result.get("value")


def listener(host: str, port: int = 0) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock
