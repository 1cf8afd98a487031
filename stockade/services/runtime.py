"""The services of one running sandbox, on one thread with its own event loop (uvloop):

    state store run + StoreRecorder (events, --log-file, counters, proposals)
    ProxyServer on the sandbox's listener: policy holder, identity (sock_diag from the
        sandbox's netns), leaf cache (the sandbox CA), secrets, upstream TLS, inference router
    ControlServer: LivePolicy's policy_set/policy_show/rules_approve/rules_reject, status,
        exec_info

The supervisor's main thread keeps the sandbox's lifecycle and talks to this object only
through `serve`, `started`, `timed_out`, `failure_fd` and `close`. The thread starts as soon as
the sandbox's spec is sent: while the main thread waits for the CA and for init (it holds no
GIL then), it imports the store and the events and opens the store. `serve(ctx)` comes once the
command is started: the run is registered (it starts when the command does), then the proxy and
the control socket come up while the command runs (the listener's backlog holds its first
connections). A failure is reported through `failure_fd`, and the supervisor then kills the
sandbox and exits 125: nothing is ever served half-configured. A command that is over before
the proxy is up (`stockade run -- true`) does not wait for the proxy's imports (~0.4 s on a
small machine, abandoned at the next module: warmup.py): nothing can have connected to it.
Closed before `serve`, nothing is recorded (the sandbox never ran a command).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_STOCKADE_FAILURE
from .exec_info import exec_info
from .inputs import ServiceInputs, describe, key_environment
from .warmup import warm_up

if TYPE_CHECKING:  # asyncio and the events are imported on the services' thread, not before
    import asyncio

    from ..events.types import Event
    from ..isolation.spec import SandboxSpec
    from ..policy.model import Policy
    from ..supervisor import ProxyContext

CLOSE_TIMEOUT = 30.0  # the recorder's final flush included
FAST_SWITCH_S = 0.0005  # the GIL's switch interval while the services get ready (default 5 ms)


class Services:
    def __init__(self, sandbox: str, policy: Policy, spec: SandboxSpec, inputs: ServiceInputs) -> None:
        self.sandbox, self.policy, self.spec = sandbox, policy, spec
        self.inputs = inputs
        self.ctx: ProxyContext | None = None  # set by serve()
        self.error: str | None = None
        self.started_ms = 0
        self._go = threading.Event()  # serve() or close()
        self._policy_sha256 = ""
        self._revision: int | None = None  # the policy's, recorded with the run
        self._lock = threading.Lock()
        self._recorder: Any = None
        self._pending: list[Event] = []  # recorded before the recorder exists
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Future[None] | None = None
        self._stopping = False
        self._outcome: tuple[int | None, str] = (None, "exited")
        self._fail_r, self._fail_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        # Set up on the thread:
        self.store: Any = None
        self.run_id: int | None = None
        self.server: Any = None
        self.router: Any = None
        self.control: Any = None
        self.live: Any = None
        self.holder: Any = None
        self.tunnels_closed = 0  # by the last reload
        self._thread = threading.Thread(target=self._main, name="stockade-services", daemon=True)
        # Until the proxy serves, this thread imports while the main thread starts the command and
        # waits for it: the main thread gets the GIL back within FAST_SWITCH_S, not 5 ms, each time.
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(FAST_SWITCH_S)
        self._thread.start()

    # -- the supervisor's side (main thread) ------------------------------------------------

    @property
    def failure_fd(self) -> int:
        """Readable once setup failed (`error` says why)."""
        return self._fail_r

    def serve(self, ctx: ProxyContext) -> None:
        """The command is starting: register the run, then serve the proxy and the control socket."""
        with self._lock:
            self.ctx = ctx
            self.started_ms = time.time_ns() // 1_000_000
        self._go.set()

    def started(self, pid: int) -> None:
        from ..events.types import ProcessEvent

        self.record(ProcessEvent("launch", self.spec.argv, pid=pid))

    def timed_out(self) -> None:
        from ..events.types import ProcessEvent

        assert self.ctx is not None
        self.record(ProcessEvent("timeout", self.spec.argv, pid=self.ctx.processes.agent_pid))

    def close(self, exit_code: int | None = None, status: str = "exited") -> None:
        """Stop serving, record the exit, flush; the run is finished in the store."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self._outcome = (exit_code, status)
            loop, stop = self._loop, self._stop
        self._go.set()
        if loop is not None and stop is not None:
            try:
                loop.call_soon_threadsafe(_resolve, stop)
            except RuntimeError:
                pass  # the loop has already ended (the services failed)
        self._thread.join(CLOSE_TIMEOUT)
        if not self._thread.is_alive():  # else it may still write to the pipe: leave it to the exit
            for fd in (self._fail_r, self._fail_w):
                os.close(fd)

    def record(self, event: Event) -> None:
        """Thread-safe; events recorded before the recorder exists are kept until it does."""
        recorder = self._recorder
        if recorder is not None:
            recorder.record(event)
            return
        with self._lock:
            if self._recorder is None:
                self._pending.append(event)
                return
        self._recorder.record(event)

    # -- the thread -------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._open()
            self._go.wait()
            if self.ctx is None:
                return  # closed before the command started: there is no run to record
            self._register()
            if not self._stopping and warm_up(lambda: self._stopping):
                _run(self._serve())
        except Exception as exc:  # noqa: BLE001 - the supervisor kills the sandbox, exit 125
            self._fail(_message(exc))
        finally:
            sys.setswitchinterval(self._switch_interval)
            exit_code, _status = self._outcome
            agent_pid = self.ctx.processes.agent_pid if self.ctx is not None else None
            if self._stopping and not self.error and agent_pid is not None:
                from ..events.types import ProcessEvent

                self.record(ProcessEvent("exit", self.spec.argv, pid=agent_pid, exit_code=exit_code))
            self._finish_run()

    def _open(self) -> None:
        """Before the command starts: the imports and the store (the main thread is waiting for
        the sandbox meanwhile, and must get the GIL back at once when it answers "ready")."""
        from ..events.recorder import StoreRecorder  # noqa: F401 - imported now, used by _register
        from ..events.store import Store
        from ..events.types import ProcessEvent  # noqa: F401 - for started() and the exit

        self.store = Store.open_default()

    def _register(self) -> None:
        """The run, its policy revision and the recorder (no asyncio needed yet), while the
        command starts: LivePolicy takes the revision over when the services come up."""
        from ..events.recorder import StoreRecorder
        from ..events.types import ConfigEvent
        from ..policy.canonical import dump_policy, policy_sha256

        self.run_id = self.store.start_run(self.sandbox, pid=os.getpid(), command=self.spec.argv,
                                           policy_source=self.policy.source, started_ms=self.started_ms)
        recorder = StoreRecorder(self.sandbox, self.run_id, store=self.store, log_file=self.inputs.log_file,
                                 flush_interval_s=self.inputs.proposal_flush_s).start()
        with self._lock:
            self._recorder = recorder
            pending, self._pending = self._pending, []
        for event in pending:
            recorder.record(event)
        self._policy_sha256 = sha = policy_sha256(self.policy)
        policy, text = self.policy, self.inputs.policy_text
        if text is None:  # a Policy given as an object (the API), not loaded from a text
            text = dump_policy(policy)
        self._revision = self.store.add_revision(self.sandbox, yaml_text=text, sha256=sha, source=policy.source,
                                                 run_id=self.run_id).revision
        recorder.record(ConfigEvent("policy loaded", revision=self._revision, sha256=sha))

    async def _serve(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        with self._lock:
            self._loop, self._stop = loop, stop
            if self._stopping:
                stop.set_result(None)
        try:
            await self._start()
            sys.setswitchinterval(self._switch_interval)
            await stop
        finally:
            with self._lock:
                self._loop = None  # close() must not reach for a loop that is ending
            await self._stop_serving()

    async def _start(self) -> None:
        ctx, inputs, recorder = self.ctx, self.inputs, self._recorder
        assert ctx is not None
        import asyncio

        from ..inference import InferenceRouter, StoreRoutes
        from ..network.pipeline import PolicyHolder
        from ..network.server import ProxyServer
        from ..policy.engine import compile_policy

        self.holder = PolicyHolder(compile_policy(ctx.policy))
        loop = asyncio.get_running_loop()
        leaves, upstream_tls = loop.create_future(), loop.create_future()
        threading.Thread(target=_build_tls, args=(ctx, inputs.upstream_ca, loop, leaves, upstream_tls),
                         name="stockade-tls", daemon=True).start()
        routes = inputs.routes if inputs.routes is not None else StoreRoutes()
        self.router = InferenceRouter(routes, recorder=recorder,
                                      environ=key_environment(os.environ, ctx.spec.env),
                                      key_files=ctx.spec.hidden_files)
        self.server = ProxyServer(
            self.holder, identity=self._identity(), leaf_cache=leaves, secrets=inputs.secrets,
            recorder=recorder, upstream_tls=upstream_tls, inference=self.router.handle_channel)
        await self.server.start(ctx.listener)

        from ..control import ControlServer
        from ..events.live_policy import LivePolicy
        from ..isolation.spec import LANDLOCK_ONLY
        from ..state import control_socket_path
        from .exec_info import ExecRoots

        self.live = LivePolicy(store=self.store, sandbox=ctx.sandbox, run_id=self.run_id,
                               policy=ctx.policy, yaml_text=inputs.policy_text, prepare=self._prepare_policy,
                               recorder=recorder, revision=self._revision, sha256=self._policy_sha256)
        handlers = {**self.live.handlers(), "policy_set": self._policy_set, "status": self.status,
                    "exec_info": lambda: exec_info(ctx.spec, ctx.processes)}
        vet_peer = None
        if ctx.isolation == LANDLOCK_ONLY:  # the sandbox shares our namespaces: ExecRoots vets peers
            exec_roots = ExecRoots(self.server.identity)
            handlers["exec_register"] = exec_roots.register
            vet_peer = exec_roots.refuse_sandboxed
        self.control = ControlServer(control_socket_path(ctx.sandbox), handlers, sandbox=ctx.sandbox,
                                     recorder=recorder, vet_peer=vet_peer)
        await self.control.start()
        # A CA or an --upstream-ca that cannot be used fails the services (and the sandbox).
        await leaves
        await upstream_tls

    def _identity(self) -> Any:
        from ..isolation.spec import LANDLOCK_ONLY
        from ..network.identity import IdentityResolver

        ctx = self.ctx
        assert ctx is not None
        # The root of the tree that counts is stockade's init: trusted (not scanned, not an ancestor).
        if ctx.isolation == LANDLOCK_ONLY:
            # The host's /proc: init is the command's parent; as a user, other users' processes
            # cannot be read and cannot hold our sockets.
            return IdentityResolver(ctx.procfs, root_pid=ctx.processes.init_pid, trusted_root=True,
                                    skip_unreadable=os.geteuid() != 0)
        return IdentityResolver(ctx.procfs, diag=ctx.diag, trusted_root=True)

    async def _stop_serving(self) -> None:
        for part in (self.control, self.server, self.router):
            if part is None:
                continue
            try:
                await (part.aclose() if part is self.router else part.close())
            except Exception as exc:  # noqa: BLE001 - shut the others down anyway
                _warn(f"stopping {type(part).__name__}: {_message(exc)}")

    def _finish_run(self) -> None:
        recorder = self._recorder
        if recorder is not None:
            recorder.close()
        if self.store is None:
            return
        exit_code, status = self._outcome
        if self.error is not None:
            exit_code, status = EXIT_STOCKADE_FAILURE, "failed"
        try:
            if self.run_id is not None:
                self.store.finish_run(self.run_id, status=status, exit_code=exit_code)
        except Exception as exc:  # noqa: BLE001
            _warn(f"recording the end of the run: {_message(exc)}")
        finally:
            if self.inputs.exit_after:
                self.store.leave_open()
            else:
                self.store.close()

    def _fail(self, message: str) -> None:
        if self.error is None:
            self.error = message
            try:
                os.write(self._fail_w, b"!")
            except OSError:
                pass

    # -- control handlers (on the loop) -----------------------------------------------------

    def _prepare_policy(self, policy: Any) -> Any:
        """LivePolicy's prepare: compile the new generation (raising before anything changed);
        installing it is one holder swap, and once its revision is committed the raw tunnels it
        refuses are closed and the secrets' default hosts follow it."""
        from ..events.live_policy import Prepared
        from ..network.credentials import policy_hosts
        from ..policy.engine import compile_policy

        engine = compile_policy(policy)

        def install() -> Any:
            previous = self.holder.engine
            self.holder.swap(engine)
            return lambda: self.holder.swap(previous)

        def settle() -> None:
            try:
                self.tunnels_closed = self.server.revalidate()
            except Exception as exc:  # noqa: BLE001 - fail closed: no raw tunnel outlives an unchecked reload
                _warn(f"revalidating raw tunnels after a reload: {_message(exc)}; closing them all")
                self.tunnels_closed = len(self.server.tunnels)
                for tunnel in list(self.server.tunnels):
                    tunnel.client.abort()
                    tunnel.upstream.abort()
                self.server.tunnels.clear()
            if self.inputs.secrets is not None:
                self.inputs.secrets.bind_default_hosts(policy_hosts(policy))

        return Prepared(install, settle)

    def _policy_set(self, yaml_text: str, source: str = "policy set", wait: bool = True) -> dict[str, Any]:
        self.tunnels_closed = 0
        reply = self.live.set_policy(yaml_text, source, wait)
        return {**reply, "tunnels_closed": self.tunnels_closed}

    def status(self) -> dict[str, Any]:
        ctx, server = self.ctx, self.server
        assert ctx is not None
        now = time.time_ns() // 1_000_000
        return {
            "sandbox": ctx.sandbox, "run_id": self.run_id, "supervisor_pid": os.getpid(),
            "isolation": ctx.isolation, "init_pid": ctx.processes.init_pid,
            "agent_pid": ctx.processes.agent_pid, "command": list(ctx.spec.argv),
            "started_ms": self.started_ms, "uptime_s": (now - self.started_ms) / 1000,
            "policy_revision": self.live.revision, "policy_sha256": self.live.sha256,
            "policy_generation": self.holder.generation,
            "connections": server.active, "raw_tunnels": len(server.tunnels),
            "events": self._recorder.stats() if self._recorder is not None else {},
            **describe(self.inputs),
        }


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _build_tls(ctx: ProxyContext, upstream_ca: str | None, loop: asyncio.AbstractEventLoop,
               leaves: asyncio.Future[Any], upstream_tls: asyncio.Future[Any]) -> None:
    """On its own thread, while the proxy already serves what needs no TLS of its own: the TLS
    stack's import (cryptography, ~55 ms) and the system roots (~50 ms, parsed without the GIL).
    A terminated tunnel that comes first waits for them (ProxyServer.leaves)."""
    try:
        from ..network.tls import LeafCache

        cache = LeafCache(ctx.ca.load())
        results: tuple[Any, Any] = (cache, cache.upstream_context(upstream_ca))
    except Exception as exc:  # noqa: BLE001 - given to whoever waits, the services first
        results = (exc, exc)

    def settle() -> None:
        for future, result in zip((leaves, upstream_tls), results):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop ended first (a short command): nobody waits
        pass


def _message(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


def _warn(message: str) -> None:
    print(f"stockade: {message}", file=sys.stderr, flush=True)


def _run(coro: Any) -> None:
    import asyncio

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; asyncio is the fallback
        asyncio.run(coro)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)

