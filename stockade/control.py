"""The control socket of a running sandbox: how `stockade policy set`, `rules approve`, `exec`
and `list` talk to its supervisor.

One Unix socket per running sandbox at `state.control_socket_path(name)`, mode 0600 in a 0700
directory. Protocol: JSON lines. A request is one object `{"op": ..., <params>}`, optionally
with `"request_id"`; the reply is one line, `{"ok": true, ...result}` or
`{"ok": false, "error": code, "detail": text}`, echoing `request_id` when given. Several requests may follow each other on one connection.

Peers are checked before anything is read: SO_PEERCRED gives the peer's pid and uid; a uid other
than ours, or a process whose user, pid, network or mount namespace differs from ours (it runs in
a sandbox or another container), is refused with `peer_refused` and recorded as a finding. An
agent that finds the socket path therefore still cannot widen its own policy. The peer is pinned
with SO_PEERPIDFD where the kernel has it, so a recycled pid cannot impersonate a host process.

The supervisor owns the behaviour: it passes handler callables (sync or async) for the ops, and
the server only validates, dispatches and answers. Ops and their parameters (anything else is
refused as `invalid_request`):

    ping                                         built in: {"pid", "sandbox"}
    status                                       run status for `stockade list`
    policy_show     revision?: int               the live policy or one revision
    policy_set      yaml_text: str, source?: str, wait?: bool   hot reload (network_policies only)
    exec_info                                    what `stockade exec` needs to join the sandbox
    exec_register   pid: int                     landlock-only mode: the caller's child, about
                                                 to run an exec'd command, is served by the proxy
    rules_approve   id: int                      merge a pending proposal into the live policy
    rules_reject    id: int

Handlers of PEER_OPS also get `peer`, the connection's Peer (its pidfd pinned for as long as
the connection is open): what they grant depends on who asks. `vet_peer` adds the supervisor's
own refusals to the namespace and uid checks (in the landlock-only mode the sandbox's processes
share our namespaces and uid: the supervisor refuses those below its init).

A handler returns a dict (merged into the reply) and reports failure by raising ControlError
(code, detail and its `data` fields reach the client as they are) or StockadeError (code
`failed`); any other exception becomes `internal` and the server carries on.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import socket
import struct
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import StockadeError
from .events.types import Actor, FindingEvent, Recorder
from .records import Struct

NAMESPACES = ("user", "pid", "net", "mnt")
MAX_REQUEST_BYTES = 8 * 1024 * 1024  # a policy YAML fits many times over
CLOSE_GRACE_S = 5.0  # how long close() lets a request in progress finish
SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)

# op -> {param: (type, required)}
OPS: dict[str, dict[str, tuple[type, bool]]] = {
    "ping": {},
    "status": {},
    "policy_show": {"revision": (int, False)},
    "policy_set": {"yaml_text": (str, True), "source": (str, False), "wait": (bool, False)},
    "exec_info": {},
    "exec_register": {"pid": (int, True)},
    "rules_approve": {"id": (int, True)},
    "rules_reject": {"id": (int, True)},
}

PEER_OPS = frozenset({"exec_register"})  # their handlers take `peer`

Handler = Callable[..., "dict[str, Any] | None | Awaitable[dict[str, Any] | None]"]


class ControlError(StockadeError):
    """A refused or failed control request: `error` is the machine code, `detail` the reason."""

    exit_code = 1

    def __init__(
        self, error: str, detail: str, *, hint: str | None = None, data: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(detail, hint=hint)
        self.error = error
        self.detail = detail
        self.data = dict(data or {})  # extra reply fields, e.g. the list of static differences


# -- sans-IO: requests, replies, peer decision ------------------------------------------------


class Request(Struct, frozen=True):
    op: str
    params: dict[str, Any]
    id: Any = None


def parse_request(line: bytes, ops: Mapping[str, Mapping[str, tuple[type, bool]]] = OPS) -> Request:
    """Validate one request line; raises ControlError(`malformed`|`unknown_op`|`invalid_request`)."""
    try:
        obj = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ControlError("malformed", f"a request is one JSON object per line: {exc}") from None
    if not isinstance(obj, dict):
        raise ControlError("malformed", "a request must be a JSON object")
    req_id = obj.pop("request_id", None)
    op = obj.pop("op", None)
    if not isinstance(op, str):
        raise ControlError("malformed", 'a request needs "op" (a string)')
    schema = ops.get(op)
    if schema is None:
        raise ControlError("unknown_op", f"unknown op {op!r}; known: {', '.join(sorted(ops))}")
    for name in obj:
        if name not in schema:
            raise ControlError("invalid_request", f"op {op!r} takes no parameter {name!r}")
    for name, (kind, required) in schema.items():
        if name not in obj:
            if required:
                raise ControlError("invalid_request", f"op {op!r} needs {name!r}")
            continue
        value = obj[name]
        # bool is an int in Python, never in this protocol.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ControlError("invalid_request", f"{name!r} must be {kind.__name__}, not {type(value).__name__}")
    return Request(op, obj, req_id)


def encode_reply(reply: Mapping[str, Any], req_id: Any = None) -> bytes:
    out = dict(reply)
    if req_id is not None:
        out["request_id"] = req_id
    return (json.dumps(out, separators=(",", ":"), default=str) + "\n").encode()


def error_reply(error: str, detail: str, data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {**(data or {}), "ok": False, "error": error, "detail": detail}


def peer_problem(
    peer_uid: int, my_uid: int, peer_ns: Mapping[str, tuple[int, int] | None], my_ns: Mapping[str, tuple[int, int]]
) -> str | None:
    """Why a peer must be refused, or None. A namespace that could not be read counts as different."""
    if peer_uid != my_uid:
        return f"uid {peer_uid} is not the sandbox owner's uid {my_uid}"
    for name in NAMESPACES:
        if peer_ns.get(name) is None:
            return f"its {name} namespace cannot be read"
        if peer_ns[name] != my_ns[name]:
            return f"it runs in another {name} namespace (inside a sandbox or container)"
    return None


# -- I/O edge ---------------------------------------------------------------------------------


def namespaces(pid: int | str) -> dict[str, tuple[int, int] | None]:
    """(st_dev, st_ino) of /proc/<pid>/ns/<name> for each namespace; None when unreadable."""
    out: dict[str, tuple[int, int] | None] = {}
    for name in NAMESPACES:
        try:
            st = os.stat(f"/proc/{pid}/ns/{name}")
            out[name] = (st.st_dev, st.st_ino)
        except OSError:
            out[name] = None
    return out


class Peer(Struct, frozen=True):
    pid: int
    uid: int
    gid: int
    # A pidfd of the peer (SO_PEERPIDFD, else pidfd_open right after accept): while it signals,
    # `pid` still names the process that connected. Owned by the server; None: no pidfd support.
    pidfd: int | None = None


def peer_alive(peer: Peer) -> bool:
    """Whether the peer still runs (so its pid was not reused); True without a pidfd."""
    if peer.pidfd is None:
        return True
    try:
        signal.pidfd_send_signal(peer.pidfd, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _peer_of(sock: socket.socket) -> Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    try:
        pidfd: int | None = sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    except OSError:  # kernel before 6.5: pin what the pid names now (the peer, unless it already exited)
        try:
            pidfd = os.pidfd_open(pid) if pid > 0 else None
        except OSError:
            pidfd = None
    return Peer(pid, uid, gid, pidfd)


class ControlServer:
    """Serves one sandbox's control socket on the supervisor's asyncio loop.

        server = ControlServer(control_socket_path(name), {"status": sup.status, ...},
                               sandbox=name, recorder=recorder)
        await server.start()   ...   await server.close()
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        handlers: Mapping[str, Handler],
        *,
        sandbox: str | None = None,
        recorder: Recorder | None = None,
        ops: Mapping[str, Mapping[str, tuple[type, bool]]] = OPS,
        idle_timeout_s: float = 300.0,
        vet_peer: Callable[[Peer], str | None] | None = None,
    ) -> None:
        unknown = set(handlers) - set(ops)
        if unknown:
            raise ValueError(f"handlers for undeclared ops: {sorted(unknown)}")
        self.path = Path(path)
        self.handlers = dict(handlers)
        self.sandbox = sandbox
        self.recorder = recorder
        self.ops = ops
        self.idle_timeout_s = idle_timeout_s
        self.vet_peer = vet_peer
        self.refused = 0
        self._server: asyncio.AbstractServer | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._my_ns = {k: v for k, v in namespaces("self").items() if v is not None}
        if len(self._my_ns) != len(NAMESPACES):
            raise StockadeError("cannot read this process's namespaces in /proc (needed to vet control socket peers)")

    async def start(self) -> None:
        # The supervisor holds the sandbox's RunLock, so a socket file left here is stale.
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        with socket_address(self.path) as address:
            self._server = await asyncio.start_unix_server(self._serve, path=address, limit=MAX_REQUEST_BYTES)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        """Stop accepting, end every open connection (a request in progress finishes first,
        for up to CLOSE_GRACE_S), and remove the socket file."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        # asyncio's Server.close() leaves connected clients alone: their handlers would wait
        # out the idle timeout, or outlive the loop (and fail when garbage-collected).
        tasks = list(self._connections)
        for writer in self._connections.values():
            writer.close()  # an idle handler reads EOF and returns
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=CLOSE_GRACE_S)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _vet(self, sock: socket.socket) -> tuple[str | None, Peer | None]:
        """(refusal, peer); the caller closes the peer's pidfd."""
        try:
            peer = _peer_of(sock)
        except OSError as exc:
            return f"cannot identify the peer: {exc}", None
        if peer.pid <= 0:
            return "the peer's process is not visible from here (another pid namespace)", peer
        problem = peer_problem(peer.uid, os.geteuid(), namespaces(peer.pid), self._my_ns)
        if problem is None and self.vet_peer is not None:
            try:
                problem = self.vet_peer(peer)
            except Exception as exc:  # noqa: BLE001 - a check that cannot decide refuses
                problem = f"it cannot be checked ({type(exc).__name__}: {exc})"
        if problem is None and peer.pidfd is not None:
            try:  # the pid read above still names the process that connected
                signal.pidfd_send_signal(peer.pidfd, 0)
            except ProcessLookupError:
                problem = "the peer exited before it could be checked"
            except PermissionError:
                problem = "the peer's process cannot be signalled by the sandbox owner"
        if problem is not None:
            self._record_refusal(peer, problem)
            return f"pid {peer.pid}: {problem}", peer
        return None, peer

    def _record_refusal(self, peer: Peer, problem: str) -> None:
        self.refused += 1
        if self.recorder is None:
            return
        try:
            binary = os.readlink(f"/proc/{peer.pid}/exe")
        except OSError:
            binary = "-"
        self.recorder.record(FindingEvent(
            kind="control_peer_refused", title="Control socket peer refused", severity="high",
            actor=Actor(binary=binary, pid=peer.pid),
            detail=f"uid {peer.uid} pid {peer.pid} tried the control socket of {self.sandbox or '?'}: {problem}",
        ))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        peer: Peer | None = None
        try:
            refusal, peer = self._vet(writer.get_extra_info("socket"))
            if refusal is not None:
                writer.write(encode_reply(error_reply("peer_refused", f"control socket refused: {refusal}")))
                await writer.drain()
                return
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), self.idle_timeout_s)
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(encode_reply(error_reply("malformed", f"request longer than {MAX_REQUEST_BYTES} bytes")))
                    await writer.drain()
                    await _discard(reader)
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                writer.write(await self.handle_line(line, peer))
                await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass
        finally:
            if peer is not None and peer.pidfd is not None:
                os.close(peer.pidfd)
            del self._connections[task]
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    async def handle_line(self, line: bytes, peer: Peer | None = None) -> bytes:
        """One request line → one reply line. Never raises. `peer`: who sent it (PEER_OPS need it)."""
        req_id = None
        try:
            request = parse_request(line, self.ops)
            req_id = request.id
            reply = await self._dispatch(request, peer)
        except ControlError as exc:
            reply = error_reply(exc.error, exc.detail, {**exc.data, **_hint(exc)})
        except StockadeError as exc:
            reply = error_reply("failed", exc.message, _hint(exc))
        except Exception as exc:  # noqa: BLE001 - a handler bug must not take the server down
            reply = error_reply("internal", f"{type(exc).__name__}: {exc}")
        return encode_reply(reply, req_id)

    async def _dispatch(self, request: Request, peer: Peer | None = None) -> dict[str, Any]:
        if request.op == "ping" and "ping" not in self.handlers:
            return {"ok": True, "pid": os.getpid(), "sandbox": self.sandbox}
        handler = self.handlers.get(request.op)
        if handler is None:
            raise ControlError("unsupported", f"this sandbox does not support {request.op!r}")
        if request.op in PEER_OPS:
            if peer is None:
                raise ControlError("peer_refused", f"{request.op!r} needs a vetted peer")
            result = handler(peer=peer, **request.params)
        else:
            result = handler(**request.params)
        if inspect.isawaitable(result):
            result = await result
        if result is None:
            result = {}
        if not isinstance(result, Mapping):
            raise TypeError(f"handler for {request.op!r} returned {type(result).__name__}, not a dict")
        return {"ok": True, **result}


def _hint(exc: StockadeError) -> dict[str, str]:
    """The hint travels to the client, which prints it with the error."""
    return {"hint": exc.hint} if exc.hint else {}


async def _discard(reader: asyncio.StreamReader, limit: int = 8 * MAX_REQUEST_BYTES) -> None:
    """Read and drop what the peer is still sending (bounded), so closing does not reset the
    connection before it has read our reply."""
    seen = 0
    while seen < limit:
        chunk = await asyncio.wait_for(reader.read(1 << 20), 2.0)
        if not chunk:
            return
        seen += len(chunk)


# -- clients ----------------------------------------------------------------------------------

SUN_PATH_MAX = 107  # bytes of a socket path, without the terminating NUL


@contextmanager
def socket_address(path: str | os.PathLike[str]) -> Iterator[str]:
    """`path` as an address to bind or connect: one longer than sun_path allows (a long
    $XDG_STATE_HOME) goes through an O_PATH descriptor of its directory, /proc/self/fd/N/NAME."""
    path = Path(path)
    if len(os.fsencode(str(path))) <= SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)



def _unavailable(path: Path, exc: OSError) -> ControlError:
    return ControlError(
        "unavailable", f"cannot reach the sandbox's control socket {path}: {exc.strerror or exc}",
        hint="is the sandbox running? `stockade list` shows the running ones",
    )


def _result(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise ControlError("unavailable", "the sandbox closed the control connection without replying")
    try:
        reply = json.loads(raw)
    except json.JSONDecodeError:
        raise ControlError("malformed", "the sandbox sent an unreadable reply") from None
    if not isinstance(reply, dict):
        raise ControlError("malformed", "the sandbox sent an unreadable reply")
    if not reply.get("ok"):
        extra = {k: v for k, v in reply.items() if k not in ("ok", "error", "detail", "request_id", "hint")}
        hint = reply.get("hint")
        raise ControlError(str(reply.get("error", "failed")), str(reply.get("detail", "request failed")),
                           hint=str(hint) if hint else None, data=extra)
    return reply


class ControlClient:
    """Blocking client for the CLI: `ControlClient(path).call("rules_approve", id=3)`."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._sock.settimeout(timeout)
        try:
            with socket_address(self.path) as address:
                self._sock.connect(address)
        except OSError as exc:
            self._sock.close()
            raise _unavailable(self.path, exc) from None
        self._file = self._sock.makefile("rb")

    def call(self, op: str, **params: Any) -> dict[str, Any]:
        """Send one request; return the reply, or raise ControlError when it is not ok."""
        try:
            self._sock.sendall(json.dumps({"op": op, **params}).encode() + b"\n")
            raw = self._file.readline(MAX_REQUEST_BYTES + 1)
        except TimeoutError:
            raise ControlError("timeout", f"the sandbox did not answer {op!r} in time") from None
        except OSError as exc:
            # A refused peer may see its write fail after the server's reply and close.
            raw = b""
            try:
                raw = self._file.readline(MAX_REQUEST_BYTES + 1)
            except OSError:
                pass
            if not raw:
                raise _unavailable(self.path, exc) from None
        return _result(raw)

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def call(path: str | os.PathLike[str], op: str, *, timeout: float = 60.0, **params: Any) -> dict[str, Any]:
    """One blocking request on a fresh connection."""
    with ControlClient(path, timeout=timeout) as client:
        return client.call(op, **params)


async def acall(path: str | os.PathLike[str], op: str, *, timeout: float = 60.0, **params: Any) -> dict[str, Any]:
    """One request from asyncio code (tests, a future `stockade` daemon-less UI)."""
    try:
        with socket_address(path) as address:
            reader, writer = await asyncio.open_unix_connection(address, limit=MAX_REQUEST_BYTES)
    except OSError as exc:
        raise _unavailable(Path(path), exc) from None
    try:
        writer.write(json.dumps({"op": op, **params}).encode() + b"\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.readline(), timeout)
    except asyncio.TimeoutError:
        raise ControlError("timeout", f"the sandbox did not answer {op!r} in time") from None
    finally:
        writer.close()
    return _result(raw)
