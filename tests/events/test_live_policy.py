"""Hot reload and rule approval through the control socket, with the real policy engine:
denials → one pending proposal per host:port → approve → the next decision is allowed, without
a restart; static-section changes and invalid policies are refused with the live policy untouched."""

from __future__ import annotations


import pytest

from stockade.control import ControlError, ControlServer, call
from stockade.events.live_policy import LivePolicy, Prepared
from stockade.events.recorder import StoreRecorder
from stockade.events.store import Store
from stockade.events.types import Action, Actor, ListRecorder, NetworkEvent
from stockade.policy import compile_policy, load_policy_text, policy_sha256

from ..support.threadloop import ThreadLoop

CURL = "/usr/bin/curl"
BASE = """\
version: 1
filesystem_policy:
  include_workdir: false
  read_only: [/usr]
  read_write: [/tmp]
network_policies:
  github:
    endpoints:
      - { host: api.github.com, port: 443 }
    binaries:
      - { path: /usr/bin/git }
"""


class FakeProxy:
    """What the supervisor prepares and installs: one compiled engine generation, swapped atomically."""

    def __init__(self, policy) -> None:
        self.engine = compile_policy(policy)
        self.fail_next = False

    def prepare(self, policy) -> Prepared:
        if self.fail_next:
            raise RuntimeError("compile failed")
        engine = compile_policy(policy)

        def install():
            previous, self.engine = self.engine, engine  # one reference assignment: atomic
            return lambda: setattr(self, "engine", previous)

        return Prepared(install)

    def decide(self, host: str, port: int, binary: str):
        return self.engine.decide(host, port, binary)


@pytest.fixture()
def env(tmp_path):
    db = tmp_path / "stockade.db"
    store = Store(db)
    run_id = store.start_run("sb", pid=1, command=["sh"], policy_source="p.yaml")
    policy = load_policy_text(BASE, "p.yaml")
    proxy = FakeProxy(policy)
    events = ListRecorder()
    live = LivePolicy(store=store, sandbox="sb", run_id=run_id, policy=policy, yaml_text=BASE, prepare=proxy.prepare,
                      recorder=events)
    loop = ThreadLoop()
    sock = tmp_path / "control.sock"
    server = ControlServer(sock, live.handlers(), sandbox="sb", recorder=events)
    loop.run(server.start(), 5)
    yield {"db": db, "store": store, "run_id": run_id, "proxy": proxy, "live": live, "sock": sock, "events": events}
    loop.run(server.close(), 5)
    loop.stop()
    store.close()


def test_startup_records_revision_one(env):
    rev = env["store"].revision("sb")
    assert (rev.revision, rev.source, rev.yaml) == (1, "p.yaml", BASE)
    assert env["store"].run(env["run_id"]).policy_revision == 1
    assert env["events"].events[0].message == "policy loaded" and env["events"].events[0].revision == 1


def test_a_revision_recorded_with_the_run_is_taken_over_not_recorded_again(env):
    """The services record the policy's revision when the run starts (a short command may end
    before the proxy is up); LivePolicy then takes that revision over."""
    store, before = env["store"], env["store"].revisions("sb")
    events = ListRecorder()
    live = LivePolicy(store=store, sandbox="sb", run_id=env["run_id"], policy=env["live"].policy, yaml_text=BASE,
                      prepare=env["proxy"].prepare, recorder=events, revision=1, sha256=env["live"].sha256)
    assert (live.revision, live.sha256) == (1, env["live"].sha256)
    assert store.revisions("sb") == before and events.events == []
    assert live.show()["live"] and live.show()["revision"] == 1


def test_denied_agent_gets_one_proposal_per_host_port_and_approval_lets_the_next_request_through(env):
    proxy = env["proxy"]
    recorder = StoreRecorder("sb", env["run_id"], db_path=env["db"]).start()
    for binary in (CURL, CURL, "/usr/bin/wget"):
        d = proxy.decide("pypi.org", 443, binary)
        assert not d.allowed
        recorder.record(NetworkEvent(Action.DENIED, "pypi.org", 443, Actor(binary), "connect",
                                     reason=d.reason, reason_code=d.reason_code))
    recorder.flush_proposals()
    recorder.record(NetworkEvent(Action.DENIED, "pypi.org", 443, Actor(CURL), "connect"))
    recorder.flush_proposals()
    recorder.close()
    [p] = env["store"].proposals("sb", status="pending")
    assert (p.rule_key, p.hit_count, p.binaries) == ("allow_pypi_org_443", 4, (CURL, "/usr/bin/wget"))

    reply = call(env["sock"], "rules_approve", id=p.id)
    assert reply["ok"] and reply["changed"] and reply["revision"] == 2 and reply["rule"] == "allow_pypi_org_443"
    assert proxy.decide("pypi.org", 443, CURL).allowed  # the live engine, no restart
    assert proxy.decide("pypi.org", 443, "/usr/bin/wget").allowed
    assert not proxy.decide("pypi.org", 443, "/usr/bin/python3").allowed  # narrow: only denied binaries
    assert proxy.decide("api.github.com", 443, "/usr/bin/git").allowed  # existing rules kept
    decided = env["store"].proposal("sb", p.id)
    assert (decided.status, decided.revision) == ("approved", 2)
    rev = env["store"].revision("sb")
    assert rev.revision == 2 and rev.source == f"rules approve {p.id}" and "allow_pypi_org_443" in rev.yaml
    assert env["store"].run(env["run_id"]).policy_revision == 2
    with pytest.raises(ControlError) as info:
        call(env["sock"], "rules_approve", id=p.id)
    assert info.value.error == "not_pending"
    with pytest.raises(ControlError) as info:
        call(env["sock"], "rules_reject", id=12345)
    assert info.value.error == "not_found"


def test_hot_reload_swaps_network_policies_and_records_the_revision(env):
    new = BASE + """\
  pypi:
    endpoints:
      - { host: pypi.org, port: 443 }
    binaries:
      - { path: /usr/bin/curl }
"""
    reply = call(env["sock"], "policy_set", yaml_text=new, source="new.yaml", wait=True)
    assert (reply["revision"], reply["changed"]) == (2, True)
    assert env["proxy"].decide("pypi.org", 443, CURL).allowed
    assert reply["sha256"] == policy_sha256(load_policy_text(new))
    # Same policy again (different spelling, same meaning): no new revision.
    again = call(env["sock"], "policy_set", yaml_text=new + "# a comment\n", source="again")
    assert (again["revision"], again["changed"]) == (2, False)
    shown = call(env["sock"], "policy_show")
    assert (shown["revision"], shown["yaml_text"], shown["source"], shown["live"]) == (2, new, "new.yaml", True)
    assert call(env["sock"], "policy_show", revision=1)["yaml_text"] == BASE
    with pytest.raises(ControlError, match="no policy revision 9"):
        call(env["sock"], "policy_show", revision=9)
    assert "policy reloaded (new.yaml)" in [getattr(e, "message", "") for e in env["events"].events]


def test_a_static_change_is_refused_with_every_difference_and_nothing_changes(env):
    changed = BASE.replace("read_only: [/usr]", "read_only: [/usr, /opt]").replace(
        "include_workdir: false", "include_workdir: true") + """\
  pypi:
    endpoints: [{ host: pypi.org, port: 443 }]
    binaries: [{ path: /usr/bin/curl }]
"""
    engine = env["proxy"].engine
    with pytest.raises(ControlError) as info:
        call(env["sock"], "policy_set", yaml_text=changed)
    assert info.value.error == "static_change"
    assert len(info.value.data["differences"]) == 2
    assert "include_workdir" in info.value.detail and "/opt" in info.value.detail
    assert env["proxy"].engine is engine and env["live"].revision == 1
    assert env["store"].revision("sb").revision == 1


@pytest.mark.parametrize("text", ["version: 1\nnetwork_policies: [", "version: 1\nbogus_key: 1\n",
                                  "network_policies: {}\n"])
def test_an_invalid_policy_is_refused_with_the_live_policy_untouched(env, text):
    engine = env["proxy"].engine
    with pytest.raises(ControlError) as info:
        call(env["sock"], "policy_set", yaml_text=text, source="bad.yaml")
    assert info.value.error == "invalid_policy" and info.value.data["diagnostics"]
    assert env["proxy"].engine is engine and env["store"].revision("sb").revision == 1


def test_a_failed_swap_changes_nothing(env):
    env["proxy"].fail_next = True
    with pytest.raises(ControlError) as info:
        call(env["sock"], "policy_set", yaml_text=BASE.replace("api.github.com", "github.com"))
    assert info.value.error == "reload_failed"
    assert env["live"].revision == 1 and env["store"].revision("sb").revision == 1


def test_reject_marks_the_proposal(env):
    from stockade.events.mapper import generate_proposals
    from stockade.events.aggregator import DenialSummary

    [p] = env["store"].merge_proposals("sb", generate_proposals([DenialSummary("x.example", 443, CURL, 1, 1, 1, None,
                                                                               "policy", ())]))
    assert call(env["sock"], "rules_reject", id=p.id) == {"ok": True, "id": p.id, "rule": "allow_x_example_443"}
    assert env["store"].proposal("sb", p.id).status == "rejected"
    assert env["live"].revision == 1


def _pending_proposal(store, host="pypi.org"):
    from stockade.events.aggregator import DenialSummary
    from stockade.events.mapper import generate_proposals

    [p] = store.merge_proposals("sb", generate_proposals([DenialSummary(host, 443, CURL, 1, 1, 1, None,
                                                                        "policy", ())]))
    return p


def test_approve_with_a_locked_store_changes_nothing_and_says_why(env):
    import sqlite3

    p = _pending_proposal(env["store"])
    engine = env["proxy"].engine
    env["store"]._conn.execute("PRAGMA busy_timeout=200")  # instead of 10 s
    locker = sqlite3.connect(env["db"], isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another writer holds the database past the busy timeout
    try:
        with pytest.raises(ControlError) as info:
            call(env["sock"], "rules_approve", id=p.id)
        assert info.value.error == "store_failed"
        assert "not changed" in info.value.detail and "locked" in info.value.detail
        with pytest.raises(ControlError) as info:
            call(env["sock"], "policy_set", yaml_text=BASE.replace("api.github.com", "github.com"))
        assert info.value.error == "store_failed"
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert env["proxy"].engine is engine and not env["proxy"].decide("pypi.org", 443, CURL).allowed
    assert env["live"].revision == 1 and env["live"].policy.network_policies.keys() == {"github"}
    assert env["store"].revision("sb").revision == 1 and env["store"].proposal("sb", p.id).status == "pending"
    # Once the store is writable, the same approval goes through.
    reply = call(env["sock"], "rules_approve", id=p.id)
    assert reply["revision"] == 2 and env["proxy"].decide("pypi.org", 443, CURL).allowed
    assert env["store"].proposal("sb", p.id).status == "approved"


def test_approve_with_a_failed_swap_leaves_the_proposal_pending_and_no_revision(env):
    p = _pending_proposal(env["store"])
    env["proxy"].fail_next = True
    with pytest.raises(ControlError) as info:
        call(env["sock"], "rules_approve", id=p.id)
    assert info.value.error == "reload_failed"
    assert env["live"].revision == 1 and env["store"].revision("sb").revision == 1
    assert env["store"].proposal("sb", p.id).status == "pending"


def test_a_commit_that_fails_after_the_swap_puts_the_previous_policy_back(env):
    import sqlite3

    class FailingCommit:  # the store writes and installs, then its commit fails (disk full, say)
        def __init__(self, store):
            self._store = store

        def __getattr__(self, name):
            return getattr(self._store, name)

        def add_revision(self, sandbox, *, before_commit=None, **kw):
            before_commit(2)
            raise sqlite3.OperationalError("database or disk is full")

    p = _pending_proposal(env["store"])
    live = env["live"]
    live._store = FailingCommit(env["store"])
    with pytest.raises(ControlError) as info:
        live.approve(p.id)
    assert info.value.error == "store_failed" and "disk is full" in info.value.detail
    assert not env["proxy"].decide("pypi.org", 443, CURL).allowed  # the previous generation again
    assert env["proxy"].decide("api.github.com", 443, "/usr/bin/git").allowed
    assert live.revision == 1 and policy_sha256(live.policy) == policy_sha256(load_policy_text(BASE))
    assert env["store"].proposal("sb", p.id).status == "pending"


def test_approving_a_colliding_key_adds_a_new_rule_and_reports_it(env):
    reply = call(env["sock"], "policy_set", yaml_text=BASE.replace("  github:", "  allow_api_github_com_443:"))
    assert reply["revision"] == 2
    p = _pending_proposal(env["store"], host="api-github.com")
    assert p.rule_key == "allow_api_github_com_443"
    reply = call(env["sock"], "rules_approve", id=p.id)
    assert (reply["rule"], reply["how"], reply["revision"]) == ("allow_api_github_com_443_2", "renamed", 3)
    proxy = env["proxy"]
    assert proxy.decide("api-github.com", 443, CURL).allowed and proxy.decide("api.github.com", 443, "/usr/bin/git").allowed
    assert not proxy.decide("api.github.com", 443, CURL).allowed
    assert not proxy.decide("api-github.com", 443, "/usr/bin/git").allowed
    assert env["store"].revision("sb").source == f"rules approve {p.id} as allow_api_github_com_443_2"


def test_the_store_write_lock_is_held_only_for_the_install(env):
    """Compiling happens before the store transaction, installing inside it, settling after its commit."""
    store, proxy = env["store"], env["proxy"]
    seen = []

    def prepare(policy):
        seen.append(("prepare", store._conn.in_transaction))
        prepared = proxy.prepare(policy)

        def install():
            seen.append(("install", store._conn.in_transaction))
            return prepared.install()

        def settle():  # the revision is committed: another connection sees it
            other = Store(env["db"])
            try:
                seen.append(("settle", store._conn.in_transaction, other.revision("sb").revision))
            finally:
                other.close()

        return Prepared(install, settle)

    env["live"]._prepare = prepare
    reply = call(env["sock"], "policy_set", yaml_text=BASE.replace("api.github.com", "github.com"))
    assert reply["revision"] == 2 and proxy.decide("github.com", 443, "/usr/bin/git").allowed
    assert seen == [("prepare", False), ("install", True), ("settle", False, 2)]


def test_a_failed_install_changes_nothing(env):
    def prepare(policy):
        def install():
            raise RuntimeError("holder refused")
        return Prepared(install, settle=lambda: pytest.fail("settled after a failed install"))

    env["live"]._prepare = prepare
    p = _pending_proposal(env["store"])
    with pytest.raises(ControlError) as info:
        call(env["sock"], "rules_approve", id=p.id)
    assert info.value.error == "reload_failed" and "holder refused" in info.value.detail
    assert env["live"].revision == 1 and env["store"].revision("sb").revision == 1
    assert env["store"].proposal("sb", p.id).status == "pending"


@pytest.mark.parametrize(("meanwhile", "error"), [("pruned", "not_found"), ("rejected", "not_pending")])
def test_a_proposal_gone_or_decided_between_lookup_and_write_says_which(env, meanwhile, error):
    class Meanwhile:  # another client acts on the proposal after approve looked it up
        def __init__(self, store):
            self._store = store

        def __getattr__(self, name):
            return getattr(self._store, name)

        def add_revision(self, sandbox, **kw):
            if meanwhile == "pruned":
                with self._store.transaction() as c:
                    c.execute("DELETE FROM proposals WHERE id = ?", (p.id,))
            else:
                self._store.decide_proposal(sandbox, p.id, "rejected")
            return self._store.add_revision(sandbox, **kw)

    p = _pending_proposal(env["store"])
    engine = env["proxy"].engine
    live = env["live"]
    live._store = Meanwhile(env["store"])
    with pytest.raises(ControlError) as info:
        live.approve(p.id)
    assert info.value.error == error
    assert env["proxy"].engine is engine and live.revision == 1 and env["store"].revision("sb").revision == 1
