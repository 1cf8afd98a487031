"""Driving a program on a real pseudo-terminal, as a user at a keyboard would."""

from __future__ import annotations

import os
import pty
import select
import signal
import time


class PtySession:
    def __init__(self, argv: list[str], env: dict[str, str], cwd: str | os.PathLike[str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the pty is its controlling terminal, it is in the foreground
            try:
                os.chdir(cwd)
                os.execvpe(argv[0], argv, env)
            finally:
                os._exit(127)
        self.buffer = b""
        self.transcript = b""
        self.status: int | None = None

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def expect(self, token: bytes, timeout: float = 20) -> bytes:
        """Read until `token` appears; what came before it (and it) is consumed and returned."""
        deadline = time.monotonic() + timeout
        while token not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {token!r}; transcript tail: {self.transcript[-1500:]!r}")
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # EIO: the other side is gone
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"EOF waiting for {token!r}; transcript tail: {self.transcript[-1500:]!r}")
                self.buffer += chunk
                self.transcript += chunk
        end = self.buffer.index(token) + len(token)
        out, self.buffer = self.buffer[:end], self.buffer[end:]
        return out

    def wait(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    self.transcript += os.read(self.fd, 4096)
                except OSError:
                    pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                return self.status
        self.close()
        raise AssertionError(f"still running; transcript tail: {self.transcript[-1500:]!r}")

    def close(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.status = -9
        try:
            os.close(self.fd)
        except OSError:
            pass
