"""The supervisor: owns one sandbox from `stockade run` to its exit code.

    fork the launcher first (main thread, no thread exists yet; it enters the namespaces and
    imports what init needs)  ->  fork the CA minter  ->  load the policy, check the run
    options and decide the spec, send it  ->  start the services' thread (it opens the store
    while this one waits)  ->  receive the proxy listener (and a sock_diag socket of the
    sandbox's netns) and the sandbox's /proc  ->  print the report  ->  let init start the
    command  ->  hand the services the listener (they register the run, then serve; the
    command's first connections wait in the listener's backlog)  ->  forward signals, hand the
    terminal back and forth on Ctrl-Z, enforce --timeout  ->  stop the services, recording the
    exit  ->  exit code (DESIGN.md §5).

The proxy, the event store and the control socket are plugged in through
`start_services(...) -> Services` and `Services.serve(ProxyContext)` (stockade/services/): they
run on their own thread while the main thread keeps the lifecycle, and hear about it through
`started`, `timed_out` and `close`; a services failure (`failure_fd`) ends the sandbox with
exit 125.
"""

from __future__ import annotations

import errno
import os
import selectors
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING, Any, Protocol

from .errors import EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, EXIT_STOCKADE_FAILURE, EXIT_TIMEOUT, StockadeError
from .isolation import channel, gcpause, record
from .isolation.channel import SetupError
from .isolation.environment import BUNDLE_FILE, CA_FILE
from .isolation.spec import LANDLOCK_ONLY, NAMESPACES, SandboxSpec
from .isolation.terminal import set_foreground
from .isolation.wakeup import FORWARDED, install, noop
from .isolation.wakeup import drain as _drain
from .isolation.wakeup import kill as _kill
from .records import Struct, field
from .services.inputs import ServiceOptions

if TYPE_CHECKING:  # the policy package is imported after the launcher is forked
    from .isolation.camint import CaMaterial
    from .isolation.prepare import Prepared
    from .policy.model import Policy
    from .services.inputs import ServiceInputs

TIMEOUT_GRACE = 1.0  # seconds between SIGTERM and SIGKILL on --timeout
SETUP_TIMEOUT = 60.0  # a sandbox that is not ready by then is broken


class RunOptions(Struct, frozen=True):
    argv: tuple[str, ...]
    policy_path: str | None = None  # None: the built-in default policy
    policy: Policy | None = None  # an already loaded policy (wins over policy_path)
    name: str | None = None
    workdir: str | None = None
    timeout: float | None = None
    quiet: bool = False
    isolation: str = NAMESPACES
    services: ServiceOptions = ServiceOptions()  # --secret, --upstream-ca, --inference-routes, --log-file


class CommandFailed(StockadeError):
    """The sandbox could not start the command (setup failure, or exec failure: 126/127)."""

    def __init__(self, message: str, exit_code: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code


# -- the proxy hook ---------------------------------------------------------------------------

class SandboxProcesses(Struct):
    """Who is who. Host pids are in the supervisor's pid namespace; `agent_pid` is in the
    sandbox's (resolve it, and any socket owner, through `ProxyContext.procfs`)."""

    launcher_pid: int | None  # None in the landlock-only mode
    init_pid: int  # host pid of the sandbox's PID 1
    agent_pid: int | None = None  # the command, in sandbox terms; set once it is forked


class ProxyContext(Struct, frozen=True):
    sandbox: str
    policy: Policy
    listener: socket.socket  # listening; created inside the sandbox's netns (landlock mode: host)
    procfs: int  # O_PATH fd of the sandbox's /proc: openat(procfs, "<pid>/net/tcp"), ...
    ca: CaMaterial  # PEMs in memory; ca.load() -> CertificateAuthority (imports cryptography)
    processes: SandboxProcesses
    isolation: str  # NAMESPACES | LANDLOCK_ONLY
    spec: SandboxSpec
    inputs: ServiceInputs
    diag: socket.socket | None = None  # sock_diag socket of the sandbox's netns (None: procfs tables)


class Services(Protocol):
    error: str | None  # why the services failed

    @property
    def failure_fd(self) -> int: ...  # readable once they failed

    def serve(self, ctx: ProxyContext) -> None: ...  # the command is starting
    def started(self, pid: int) -> None: ...
    def timed_out(self) -> None: ...
    def close(self, exit_code: int | None = None, status: str = "exited") -> None: ...


def start_services(sandbox: str, policy: Policy, spec: SandboxSpec, inputs: ServiceInputs) -> Services:
    """Start the sandbox's services (events, proxy, control socket) on their own thread; they
    get ready while the sandbox starts, and serve once `serve(ctx)` hands them the listener."""
    from .services import start_services as start

    return start(sandbox, policy, spec, inputs)


# -- the supervisor ---------------------------------------------------------------------------

def load_policy(path: str | None) -> Policy:
    """The policy at `path`, or the built-in default; PolicyError (exit 125) lists every error."""
    if path is None:
        from .policy.default import default_policy

        return default_policy()
    from .policy.loader import load_policy_file

    return load_policy_file(path)


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None  # the loader reports it, located


def run_sandbox(options: RunOptions) -> int:
    """Run the command in a sandbox; its exit code, or raise StockadeError (exit_code set)."""
    return Supervisor(options).run()


class _Setup(Struct):
    listener: socket.socket | None = None
    diag: socket.socket | None = None
    procfs: int | None = None
    facts: dict[str, Any] | None = None
    init_pid: int | None = None


class Supervisor(Struct):
    options: RunOptions
    name: str = ""
    policy: Any = None  # the loaded Policy
    child: int = 0
    failures: list[SetupError] = field(default_factory=list)
    stopped: bool = False
    timed_out: bool = False
    interrupted: int = 0  # a signal that arrived before the command started
    child_status: int | None = None
    status_data: bytes = b""
    tls_dir: str | None = None  # landlock-only mode: where the CA files are
    inputs: Any = None  # ServiceInputs, decided with the spec

    def run(self) -> int:
        from . import state
        from .isolation import prefork
        from .isolation.camint import fork_minter, private_fds
        from .isolation.spec import PROXY_PORT

        self.name = state.validate_name(self.options.name) if self.options.name else state.generate_name()
        # From the main thread (no other thread exists yet): the launcher, unless main() forked
        # it already (isolation/prefork.py).
        launcher = prefork.take(self.options.isolation)
        if launcher is None:
            host_listener = None
            if self.options.isolation == LANDLOCK_ONLY:
                from .isolation.namespaces import proxy_listener

                host_listener = proxy_listener(port=0)
            launcher = prefork.fork_launcher(self.options.isolation, host_listener, close=private_fds(),
                                             workdir=self.options.workdir)
        self.child, ctl, status_r, host_listener = launcher.pid, launcher.ctl, launcher.status_r, \
            launcher.host_listener
        minter = fork_minter(self.name, close=(ctl.fileno(), status_r))  # the CA, on the other core
        wake_r = install(ignored=(signal.SIGPIPE,))  # backgrounded, a job like any other: TTIN/TTOU stop it
        try:
            prepared, lock = self._prepare(host_listener.getsockname()[1] if host_listener else PROXY_PORT)
        except BaseException:
            self._abort()
            self._wait_child()
            raise
        spec = prepared.spec
        services: Services | None = None
        code, status = EXIT_STOCKADE_FAILURE, "failed"
        try:
            try:
                channel.send(ctl, "spec", blob=record.dumps(spec))
            except OSError:
                return self._finish(status_r)  # the child died during its setup: it says why
            services = start_services(self.name, self.policy, spec, self.inputs)
            code = self._supervise(spec, prepared, ctl, status_r, wake_r, host_listener, minter, services)
            status = self._run_status(code)
            return code
        except CommandFailed as exc:
            code = exc.exit_code
            raise
        finally:
            if services is not None:
                services.close(code, status)  # records the exit, if the command ran
            lock.release()
            if self.tls_dir:
                import shutil

                shutil.rmtree(self.tls_dir, ignore_errors=True)
            if spec.terminal_fd is not None:
                set_foreground(spec.terminal_fd, os.getpgrp())

    def _prepare(self, proxy_port: int) -> tuple[Prepared, Any]:
        """Load the policy, name and lock the sandbox, decide the spec (runs beside the launcher)."""
        from . import state
        from .isolation.prepare import Request, prepare

        from .services import prepare_inputs

        text = None
        if self.options.policy is not None:
            policy = self.options.policy
        elif self.options.policy_path is not None:
            from .policy.loader import load_policy_text

            text = _read_text(self.options.policy_path)
            policy = load_policy(self.options.policy_path) if text is None else \
                load_policy_text(text, self.options.policy_path)
        else:
            from .policy.default import default_policy, default_policy_text

            text = default_policy_text()  # revision 1 is the text, with its comments
            policy = default_policy()
        self.policy = policy
        self.inputs = inputs = prepare_inputs(self.options.services, policy, text)
        lock = state.RunLock(self.name)
        try:
            state_dir = str(state.state_dir())
            extra: dict[str, Any] = {}
            if self.options.isolation == LANDLOCK_ONLY:
                # Not in the state directory (0700, and Landlock must not open it): a directory of
                # its own that the command can read, removed when the sandbox ends.
                import tempfile

                self.tls_dir = tempfile.mkdtemp(prefix=f"stockade-{self.name}-tls-")
                os.chmod(self.tls_dir, 0o755)
                extra = {"proxy_port": proxy_port, "tls_dir": self.tls_dir}
            req = Request(argv=self.options.argv, policy=policy, name=self.name, workdir=self.options.workdir,
                          isolation=self.options.isolation, env_overrides=inputs.env_overrides,
                          hidden_files=inputs.hidden_files, **extra)
            return prepare(req, state_dir=state_dir), lock
        except BaseException:
            lock.release()
            raise

    # -- phases ------------------------------------------------------------------------------

    def _supervise(self, spec: SandboxSpec, prepared: Prepared, ctl: socket.socket, status_r: int,
                   wake_r: int, host_listener: socket.socket | None, minter: tuple[int, int],
                   services: Services) -> int:
        from .isolation.camint import receive

        try:
            ca = receive(*minter)
        except OSError as exc:
            self._abort()
            self._wait_child()
            raise CommandFailed(f"sandbox setup failed (ca): {exc}", EXIT_STOCKADE_FAILURE) from None
        files = {CA_FILE: ca.certificate_pem, BUNDLE_FILE: ca.bundle_pem}
        if spec.isolation == LANDLOCK_ONLY:
            _write_tls_files(spec.ca_dir, files)
        setup = self._await_ready(ctl, status_r, wake_r, launcher=spec.isolation == NAMESPACES)
        if setup is None:
            return self._finish(status_r)
        listener = host_listener or setup.listener
        assert listener is not None and setup.procfs is not None and setup.facts is not None
        processes = SandboxProcesses(self.child if spec.isolation == NAMESPACES else None,
                                     setup.init_pid or self.child)
        from .isolation.report import build_report, format_report

        notes = prepared.notes
        if not self.options.quiet:  # the notes are printed only
            from .network.limits import expected_connection_limit_notice

            connections = expected_connection_limit_notice()  # the proxy raises its limit later
            notes += (connections,) if connections else ()
        report = build_report(spec, notes, prepared.not_enforced, setup.facts, self.policy.source,
                              f"127.0.0.1:{listener.getsockname()[1]}")
        if not self.options.quiet:
            print(format_report(report), file=sys.stderr, flush=True)
        if spec.hard and report.not_enforced:
            self._abort()
            raise CommandFailed("hard_requirement: not enforced: " + "; ".join(report.not_enforced),
                                EXIT_STOCKADE_FAILURE)
        if services.error is not None:  # e.g. an unwritable store: the command never starts
            self.failures.append(SetupError("services", services.error))
            self._abort()
            return self._finish(status_r)
        names = list(files)
        channel.send(ctl, "start", {"files": [[n, len(files[n])] for n in names]},
                     blob=b"".join(files[n] for n in names))
        # After the start: the command's first connections wait in the listener's backlog.
        services.serve(ProxyContext(self.name, self.policy, listener, setup.procfs, ca, processes,
                                    spec.isolation, spec, self.inputs, setup.diag))
        gcpause.resume()  # the start is over (paused by main())
        self._loop(spec, ctl, status_r, wake_r, processes, services)
        return self._finish(status_r)

    def _await_ready(self, ctl: socket.socket, status_r: int, wake_r: int, *, launcher: bool) -> _Setup | None:
        """Collect /proc and the facts from init and, with `launcher` (namespaces), the listener
        and init's pid from the launcher; None when setup failed (or was interrupted). The two
        processes write to the channel independently: init's "ready" can come first."""
        setup = _Setup()
        deadline = time.monotonic() + SETUP_TIMEOUT
        with selectors.DefaultSelector() as sel:
            sel.register(ctl, selectors.EVENT_READ, "ctl")
            sel.register(wake_r, selectors.EVENT_READ, "signal")
            while setup.facts is None or setup.procfs is None or (launcher and setup.init_pid is None):
                events = sel.select(max(0.0, deadline - time.monotonic()))
                if not events:
                    self.failures.append(SetupError("setup", f"the sandbox was not ready after {SETUP_TIMEOUT:.0f}s"))
                    self._abort()
                    return None
                for key, _ in events:
                    if key.data == "signal":
                        sigs = [s for s in _drain(wake_r) if s in FORWARDED and s != signal.SIGWINCH]
                        if sigs:
                            self.interrupted = sigs[0]
                            self._abort()  # interrupted while starting: nothing to hand the signal to
                            return None
                        continue
                    msg = channel.recv(ctl)
                    if msg is None:
                        return None  # the sandbox died; the status pipe says why
                    if msg.kind == "launcher":
                        setup.listener = socket.socket(fileno=msg.fds[0])
                        if len(msg.fds) > 1:
                            setup.diag = socket.socket(fileno=msg.fds[1])
                        setup.init_pid = msg.data["init_pid"]
                    elif msg.kind == "procfs":
                        setup.procfs = msg.fds[0]
                    elif msg.kind == "ready":
                        setup.facts = msg.data
        return setup

    def _loop(self, spec: SandboxSpec, ctl: socket.socket, status_r: int, wake_r: int,
              processes: SandboxProcesses, services: Services) -> None:
        init = processes.init_pid
        kill_at = term_at = None
        status_done = False  # the status pipe's EOF: no setup failure can be reported any more
        if self.options.timeout is not None:
            term_at = time.monotonic() + self.options.timeout
        with selectors.DefaultSelector() as sel:
            sel.register(ctl, selectors.EVENT_READ, "ctl")
            sel.register(wake_r, selectors.EVENT_READ, "signal")
            sel.register(status_r, selectors.EVENT_READ, "status")
            sel.register(services.failure_fd, selectors.EVENT_READ, "services")
            while True:
                due = [t for t in (term_at, kill_at) if t is not None]
                wait = max(0.0, min(due) - time.monotonic()) if due else None
                events = sel.select(wait)
                now = time.monotonic()
                if term_at is not None and now >= term_at:
                    self.timed_out, term_at, kill_at = True, None, now + TIMEOUT_GRACE
                    services.timed_out()
                    _kill(init, signal.SIGTERM)
                if kill_at is not None and now >= kill_at:
                    kill_at = None
                    self._kill_all(spec, processes)
                events.sort(key=lambda event: event[0].data != "status")  # its EOF before an "exited"
                for key, _ in events:
                    if key.data == "signal":
                        if self._on_signals(_drain(wake_r), spec, init):
                            return
                    elif key.data == "ctl":
                        msg = channel.recv(ctl)
                        if msg is None:
                            sel.unregister(ctl)
                        elif msg.kind == "started":
                            processes.agent_pid = msg.data["pid"]
                            services.started(processes.agent_pid)
                        elif msg.kind == "stopped":
                            self._stop_with_command(spec)
                        elif msg.kind == "exited":
                            self._command_exited(msg.data, status_done, services)
                    elif key.data == "status":
                        data = os.read(status_r, 65536)
                        if not data:
                            sel.unregister(status_r)
                            status_done = True
                        self.status_data += data
                    elif key.data == "services":
                        sel.unregister(services.failure_fd)  # fail closed: no proxy, no sandbox
                        self.failures.append(SetupError("services", services.error or "they stopped"))
                        self._kill_all(spec, processes)

    def _command_exited(self, data: dict[str, Any], status_done: bool, services: Services) -> None:
        """Init reaped the command: record the run's end now, while the kernel tears the sandbox
        down (~5 ms saved on every run), when that end is settled: no failure reported or still
        possible, no signal of ours. Otherwise, as always, once the launcher is reaped."""
        code = data.get("code") if isinstance(data, dict) else None
        if (not isinstance(code, int) or isinstance(code, bool) or not status_done or self.interrupted
                or self.failures or channel.parse_failures(self.status_data)):
            return
        code = EXIT_TIMEOUT if self.timed_out else code
        services.close(code, self._run_status(code))

    def _on_signals(self, sigs: list[int], spec: SandboxSpec, init: int) -> bool:
        """Handle signals; True once the sandbox's top process has exited."""
        done = False
        for sig in sigs:
            if sig == signal.SIGCHLD:
                done = done or self._reaped()
            elif sig == signal.SIGCONT:
                if self.stopped:
                    self.stopped = False
                    _kill(init, signal.SIGCONT)  # init gives the terminal back and continues it
            else:
                _kill(init, sig)
        return done

    def _reaped(self) -> bool:
        try:
            pid, status = os.waitpid(self.child, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            return False
        self.child_status = status
        return True

    def _stop_with_command(self, spec: SandboxSpec) -> None:
        """The command stopped (Ctrl-Z): take the terminal back and stop ourselves, like sudo."""
        if spec.terminal_fd is not None:
            set_foreground(spec.terminal_fd, os.getpgrp())
        self.stopped = True
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # stops here until the shell's `fg` sends SIGCONT
        signal.signal(signal.SIGTSTP, noop)

    def _kill_all(self, spec: SandboxSpec, processes: SandboxProcesses) -> None:
        _kill(processes.init_pid, signal.SIGKILL)  # PID 1: the kernel kills the whole pid namespace
        if spec.isolation == LANDLOCK_ONLY and processes.agent_pid:
            _kill(-processes.agent_pid, signal.SIGKILL)

    def _abort(self) -> None:
        _kill(self.child, signal.SIGKILL)

    def _wait_child(self) -> int:
        if self.child_status is None:
            try:
                _, self.child_status = os.waitpid(self.child, 0)
            except ChildProcessError:
                self.child_status = 0
        return self.child_status

    def _run_status(self, code: int) -> str:
        """How the run ended, for `stockade list` (with the exit code)."""
        if self.timed_out:
            return "timeout"
        if self.interrupted or code > 128:
            return "killed"
        return "exited"

    def _finish(self, status_r: int) -> int:
        status = self._wait_child()
        self.failures += channel.parse_failures(self.status_data + _read_all(status_r))
        if self.failures:
            raise _failure(self.failures[0])
        if self.interrupted:
            return 128 + self.interrupted
        if self.timed_out:
            return EXIT_TIMEOUT
        return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


# -- helpers ----------------------------------------------------------------------------------

def _failure(err: SetupError) -> CommandFailed:
    if err.layer == "exec":
        code = EXIT_NOT_FOUND if err.errno in (errno.ENOENT, errno.ENOTDIR) else EXIT_CANNOT_EXECUTE
        return CommandFailed(err.message, code)
    if err.layer == "userns":
        from .isolation.namespaces import diagnose_userns, userns_sysctls

        cause, fix = diagnose_userns(err.errno, userns_sysctls())
        return CommandFailed(f"cannot create the sandbox: {cause} ({err.message})", EXIT_STOCKADE_FAILURE, fix)
    return CommandFailed(f"sandbox setup failed ({err.layer}): {err.message}", EXIT_STOCKADE_FAILURE)


def _write_tls_files(directory: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = os.path.join(directory, name)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o444)
        os.replace(tmp, path)



def _read_all(fd: int) -> bytes:
    out = bytearray()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while sel.select(2.0):
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            out += chunk
    os.close(fd)
    return bytes(out)
