"""What serving imports, imported before serving starts and abandoned when the run ends first.

The proxy, asyncio and the control socket cost 0.1-0.3 s of imports on a small machine (the
TLS stack comes after, on a thread of its own: runtime.py). The services' thread imports them
once the run is registered, while the command runs; a command that is over by then
(`stockade run -- true`) must not wait for all of them before its exit is recorded. So the
imports run under an `Abandon` finder, first on sys.meta_path: once `stop()` is true, the
thread's next import of a new module raises `Abandoned`, and the thread goes on to record the
exit after one module, not all of them. Python removes every module whose execution was
interrupted from sys.modules, so nothing half-imported remains; other threads' imports are
never affected.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable

# Everything Services._start and the event loop import before serving, in dependency order (a
# missing entry only makes the abandon coarser; an extra one only imports early). The TLS stack
# (stockade.network.tls, cryptography) is imported by its own thread once serving has started.
SERVING_MODULES = (
    "asyncio",
    "uvloop",
    "stockade.policy.engine",
    "stockade.network.identity",
    "stockade.network.pipeline",
    "stockade.network.server",
    "stockade.inference",
    "stockade.control",
    "stockade.events.live_policy",
)
OPTIONAL = frozenset({"uvloop"})  # asyncio's own loop is the fallback


class Abandoned(BaseException):
    """Raised into the warm-up's imports (BaseException: an `except Exception` around an
    import in a library must not swallow it)."""


class Abandon:
    """A meta_path finder that finds nothing: it only interrupts `thread`'s imports once `stop()`."""

    def __init__(self, thread: threading.Thread, stop: Callable[[], bool]) -> None:
        self._thread, self._stop = thread, stop

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if self._stop() and threading.current_thread() is self._thread:
            raise Abandoned(name)
        return None


def warm_up(stop: Callable[[], bool], modules: tuple[str, ...] = SERVING_MODULES) -> bool:
    """Import `modules` on this thread; False as soon as `stop()` is true (the rest is skipped)."""
    finder = Abandon(threading.current_thread(), stop)
    sys.meta_path.insert(0, finder)
    try:
        for name in modules:
            if stop():
                return False
            try:
                importlib.import_module(name)
            except ImportError:
                if name not in OPTIONAL:
                    raise
    except Abandoned:
        return False
    finally:
        sys.meta_path.remove(finder)
    return True
