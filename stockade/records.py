"""msgspec's Struct, field and replace: what stockade's records are built with (except those of
the sandbox's own processes, isolation/spec.py, which never import msgspec).

A msgspec Struct class is created in ~25 µs where a dataclass takes ~1.4 ms (Python compiles
each generated method), and `stockade run` defines ~90 records. All three names live in
msgspec's C module, `msgspec._core`; the package's `__init__` also imports its json, msgpack,
toml, yaml, inspect and structs modules, which stockade never uses (~5 ms on the critical path
of `stockade run` on a small machine). And `_core` imports typing_extensions when it is
installed (httpx's dependencies install it), only for the type introspection its decoders use,
which stockade never calls; typing_extensions in turn imports inspect (~18 ms).

So `_core` is imported alone, under a bare stand-in for its package, with typing_extensions
hidden (it then uses typing's equivalents) and, on Python 3.11, a stand-in for the platform
module its uuid import asks one question; the stand-ins are gone afterwards, and a later
`import msgspec` loads the whole package around the same `_core`. Unless msgspec is already
loaded (or typing_extensions, which is then left alone), or another thread could be importing
either at that moment.
"""

from __future__ import annotations

import contextlib
import sys
import types

TYPE_CHECKING = False


def _msgspec_core() -> types.ModuleType:
    core = sys.modules.get("msgspec._core")
    if core is not None:
        return core
    threading = sys.modules.get("threading")
    alone = threading is None or threading.active_count() == 1
    if not alone or "msgspec" in sys.modules:
        import msgspec

        return msgspec._core
    from .standin import stand_in

    package = types.ModuleType("msgspec", "stand-in while msgspec._core loads (stockade/records.py)")
    package.__path__ = _package_path("msgspec")
    with contextlib.ExitStack() as stack:  # (typing, which msgspec needs, imports contextlib)
        stack.enter_context(stand_in("msgspec", package))
        if "typing_extensions" not in sys.modules:
            stack.enter_context(stand_in("typing_extensions", None))
        platform = _uuids_platform()
        if platform is not None:
            stack.enter_context(stand_in("platform", platform))
        import msgspec._core
    return sys.modules["msgspec._core"]


def _uuids_platform() -> types.ModuleType | None:
    """`_core` imports uuid, and Python 3.11's uuid imports platform (~3 ms) only to call
    `platform.system()` once; from 3.12 it reads sys.platform on Linux instead. This stand-in
    answers that call as platform does (the kernel's name, from uname)."""
    if sys.version_info >= (3, 12) or not sys.platform.startswith("linux") or "uuid" in sys.modules \
            or "platform" in sys.modules:
        return None
    import os

    module = types.ModuleType("platform", "stand-in while uuid loads (stockade/records.py)")
    module.system = lambda: os.uname().sysname  # type: ignore[attr-defined]
    return module


def _package_path(name: str) -> list[str]:
    for finder in sys.meta_path:
        found = getattr(finder, "find_spec", None) and finder.find_spec(name, None)  # type: ignore[attr-defined]
        if found is not None and found.submodule_search_locations is not None:
            return list(found.submodule_search_locations)
    raise ImportError(f"No module named {name!r}", name=name)


if TYPE_CHECKING:
    from msgspec import Struct, field
    from msgspec.structs import replace
else:
    _core = _msgspec_core()
    Struct = _core.Struct
    replace = _core.replace
    _NODEFAULT = _core.NODEFAULT

    def field(*, default=_NODEFAULT, default_factory=_NODEFAULT, name=None):  # noqa: ANN001,ANN202
        """msgspec.field (the package defines it over `_core.Field`, as here)."""
        return _core.Field(default=default, default_factory=default_factory, name=name)


__all__ = ["Struct", "field", "replace"]
