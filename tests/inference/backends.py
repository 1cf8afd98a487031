"""Fake model backends that speak the real OpenAI and Anthropic wire formats, streaming included.

Each is a real HTTP/1.1 server (stdlib, a thread per connection, keep-alive) that records what
it received and behaves as the test scripts it: stream slowly, hold the last events until the
test releases them, fail or stall mid-stream, delay its response, answer an error, gzip its body.

In-process:
    with FakeBackend("openai") as backend:
        backend.script(Scenario(hold_last=True))
        ... backend.received[-1].headers ...

In another process or network namespace (e.g. `testnet.spawn`; see remote.py), scripted over
HTTP on its port or on a Unix control socket (reachable across network namespaces):
    python -m tests.inference.backends openai 10.77.0.5 8000 /tmp/x/openai.sock [EXPECTED_KEY]
    POST /_control/scenario {"chunk_delay": 0.1}   GET /_control/received
    POST /_control/release                          POST /_control/reset
    RemoteBackend("/tmp/x/openai.sock").script(hold_last=True)
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TEXT = "Hello from the fake backend"


@dataclass
class Scenario:
    status: int = 200
    error_type: str | None = None  # the protocol's error type when status >= 400
    error_message: str = "scripted error"
    echo_key: bool = False  # put the credential it received into the error message
    text: str = TEXT
    usage: tuple[int, int] = (11, 5)  # (input, output) tokens reported
    chunk_delay: float = 0.0  # between SSE events
    head_delay: float = 0.0  # before the status line
    hold_last: bool = False  # before the final events, wait until the test calls release()
    fail_after: int | None = None  # close the connection abruptly after this many events (JSON: bytes)
    stall_after: int | None = None  # go silent after this many events (JSON: bytes) until released
    cut_mid_event: bool = False  # with fail_after: send half of the next event first
    gzip: bool = False  # gzip a JSON body (Content-Encoding)


@dataclass
class Received:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers_named(name)
        return values[0] if values else None

    def headers_named(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


class FakeBackend:
    def __init__(self, protocol: str, host: str = "127.0.0.1", port: int = 0, *,
                 tls: ssl.SSLContext | None = None, expected_key: str | None = None) -> None:
        assert protocol in ("openai", "anthropic")
        self.protocol = protocol
        self.expected_key = expected_key
        self.received: list[Received] = []
        self.release_event = threading.Event()
        self.first_event_sent = threading.Event()
        self.finished = threading.Event()  # the last scripted stream was sent completely
        self._scenarios: deque[Scenario] = deque()
        self.default = Scenario()
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"backend": self})
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.tls = tls is not None
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})

    # -- control ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        host = self.server.server_address[0]
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def script(self, *scenarios: Scenario) -> None:
        """Behaviours for the next requests, in order; then `default` again."""
        with self._lock:
            self._scenarios.extend(scenarios)

    def next_scenario(self) -> Scenario:
        with self._lock:
            return self._scenarios.popleft() if self._scenarios else self.default

    def release(self) -> None:
        self.release_event.set()

    def reset(self) -> None:
        with self._lock:
            self._scenarios.clear()
            self.received.clear()
        self.release_event.clear()
        self.first_event_sent.clear()
        self.finished.clear()

    def start(self) -> FakeBackend:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release_event.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    backend: FakeBackend

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def setup(self) -> None:
        super().setup()
        # Like real model servers (Go, uvicorn): small writes go out at once, no Nagle delay.
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    # -- dispatch --------------------------------------------------------------------------

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        if path.startswith("/_control/"):
            self._control(path, body)
            return
        b = self.backend
        with b._lock:
            b.received.append(Received(self.command, self.path, list(self.headers.items()), body))
        sc = b.next_scenario()
        if sc.head_delay:
            time.sleep(sc.head_delay)
        key = self._credential()
        if b.expected_key is not None and key != b.expected_key:
            message = f"invalid api key {key}" if sc.echo_key else "invalid api key"
            self._error(401, "authentication_error" if b.protocol == "anthropic" else "invalid_request_error", message)
            return
        if sc.status >= 400:
            message = f"{sc.error_message} (key {key})" if sc.echo_key else sc.error_message
            self._error(sc.status, sc.error_type or "api_error", message)
            return
        try:
            request = json.loads(body) if body else {}
        except ValueError:
            self._error(400, "invalid_request_error", "backend: body is not JSON")
            return
        if request.get("stream"):
            self._stream(path, request, sc)
        else:
            self._json(200, _reply(b.protocol, self.command, path, request, sc), sc)

    def _credential(self) -> str | None:
        if self.backend.protocol == "anthropic":
            return self.headers.get("x-api-key")
        auth = self.headers.get("authorization") or ""
        return auth[7:] if auth.startswith("Bearer ") else None

    def _control(self, path: str, body: bytes) -> None:
        b = self.backend
        if path == "/_control/scenario":
            b.script(Scenario(**{k: tuple(v) if k == "usage" else v for k, v in json.loads(body).items()}))
            self._json(200, {"ok": True})
        elif path == "/_control/release":
            b.release()
            self._json(200, {"ok": True})
        elif path == "/_control/reset":
            b.reset()
            self._json(200, {"ok": True})
        elif path == "/_control/received":
            with b._lock:
                items = [dataclasses.asdict(r) | {"body": r.body.decode("utf-8", "replace")} for r in b.received]
            self._json(200, {"received": items, "finished": b.finished.is_set()})
        else:
            self._json(404, {"error": "unknown control path"})

    # -- responses -------------------------------------------------------------------------

    def _json(self, status: int, payload: Any, sc: Scenario | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("x-request-id", "req_fake_1")
        self.send_header("set-cookie", "backend_session=abc")
        if sc is not None and sc.gzip:
            data = gzip.compress(data)
            self.send_header("content-encoding", "gzip")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        if sc is not None and sc.fail_after is not None:  # a JSON body cut after that many bytes
            self.wfile.write(data[:sc.fail_after])
            self._abort()
            return
        if sc is not None and sc.stall_after is not None:  # ... or stalled there
            self.wfile.write(data[:sc.stall_after])
            self.backend.release_event.wait(60)
            self._abort()
            return
        self.wfile.write(data)
        if not self.path.startswith("/_control/"):  # a control reply is not a scripted response
            self.backend.finished.set()

    def _error(self, status: int, kind: str, message: str) -> None:
        if self.backend.protocol == "anthropic":
            payload: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            payload = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        self._json(status, payload)

    def _stream(self, path: str, request: dict[str, Any], sc: Scenario) -> None:
        b = self.backend
        events = _events(b.protocol, path, request, sc)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        hold_from = max(1, len(events) - 2)
        for i, event in enumerate(events):
            if sc.fail_after is not None and i == sc.fail_after:
                if sc.cut_mid_event:
                    self._chunk(event[: len(event) // 2])
                self._abort()
                return
            if sc.stall_after is not None and i == sc.stall_after:
                b.release_event.wait(60)
                self._abort()
                return
            if sc.hold_last and i == hold_from:
                b.release_event.wait(30)
            if i and sc.chunk_delay:
                time.sleep(sc.chunk_delay)
            try:
                self._chunk(event)
            except OSError:
                return
            if i == 0:
                b.first_event_sent.set()
        self.wfile.write(b"0\r\n\r\n")
        b.finished.set()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))

    def _abort(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


# -- the two wire formats ----------------------------------------------------------------

def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + (data if isinstance(data, bytes) else json.dumps(data).encode()) + b"\n\n"


def _words(text: str) -> list[str]:
    parts = text.split(" ")
    return [p if i == 0 else " " + p for i, p in enumerate(parts)]


def _reply(protocol: str, method: str, path: str, req: dict[str, Any], sc: Scenario) -> dict[str, Any]:
    model = req.get("model", "fake-model")
    tin, tout = sc.usage
    if protocol == "anthropic":
        if path == "/v1/messages/count_tokens":
            return {"input_tokens": tin}
        if path.startswith("/v1/models"):
            return _anthropic_models(path)
        return {"id": "msg_fake_1", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": sc.text}], "stop_reason": "end_turn",
                "stop_sequence": None, "usage": {"input_tokens": tin, "output_tokens": tout}}
    if path == "/v1/models":
        return {"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}]}
    if path.startswith("/v1/models/"):
        return {"id": path[len("/v1/models/"):], "object": "model", "created": 0, "owned_by": "fake"}
    if path == "/v1/embeddings":
        vector = [0.25, -0.5, 1.0]
        inputs = req.get("input")
        count = len(inputs) if isinstance(inputs, list) else 1
        emb: Any = (base64.b64encode(struct.pack("<3f", *vector)).decode()
                    if req.get("encoding_format") == "base64" else vector)
        return {"object": "list", "model": model,
                "data": [{"object": "embedding", "index": i, "embedding": emb} for i in range(count)],
                "usage": {"prompt_tokens": tin, "total_tokens": tin}}
    usage = {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout}
    if path == "/v1/completions":
        return {"id": "cmpl-fake-1", "object": "text_completion", "created": 1, "model": model,
                "choices": [{"index": 0, "text": sc.text, "finish_reason": "stop", "logprobs": None}],
                "usage": usage}
    if path == "/v1/responses":
        return _response_object(model, sc)
    return {"id": "chatcmpl-fake-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": sc.text, "refusal": None}}],
            "usage": usage}


def _response_object(model: str, sc: Scenario, status: str = "completed") -> dict[str, Any]:
    tin, tout = sc.usage
    return {"id": "resp_fake_1", "object": "response", "created_at": 1, "status": status, "model": model,
            "output": [{"type": "message", "id": "msg_fake_1", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": sc.text, "annotations": []}]}],
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "usage": {"input_tokens": tin, "output_tokens": tout, "total_tokens": tin + tout,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}}}


def _anthropic_models(path: str) -> dict[str, Any]:
    model = {"type": "model", "id": "claude-fake", "display_name": "Claude Fake",
             "created_at": "2025-01-01T00:00:00Z"}
    if path.startswith("/v1/models/"):
        return model | {"id": path[len("/v1/models/"):]}
    return {"data": [model], "has_more": False, "first_id": "claude-fake", "last_id": "claude-fake"}


def _events(protocol: str, path: str, req: dict[str, Any], sc: Scenario) -> list[bytes]:
    model = req.get("model", "fake-model")
    tin, tout = sc.usage
    words = _words(sc.text)
    if protocol == "anthropic":
        msg = {"id": "msg_fake_1", "type": "message", "role": "assistant", "model": model, "content": [],
               "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": tin, "output_tokens": 1}}
        out = [_sse({"type": "message_start", "message": msg}, "message_start"),
               _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                    "content_block_start"),
               _sse({"type": "ping"}, "ping")]
        out += [_sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}},
                     "content_block_delta") for w in words]
        out += [_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
                _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                      "usage": {"output_tokens": tout}}, "message_delta"),
                _sse({"type": "message_stop"}, "message_stop")]
        return out
    if path == "/v1/responses":
        base = _response_object(model, sc, "in_progress") | {"output": [], "usage": None}
        done = _response_object(model, sc)
        item = done["output"][0]
        part = item["content"][0]
        ids = {"item_id": "msg_fake_1", "output_index": 0}
        steps: list[tuple[str, dict[str, Any]]] = [
            ("response.created", {"response": base}),
            ("response.output_item.added", {"output_index": 0, "item": item | {"status": "in_progress", "content": []}}),
            ("response.content_part.added", ids | {"content_index": 0, "part": part | {"text": ""}}),
        ]
        steps += [("response.output_text.delta", ids | {"content_index": 0, "delta": w, "logprobs": []}) for w in words]
        steps += [("response.output_text.done", ids | {"content_index": 0, "text": sc.text, "logprobs": []}),
                  ("response.content_part.done", ids | {"content_index": 0, "part": part}),
                  ("response.output_item.done", {"output_index": 0, "item": item}),
                  ("response.completed", {"response": done})]
        return [_sse({"type": name, "sequence_number": i} | data, name) for i, (name, data) in enumerate(steps)]
    completions = path == "/v1/completions"
    kind = "text_completion" if completions else "chat.completion.chunk"

    def chunk(choice: dict[str, Any], usage: Any = None) -> bytes:
        data = {"id": "chatcmpl-fake-1", "object": kind, "created": 1, "model": model,
                "choices": [choice] if choice else []}
        if usage is not None or (req.get("stream_options") or {}).get("include_usage"):
            data["usage"] = usage
        return _sse(data)

    if completions:
        out = [chunk({"index": 0, "text": w, "finish_reason": None, "logprobs": None}) for w in words]
        out.append(chunk({"index": 0, "text": "", "finish_reason": "stop", "logprobs": None}))
    else:
        out = [chunk({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None})]
        out += [chunk({"index": 0, "delta": {"content": w}, "finish_reason": None}) for w in words]
        out.append(chunk({"index": 0, "delta": {}, "finish_reason": "stop"}))
    if (req.get("stream_options") or {}).get("include_usage"):
        out.append(chunk({}, {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout}))
    out.append(_sse(b"[DONE]"))
    return out


class _UnixHTTPServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


def serve_control(backend: FakeBackend, path: str) -> None:
    """Serve the /_control endpoints on a Unix socket as well: a path in the file system is
    reachable from every network namespace, so a test outside the backend's namespace can
    script it (RemoteBackend)."""
    handler = type("ControlHandler", (_Handler,), {"backend": backend, "address_string": lambda self: "unix"})
    server = _UnixHTTPServer(path, handler)
    threading.Thread(target=server.serve_forever, daemon=True, kwargs={"poll_interval": 0.05}).start()


class RemoteBackend:
    """Scripts a FakeBackend running in another process through its control socket."""

    def __init__(self, control_path: str) -> None:
        self.path = control_path

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        import http.client

        class Conn(http.client.HTTPConnection):
            def connect(inner) -> None:  # noqa: N805 - http.client's hook
                inner.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                inner.sock.connect(self.path)

        conn = Conn("backend", timeout=30)
        body = json.dumps(payload).encode() if payload is not None else None
        conn.request(method, path, body=body, headers={"Content-Length": str(len(body or b""))})
        reply = conn.getresponse()
        data = json.loads(reply.read())
        conn.close()
        return data

    def script(self, **scenario: Any) -> None:
        self._call("POST", "/_control/scenario", scenario)

    def release(self) -> None:
        self._call("POST", "/_control/release", {})

    def reset(self) -> None:
        self._call("POST", "/_control/reset", {})

    @property
    def received(self) -> list[Received]:
        items = self._call("GET", "/_control/received")["received"]
        return [Received(i["method"], i["path"], [tuple(h) for h in i["headers"]], i["body"].encode())
                for i in items]

    @property
    def finished(self) -> bool:
        return bool(self._call("GET", "/_control/received")["finished"])


def main(argv: list[str]) -> None:
    """python -m tests.inference.backends openai|anthropic HOST PORT [CONTROL_SOCKET [EXPECTED_KEY]]"""
    protocol, host, port = argv[0], argv[1], int(argv[2])
    backend = FakeBackend(protocol, host, port, expected_key=argv[4] if len(argv) > 4 else None)
    if len(argv) > 3:
        serve_control(backend, argv[3])
    print(f"listening {backend.url}", flush=True)
    backend.server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main(sys.argv[1:])
