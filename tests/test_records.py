"""stockade/records.py: msgspec's C module is imported alone, without its package's eager
submodules and without typing_extensions (and its inspect import), on the run path; nothing is
left hidden or stood in afterwards."""

import subprocess
import sys

import pytest


def _fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout


def test_msgspec_comes_without_typing_extensions_and_leaves_it_importable():
    pytest.importorskip("typing_extensions")  # installed here by httpx's dependencies
    out = _fresh(
        "import sys\n"
        "import stockade.records as r\n"
        "print('typing_extensions' in sys.modules, 'inspect' in sys.modules)\n"
        "class P(r.Struct, frozen=True):\n"
        "    a: int\n"
        "    b: tuple = ()\n"
        "p = r.replace(P(1), b=(2,))\n"
        "print(p, hash(p) == hash(P(1, (2,))))\n"
        "import typing_extensions\n"
        "print(typing_extensions.__name__)\n")
    assert out.split("\n")[:3] == ["False False", "P(a=1, b=(2,)) True", "typing_extensions"]


def test_only_msgspecs_core_is_loaded_and_the_package_imports_whole_later():
    out = _fresh(
        "import sys\n"
        "import stockade.records as r\n"
        "print(sorted(m for m in sys.modules if m.startswith('msgspec')))\n"
        "class P(r.Struct, frozen=True, kw_only=True):\n"
        "    a: int\n"
        "    b: list = r.field(default_factory=list, name='B')\n"
        "import msgspec, msgspec.json, msgspec.structs\n"
        "print(msgspec.Struct is r.Struct, msgspec.structs.replace is r.replace)\n"
        "print(msgspec.json.encode(P(a=1)).decode(), msgspec.convert({'a': 2, 'B': [3]}, P))\n")
    assert out.split("\n")[:3] == ["['msgspec._core', 'msgspec._utils']", "True True",
                                    '{"a":1,"B":[]} P(a=2, b=[3])']


@pytest.mark.skipif(sys.version_info >= (3, 12) or not sys.platform.startswith("linux"),
                    reason="only Python 3.11's uuid imports platform")
def test_uuid_loads_without_platform_and_answers_as_with_it():
    out = _fresh(
        "import sys\n"
        "import stockade.records\n"
        "import uuid\n"
        "print('platform' in sys.modules, uuid._LINUX, uuid._AIX)\n"
        "import platform\n"
        "print(platform.__file__.endswith('platform.py'), platform.system() == uuid.platform.system(),\n"
        "      uuid.UUID(int=5).int, uuid.uuid4().version)\n")
    assert out.split("\n")[:2] == ["False True False", "True True 5 4"]


def test_msgspec_loaded_first_is_used_as_it_is():
    out = _fresh("import msgspec, sys\nimport stockade.records as r\n"
                 "print(sys.modules['msgspec'] is msgspec, r.Struct is msgspec.Struct)")
    assert out.strip() == "True True"


def test_typing_extensions_loaded_first_is_left_alone():
    pytest.importorskip("typing_extensions")
    out = _fresh("import typing_extensions, sys\nimport stockade.records\n"
                 "print(sys.modules['typing_extensions'] is typing_extensions)")
    assert out.strip() == "True"


def test_with_other_threads_running_nothing_is_hidden():
    """Another thread may be importing typing_extensions at that moment: it must not fail."""
    pytest.importorskip("typing_extensions")
    out = _fresh(
        "import sys, threading\n"
        "stop = threading.Event()\n"
        "t = threading.Thread(target=stop.wait); t.start()\n"
        "import stockade.records\n"
        "print('typing_extensions' in sys.modules)\n"
        "stop.set(); t.join()\n")
    assert out.strip() == "True"  # msgspec imported it as usual


def test_the_run_path_does_not_import_dataclasses_or_typing_extensions():
    out = _fresh(
        "import sys\n"
        "import stockade.cli.runfast, stockade.supervisor, stockade.isolation.prepare\n"
        "import stockade.policy.default as d\n"
        "d.default_policy()\n"
        "print(sorted(m for m in ('dataclasses', 'typing_extensions', 'inspect', 'cryptography', 'yaml', 'pickle')"
        " if m in sys.modules))\n")
    assert out.strip() == "[]"


def test_the_launcher_imports_neither_msgspec_nor_the_supervisors_modules():
    """The launcher (forked before the supervisor's imports) is on the critical path of every
    start: its records are tuple Records and plain classes, so it never pays msgspec's import."""
    out = _fresh(
        "import sys\n"
        "import stockade.cli.runfast, stockade.isolation.prefork, stockade.isolation.camint\n"
        "from stockade.isolation import launcher\n"
        "launcher._preload()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('msgspec', 'dataclasses', 'inspect', 'pickle')\n"
        "             or m in ('stockade.records', 'stockade.errors', 'stockade.policy')))\n")
    assert out.strip() == "[]"
