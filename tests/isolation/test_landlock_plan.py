"""The Landlock rights plan (pure) against landlockpy's own ABI tables; how landlockpy is loaded."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from landlockpy import AccessFS, fs_for_abi
from landlockpy.flags import LATEST_ABI

from stockade.isolation.landlock import (
    CONNECT_TCP, FILE_RIGHTS, IMPLICIT_LANDLOCK_ONLY, IMPLICIT_NAMESPACE, READ_ONLY, SCOPE_SIGNAL,
    rights_for_abi,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("abi", range(1, LATEST_ABI + 1))
def test_every_right_the_abi_knows_is_handled(abi):
    assert rights_for_abi(abi).handled_fs == int(fs_for_abi(abi))


def test_read_only_is_execute_read_file_read_dir():
    assert READ_ONLY == int(AccessFS.EXECUTE | AccessFS.READ_FILE | AccessFS.READ_DIR)
    rights = rights_for_abi(7)
    assert rights.read_only == READ_ONLY
    assert rights.read_write == rights.handled_fs


def test_non_directories_only_get_file_rights():
    rights = rights_for_abi(7)
    file_rw = rights.for_path(True, is_dir=False)
    assert file_rw & ~FILE_RIGHTS == 0
    assert file_rw & int(AccessFS.WRITE_FILE | AccessFS.TRUNCATE | AccessFS.IOCTL_DEV)
    assert rights.for_path(False, is_dir=False) == int(AccessFS.EXECUTE | AccessFS.READ_FILE)
    assert not rights.for_path(True, is_dir=False) & int(AccessFS.READ_DIR | AccessFS.MAKE_REG | AccessFS.REFER)


def test_scopes_from_abi_6_and_tcp_only_when_asked_from_abi_4():
    assert rights_for_abi(5).scoped == 0
    assert rights_for_abi(6).scoped & SCOPE_SIGNAL
    assert rights_for_abi(7).handled_net == 0
    assert rights_for_abi(4, restrict_tcp=True).handled_net == CONNECT_TCP
    assert rights_for_abi(3, restrict_tcp=True).handled_net == 0


def test_implicit_entries_are_what_the_sandbox_needs():
    paths = {g.path: g.writable for g in IMPLICIT_NAMESPACE}
    assert paths["/proc"] is False and paths["/run/stockade"] is False
    assert all(paths[f"/dev/{d}"] for d in ("null", "zero", "full", "random", "urandom", "tty", "pts", "shm"))
    landlock_only = {g.path for g in IMPLICIT_LANDLOCK_ONLY}
    assert "/dev/pts" not in landlock_only and "/dev/shm" not in landlock_only  # the host's: not implied


def test_preload_skips_landlockpys_probe_helpers_and_leaves_them_importable():
    """The launcher imports landlockpy without its `testing` module (dataclasses, inspect,
    pathlib: ~15 ms of the critical path); a later import still gets the real module."""
    code = (
        "import sys\n"
        "from stockade.isolation import landlock\n"
        "landlock.preload()\n"
        "import landlockpy\n"
        "print(sorted(m for m in ('dataclasses', 'inspect', 'landlockpy.testing') if m in sys.modules))\n"
        "print(hasattr(landlockpy, 'testing'))\n"
        "import landlockpy.testing\n"
        "print(callable(landlockpy.testing.probe), landlockpy.Ruleset.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO).stdout.splitlines()
    assert out == ["[]", "False", "True Ruleset"]


def test_preload_after_landlockpy_was_imported_changes_nothing():
    code = (
        "import landlockpy, landlockpy.testing as t\n"
        "from stockade.isolation import landlock\n"
        "landlock.preload()\n"
        "print(landlockpy.testing is t, callable(t.probe))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["True", "True"]
