"""Records of the sandbox's own processes (isolation/record.py): they behave as NamedTuples do
where stockade relies on it, and defining one compiles nothing."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from stockade.isolation.record import Record
from stockade.isolation.spec import SandboxSpec


class Grant(Record):
    """A doc."""

    path: str
    writable: bool
    origin: str = "policy"

    def twice(self) -> str:
        return self.path * 2


def test_fields_by_position_or_keyword_with_defaults():
    g = Grant("/a", True)
    assert (g.path, g.writable, g.origin) == ("/a", True, "policy")
    assert Grant(path="/a", origin="x", writable=False) == Grant("/a", False, "x")
    assert Grant._fields == ("path", "writable", "origin") and Grant._field_defaults == {"origin": "policy"}
    assert g.twice() == "/a/a" and Grant.__doc__ == "A doc."


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((), {}, "missing 'path'"),
    (("/a", True, "x", 1), {}, "takes 3 arguments, 4 given"),
    (("/a",), {"path": "/b", "writable": True}, "unexpected or repeated arguments: path"),
    (("/a", True), {"nope": 1}, "unexpected or repeated arguments: nope"),
])
def test_wrong_arguments_are_type_errors(args, kwargs, message):
    with pytest.raises(TypeError, match=message):
        Grant(*args, **kwargs)


def test_immutable_and_slotted():
    g = Grant("/a", True)
    with pytest.raises(AttributeError):
        g.path = "/b"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        g.other = 1  # type: ignore[attr-defined]
    assert not hasattr(g, "__dict__")


def test_equality_hash_repr_replace_and_pickling_as_a_tuple():
    g = Grant("/a", True)
    assert g == ("/a", True, "policy") and hash(g) == hash(("/a", True, "policy"))
    assert repr(g) == "Grant(path='/a', writable=True, origin='policy')"
    assert g._replace(origin="x") == Grant("/a", True, "x") and g.origin == "policy"
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(g, protocol))
        assert type(back) is Grant and back == g


def test_bad_definitions_are_refused():
    with pytest.raises(TypeError, match="without a default follows"):
        class Bad(Record):
            a: int = 0
            b: int
    with pytest.raises(TypeError, match="cannot be extended"):
        class More(Grant):
            extra: int


def test_the_spec_is_a_record_and_defining_the_records_compiles_nothing():
    assert issubclass(SandboxSpec, Record)
    # Source text compiled or evaluated at run time (NamedTuple's __new__, its postponed field
    # types); the import system's own compiling of module files is not counted.
    code = ("import builtins, array, contextlib, ctypes, grp, json, operator, pwd, resource, select, selectors\n"
            "import signal, socket, stat, struct, typing\n"
            "calls = []\n"
            "def spy(name):\n"
            "    real = getattr(builtins, name)\n"
            "    def call(source, *args, **kwargs):\n"
            "        named = args[0] if name == 'compile' and args else ''\n"
            "        if isinstance(source, str) and not str(named).endswith('.py'):\n"
            "            calls.append((name, source[:40]))\n"
            "        return real(source, *args, **kwargs)\n"
            "    setattr(builtins, name, call)\n"
            "for name in ('compile', 'eval', 'exec'):\n"
            "    spy(name)\n"
            "import stockade.isolation.spec, stockade.isolation.paths, stockade.isolation.mountplan\n"
            "import stockade.isolation.seccomp, stockade.isolation.sockscan, stockade.isolation.channel\n"
            "import stockade.isolation.landlock, stockade.isolation.privileges, stockade.isolation.agent\n"
            "print(calls)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_dumps_and_loads_carry_the_real_spec_without_pickle():
    """The spec crosses from the supervisor to the launcher with record.dumps (marshal)."""
    import os

    from stockade.isolation import record
    from stockade.isolation.prepare import Request, prepare
    from stockade.policy.loader import load_policy_text

    policy = load_policy_text(
        "version: 1\nfilesystem_policy:\n  include_workdir: true\n  read_only: [/usr, /etc]\n"
        "  read_write: [/tmp]\nprocess:\n  run_as_user: nobody\n  seccomp:\n    allow: [memfd_create]\n", "t.yaml")
    spec = prepare(Request(argv=("sh", "-c", "true"), policy=policy, name="rec", workdir=os.getcwd(),
                           isolation="namespaces", env_overrides=(("K", "v"),), hidden_files=("/etc/hostname",)),
                   state_dir="/nonexistent/state").spec
    back = record.loads(record.dumps(spec))
    assert back == spec and type(back) is type(spec)
    assert type(back.plan.steps[0]) is type(spec.plan.steps[0]) and type(back.seccomp[0]) is type(spec.seccomp[0])
    assert back.env == spec.env and back.plan.binds == spec.plan.binds


def test_dumps_refuses_what_it_cannot_carry_and_loads_only_builds_records():
    import marshal

    from stockade.isolation import record

    class Other:
        pass

    with pytest.raises(TypeError, match="cannot carry a list"):
        record.dumps(Grant("/a", True, [1]))  # lists stand for records in the encoding
    with pytest.raises(TypeError, match="cannot carry a Other"):
        record.dumps((Other(),))
    assert record.loads(record.dumps({"k": (Grant("/x", False), None, b"b", 1.5)})) == {"k": (Grant("/x", False), None, b"b", 1.5)}
    with pytest.raises(TypeError, match="not a record class"):
        record.loads(marshal.dumps(["os:system", "true"]))
