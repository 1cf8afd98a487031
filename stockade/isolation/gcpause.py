"""The cyclic garbage collector, paused while a sandbox starts.

Importing the run path allocates hundreds of thousands of objects that live as long as the
process; the collector's young generations fill with them and scan them again and again: ~7 ms
in the supervisor, ~7 ms in the launcher and ~6 ms in init on a small machine, most of it on the
critical path of `stockade run`. So `stockade run` pauses the collector before it forks anything
(the launcher and the CA helper inherit the pause), and each long-lived process resumes it once
its part of the start is done, after freezing what exists then: modules and the sandbox's
setup, never worth scanning again.
"""

from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Resume the collector if `pause` stopped it; a no-op otherwise (a test process using the
    API must not freeze its whole session's objects, garbage included)."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
