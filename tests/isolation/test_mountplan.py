"""The mount plan and path resolution, over a described filesystem (pure)."""

from __future__ import annotations

import errno
import os

from stockade.isolation.mountplan import Bind, Private, Symlink, plan_mounts
from stockade.isolation.paths import Entry, PathGrant, host_inspect, normalize, path_error_reason, resolve

# A Debian-like tree: /lib and /bin are symlinks into /usr.
TREE = {
    "/usr": Entry("dir"), "/usr/lib": Entry("dir"), "/usr/bin": Entry("dir"), "/usr/lib64": Entry("dir"),
    "/lib": Entry("symlink", "usr/lib"), "/bin": Entry("symlink", "usr/bin"),
    "/lib64": Entry("symlink", "usr/lib64"),
    "/etc": Entry("dir"), "/etc/resolv.conf": Entry("symlink", "../run/resolv.conf"),
    "/home": Entry("dir"), "/home/u": Entry("dir"), "/home/u/work": Entry("dir"),
    "/home/u/notes.txt": Entry("file"),
    "/tmp": Entry("dir"), "/tmp/job": Entry("dir"), "/run": Entry("dir"), "/run/resolv.conf": Entry("file"),
    "/dev": Entry("dir"), "/dev/null": Entry("other"), "/dev/nvidia0": Entry("other"),
    "/proc": Entry("dir"), "/loop": Entry("symlink", "/loop"),
    "/var": Entry("dir"), "/var/run": Entry("symlink", "../run"),
}


def inspect(path: str) -> Entry:
    return TREE.get(path, Entry("missing", error=errno.ENOENT))


def ro(*paths: str) -> list[PathGrant]:
    return [PathGrant(p, False) for p in paths]


def rw(*paths: str) -> list[PathGrant]:
    return [PathGrant(p, True) for p in paths]


def test_resolve_follows_relative_and_absolute_links():
    assert resolve("/lib", inspect).real == "/usr/lib"
    assert resolve("/lib", inspect).links == (("/lib", "usr/lib"),)
    assert resolve("/etc/resolv.conf", inspect).real == "/run/resolv.conf"
    assert resolve("/var/run/resolv.conf", inspect).real == "/run/resolv.conf"
    assert resolve("/usr/./lib/", inspect).real == "/usr/lib"


def test_resolve_reports_missing_loops_and_non_directories():
    assert resolve("/nope", inspect).kind == "missing"
    assert resolve("/loop", inspect).error == errno.ELOOP
    assert resolve("/home/u/notes.txt/x", inspect).error == errno.ENOTDIR
    assert path_error_reason(errno.ENOENT) == "path does not exist"
    assert path_error_reason(errno.ELOOP) == "too many symlink levels"
    assert path_error_reason(errno.EIO) == "unexpected error"


def test_symlinked_components_are_replicated_and_their_targets_bound():
    plan = plan_mounts(ro("/lib", "/bin"), inspect)
    assert Symlink("/lib", "usr/lib") in plan.steps
    assert Symlink("/bin", "usr/bin") in plan.steps
    assert {b.path for b in plan.binds} == {"/usr/lib", "/usr/bin"}


def test_parents_come_before_children_so_a_writable_child_of_a_read_only_parent_works():
    plan = plan_mounts(rw("/home/u/work") + ro("/home"), inspect)
    order = [s.path for s in plan.steps if isinstance(s, Bind)]
    assert order == ["/home", "/home/u/work"]
    assert [b.writable for b in plan.binds] == [False, True]


def test_a_directory_seen_through_a_bound_parent_with_the_same_access_is_not_bound_again():
    plan = plan_mounts(ro("/usr", "/bin", "/lib", "/home") + rw("/home/u") + ro("/home/u/work", "/home/u/notes.txt"),
                       inspect)
    assert [(b.path, b.writable) for b in plan.binds] == [
        ("/usr", False), ("/home", False), ("/home/u", True), ("/home/u/work", False), ("/home/u/notes.txt", False)]
    assert Symlink("/bin", "usr/bin") in plan.steps and Symlink("/lib", "usr/lib") in plan.steps
    # A file keeps its own bind (a listed socket is a grant the socket walk must see).
    assert [b.path for b in plan_mounts(ro("/home", "/home/u/notes.txt"), inspect).binds] == [
        "/home", "/home/u/notes.txt"]
    # Without the parent in the policy, the child is bound itself.
    assert [b.path for b in plan_mounts(ro("/bin"), inspect).binds] == ["/usr/bin"]
    # The same access twice down the tree: the grandchild of a writable child is covered too.
    plan = plan_mounts(ro("/home") + rw("/home/u", "/home/u/work"), inspect)
    assert [(b.path, b.writable) for b in plan.binds] == [("/home", False), ("/home/u", True)]


def test_private_roots_are_always_there_and_listed_tmp_and_run_stay_private():
    plan = plan_mounts(rw("/tmp") + ro("/run", "/proc", "/dev/null"), inspect)
    privates = {s.path: s.what for s in plan.steps if isinstance(s, Private)}
    assert privates == {"/proc": "proc", "/dev": "dev", "/tmp": "tmp", "/run": "run"}
    assert plan.binds == ()
    assert any("/tmp is private" in n for n in plan.notes)
    assert any("/run is private" in n for n in plan.notes)


def test_paths_below_tmp_and_dev_are_bound_on_top_of_the_private_ones():
    plan = plan_mounts(rw("/tmp/job") + rw("/dev/nvidia0"), inspect)
    steps = list(plan.steps)
    tmp = steps.index(Private("/tmp", "tmp"))
    job = next(i for i, s in enumerate(steps) if isinstance(s, Bind) and s.path == "/tmp/job")
    assert tmp < job
    assert Bind("/dev/nvidia0", True, "other", ("/dev/nvidia0",)) in plan.binds


def test_a_path_listed_twice_gets_the_union_of_its_rights():
    plan = plan_mounts(ro("/etc") + rw("/etc"), inspect)
    assert plan.binds == (Bind("/etc", True, "dir", ("/etc", "/etc")),)


def test_missing_paths_are_skipped_with_their_reason():
    plan = plan_mounts(ro("/usr", "/app", "/loop"), inspect)
    assert plan.skipped == (("/app", "path does not exist"), ("/loop", "too many symlink levels"))
    assert [b.path for b in plan.binds] == ["/usr"]


def test_scan_roots_skip_system_trees_and_nested_paths():
    plan = plan_mounts(ro("/usr", "/etc", "/opt", "/home") + rw("/home/u/work", "/tmp/job"), inspect)
    assert plan.scan_roots == ("/home", "/tmp/job")


def test_root_itself_can_be_bound_read_only():
    plan = plan_mounts(ro("/"), inspect)
    assert plan.steps[0] == Bind("/", False, "dir", ("/",))
    assert plan.scan_roots == ("/",)


def test_host_inspect_on_a_real_tree(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    (tmp_path / "real" / "f").write_text("x")
    res = resolve(str(tmp_path / "link" / "f"), host_inspect())
    assert res.real == normalize(os.path.realpath(tmp_path / "real" / "f"))
    assert res.kind == "file"
    assert res.links[-1] == (str(tmp_path / "link"), "real")


# A link an earlier sandbox planted in its writable workdir, and one the user made there that
# stays inside it.
PLANTED = {
    **TREE,
    "/home/u/.ssh": Entry("dir"), "/home/u/work/data": Entry("symlink", "/home/u/.ssh"),
    "/home/u/work/src": Entry("dir"), "/home/u/work/lib": Entry("symlink", "src"),
    "/tmp/ln": Entry("symlink", "/home/u/.ssh"),
}


def planted_inspect(path: str) -> Entry:
    return PLANTED.get(path, Entry("missing", error=errno.ENOENT))


def test_a_path_reached_through_a_link_planted_in_a_writable_grant_is_skipped():
    from stockade.isolation.paths import planted_links

    grants = rw("/home/u/work") + ro("/home/u/work/data", "/home/u/work/lib", "/usr", "/lib")
    suspect = planted_links(grants, planted_inspect)
    assert list(suspect) == ["/home/u/work/data"]
    assert "/home/u/work/data -> /home/u/.ssh" in suspect["/home/u/work/data"]
    plan = plan_mounts(grants, planted_inspect)
    assert not any(b.path == "/home/u/.ssh" for b in plan.binds)  # never mounted
    assert [p for p, _ in plan.skipped] == ["/home/u/work/data"]
    assert {b.path for b in plan.binds} >= {"/home/u/work", "/usr"}  # the rest stays
    assert Symlink("/lib", "usr/lib") in plan.steps  # /usr/lib: seen through the bind of /usr
    # Writable too, or listed through the link's parent: the same.
    assert list(planted_links(rw("/home/u/work", "/home/u/work/data"), planted_inspect)) == ["/home/u/work/data"]
    # Without a writable grant around it, a link is the user's own: followed.
    assert planted_links(ro("/home/u/work/data"), planted_inspect) == {}
    # The sandbox's private /tmp never reaches the host: links there are not suspect.
    assert planted_links(rw("/tmp") + ro("/tmp/ln"), planted_inspect, private=("/tmp",)) == {}
