"""Immutable records defined without compiling code: the sandbox processes' plain data.

A `typing.NamedTuple` class compiles its `__new__`, and with postponed annotations each field's
type; the first compile in a process also sets the compiler up. For the isolation layer's
records that is ~5 ms in each of the supervisor and the launcher, on the critical path of
`stockade run` (and msgspec, stockade's usual records, is a 15 ms import the launcher avoids).
A Record is a tuple whose fields are read-only properties, declared by annotations as in a
NamedTuple, and defined in ~20 µs. It behaves as a NamedTuple does where stockade relies on it:
arguments by position or keyword, defaults, `_fields`, `_replace`, equality and hashing as
tuples, a repr naming the fields, pickling.

`dumps` and `loads` carry records between stockade's own processes (the spec, from the
supervisor to the launcher) with marshal, which is built into the interpreter: pickle would do
the same but is a ~2 ms import on the critical path of both. Never for data from the sandbox.
"""

from __future__ import annotations

import marshal
import operator
import sys
from typing import Any


class _RecordType(type):
    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> _RecordType:
        fields = tuple(namespace.get("__annotations__", ()))
        if fields and any(getattr(base, "_fields", ()) for base in bases):
            raise TypeError(f"record {name}: a record with fields cannot be extended")
        defaults: dict[str, Any] = {}
        for field in fields:
            if field in namespace:
                defaults[field] = namespace.pop(field)
            elif defaults:
                raise TypeError(f"record {name}: field {field!r} without a default follows one with a default")
        for index, field in enumerate(fields):
            namespace[field] = property(operator.itemgetter(index), doc=f"field {index}")
        namespace.update(__slots__=(), _fields=fields, _field_defaults=defaults)
        return super().__new__(mcs, name, bases, namespace)


class Record(tuple, metaclass=_RecordType):
    """Subclass with annotated fields (`name: type` or `name: type = default`); `_fields` and
    `_field_defaults` are set by the metaclass, as are the empty `__slots__`."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        fields = cls._fields
        if len(args) > len(fields):
            raise TypeError(f"{cls.__name__}() takes {len(fields)} arguments, {len(args)} given")
        values = list(args)
        for field in fields[len(args):]:
            if field in kwargs:
                values.append(kwargs.pop(field))
            elif field in cls._field_defaults:
                values.append(cls._field_defaults[field])
            else:
                raise TypeError(f"{cls.__name__}() is missing {field!r}")
        if kwargs:
            raise TypeError(f"{cls.__name__}() got unexpected or repeated arguments: {', '.join(sorted(kwargs))}")
        return tuple.__new__(cls, values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{f}={v!r}' for f, v in zip(self._fields, self))})"

    def __getnewargs__(self) -> tuple[Any, ...]:
        return tuple(self)

    def _replace(self, **changes: Any) -> Any:
        return type(self)(**{**dict(zip(self._fields, self)), **changes})


_PLAIN = (str, bytes, int, float, bool, type(None))


def dumps(value: Any) -> bytes:
    """`value` (records, tuples, dicts, str, bytes, numbers, None) as bytes for `loads`: each
    record becomes a list [its class, its fields...]; lists are kept for that (records hold
    tuples), and anything else is a TypeError."""
    return marshal.dumps(_plain(value))


def loads(data: bytes) -> Any:
    """What `dumps` was given (its record classes are imported as needed)."""
    return _rebuilt(marshal.loads(data))


def _plain(value: Any) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value
    if isinstance(value, Record):
        return [f"{kind.__module__}:{kind.__qualname__}", *map(_plain, value)]
    if kind is tuple:
        return tuple(map(_plain, value))
    if kind is dict:
        return {_plain(k): _plain(v) for k, v in value.items()}
    raise TypeError(f"record.dumps: cannot carry a {kind.__name__} ({value!r:.60})")


def _rebuilt(value: Any) -> Any:
    kind = type(value)
    if kind is list:
        return _record_class(value[0])(*map(_rebuilt, value[1:]))
    if kind is tuple:
        return tuple(map(_rebuilt, value))
    if kind is dict:
        return {k: _rebuilt(v) for k, v in value.items()}
    return value


def _record_class(name: str) -> type[Record]:
    module_name, _, qualname = name.partition(":")
    module = sys.modules.get(module_name)
    if module is None:
        import importlib

        module = importlib.import_module(module_name)
    cls = getattr(module, qualname, None)
    if not (isinstance(cls, type) and issubclass(cls, Record)):
        raise TypeError(f"record.loads: {name} is not a record class")
    return cls
