"""msgspec's Struct, field and replace: what stockade's records are built with (except those of
the sandbox's own processes, isolation/spec.py, which never import msgspec).

A msgspec Struct class is created in ~25 µs where a dataclass takes ~1.4 ms (Python compiles
each generated method), and `stockade run` defines ~90 records. But msgspec imports
typing_extensions when it is installed (httpx's dependencies install it), only for the type
introspection its decoders use, which stockade never calls; typing_extensions in turn imports
inspect: ~18 ms on the critical path of `stockade run`. So msgspec is first imported with
typing_extensions hidden (it then uses typing's equivalents), unless typing_extensions is
already loaded or another thread could be importing it at the same moment.
"""

from __future__ import annotations

import sys


def _import_msgspec() -> None:
    if "msgspec" in sys.modules or "typing_extensions" in sys.modules:
        return
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        return  # another thread's `import typing_extensions` must not fail meanwhile
    sys.modules["typing_extensions"] = None  # type: ignore[assignment]  # importing it raises ImportError
    try:
        import msgspec  # noqa: F401
    finally:
        del sys.modules["typing_extensions"]


_import_msgspec()

from msgspec import Struct, field  # noqa: E402
from msgspec.structs import replace  # noqa: E402

__all__ = ["Struct", "field", "replace"]
