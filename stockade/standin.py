"""Import-time stand-ins: for the length of a block, a module is replaced by another object, or
hidden (None: importing it raises ImportError); afterwards whatever was there before is back, or
nothing, and a later import loads the real module.

stockade uses them to keep unused eager imports of its dependencies off the critical path of
`stockade run` (records.py: msgspec's package, typing_extensions, platform for uuid; isolation/libc.py:
ctypes.util; isolation/landlock.py: landlockpy.testing). Imports nothing: the launcher uses it.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType, TracebackType


class stand_in:  # noqa: N801 - used like a function: `with stand_in(name, module):`
    """While the block runs, the module `name` (in sys.modules and as its package's attribute)
    is `module`."""

    __slots__ = ("name", "module", "_package", "_attribute", "_real")

    def __init__(self, name: str, module: ModuleType | None) -> None:
        self.name, self.module = name, module
        self._package, _, self._attribute = name.rpartition(".")

    def __enter__(self) -> None:
        self._real = sys.modules.get(self.name)
        sys.modules[self.name] = self.module  # type: ignore[assignment]  # None hides it
        if self.module is not None and self._package in sys.modules:
            setattr(sys.modules[self._package], self._attribute, self.module)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        real = self._real
        if self.name in sys.modules and sys.modules[self.name] is self.module:
            if real is None:
                del sys.modules[self.name]
            else:
                sys.modules[self.name] = real
        parent = sys.modules.get(self._package)
        if self.module is not None and parent is not None and getattr(parent, self._attribute, None) is self.module:
            if real is None:
                delattr(parent, self._attribute)
            else:
                setattr(parent, self._attribute, real)
