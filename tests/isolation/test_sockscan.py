"""The bounded walk for Unix sockets (isolation/sockscan.py) on real trees, read through a
prefix as init reads the view, and the launcher's choice of what to survey early."""

from __future__ import annotations

import os
import socket

import pytest

from stockade.isolation.launcher import _survey_workdir
from stockade.isolation.sockscan import ScanBudget, Survey, is_socket, survey


@pytest.fixture
def bound():
    sockets: list[socket.socket] = []

    def bind(path: str) -> str:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        sockets.append(s)
        return path

    yield bind
    for s in sockets:
        s.close()


def test_sockets_at_any_depth_within_the_budget_are_found(tmp_path, bound):
    root = str(tmp_path)
    a = bound(f"{root}/a.sock")
    b = bound(f"{root}/x/y/b.sock")
    (tmp_path / "x" / "file").write_text("")
    os.symlink(a, f"{root}/link.sock")  # a link is not walked into nor counted as a socket
    got = survey(root)
    assert set(got.sockets) == {a, b}
    assert got.root == root and got.budget == ScanBudget()
    assert got.entries == 6  # a.sock, x, link.sock, y, file, b.sock
    assert is_socket(a) and not is_socket(f"{root}/x/file") and not is_socket(f"{root}/none")


def test_depth_and_entries_are_bounded(tmp_path, bound):
    root = str(tmp_path)
    deep = bound(f"{root}/1/2/3/d.sock")
    assert survey(root, ScanBudget(depth=3)).sockets == (deep,)
    assert survey(root, ScanBudget(depth=2)).sockets == ()  # d.sock is 3 levels below 1/
    for i in range(20):
        (tmp_path / f"f{i:02}").write_text("")
    spent = survey(root, ScanBudget(entries=10))
    assert spent.entries == 10  # the budget ran out


def test_a_prefix_reads_another_tree_and_names_paths_as_seen_there(tmp_path, bound):
    """Init reads the view at /newroot; the paths it reports are the sandbox's. The private and
    system roots of the view are not walked."""
    view = str(tmp_path)
    bound(f"{view}/home/u/s.sock")
    bound(f"{view}/tmp/hidden-anyway.sock")
    bound(f"{view}/usr/lib/x.sock")
    got = survey("/", prefix=view)
    assert got.sockets == ("/home/u/s.sock",)


def test_the_launcher_surveys_only_a_tree_the_view_walks(tmp_path):
    (tmp_path / "w").mkdir()
    assert _survey_workdir(str(tmp_path / "w")) == Survey(str(tmp_path / "w"), ScanBudget(), (), 0)
    for skipped in (None, "/", "/usr/share", "/etc"):
        assert _survey_workdir(skipped) is None


def test_the_launchers_survey_stands_for_a_walk_only_when_it_is_that_walk():
    from stockade.isolation.mounts import _stands_for

    full = ScanBudget()
    done = Survey("/w", full, ("/w/s",), 120)  # the whole tree in 120 entries
    cut = Survey("/w", full, (), full.entries)  # the budget ran out
    assert _stands_for(done, "/w", full) and _stands_for(cut, "/w", full)  # the same walk
    assert _stands_for(done, "/w", ScanBudget(entries=121))  # a later root: it fits what is left
    assert not _stands_for(done, "/w", ScanBudget(entries=120))  # that walk would be cut
    assert not _stands_for(cut, "/w", ScanBudget(entries=4000))  # cut elsewhere: walk again
    assert not _stands_for(done, "/w", ScanBudget(depth=5))
    assert not _stands_for(done, "/v", full) and not _stands_for(None, "/w", full)
