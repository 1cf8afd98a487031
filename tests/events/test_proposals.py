"""Denial aggregator and mechanistic mapper (policy.md §7 75-83, adapted), and the store merge
that keeps exactly one pending proposal per (host, port)."""

from __future__ import annotations

import pytest
import yaml

from stockade.events.aggregator import DenialAggregator, DenialSummary
from stockade.events.mapper import combine, exclusion, generate_proposals, rule_name
from stockade.events.store import Store
from stockade.events.types import Action, Actor, HttpEvent, NetworkEvent

CURL, WGET = "/usr/bin/curl", "/usr/bin/wget"


def deny(host: str, port: int = 443, binary: str = CURL, *, t: int = 1000, stage: str = "policy", reason: str = "r"):
    return NetworkEvent(Action.DENIED, host, port, Actor(binary=binary, ancestors=("/bin/sh",)), "connect",
                        stage=stage, reason=reason, time_ms=t)


def summary(host: str, port: int = 443, binary: str = CURL, count: int = 1, first: int = 1, last: int = 2):
    return DenialSummary(host, port, binary, count, first, last, "r", "policy", ())


# -- aggregator ---------------------------------------------------------------------------------

def test_83_aggregator_groups_by_host_port_binary_and_keeps_the_first_reason():
    agg = DenialAggregator(10)
    for i in range(3):
        agg.add(deny("h.example", reason=f"reason {i}", t=1000 + i))
    agg.add(deny("h.example", binary=WGET, t=1500))
    out = sorted(agg.drain(), key=lambda s: s.binary)
    assert [(s.binary, s.count) for s in out] == [(CURL, 3), (WGET, 1)]
    assert out[0].reason == "reason 0" and out[0].stage == "policy" and out[0].ancestors == ("/bin/sh",)
    assert (out[0].first_seen_ms, out[0].last_seen_ms) == (1000, 1002)
    assert agg.drain() == []  # a flush starts a fresh window


def test_aggregator_takes_only_l4_policy_denials():
    agg = DenialAggregator(10)
    assert not agg.add(NetworkEvent(Action.ALLOWED, "h", 443, Actor(CURL), "connect"))
    assert not agg.add(deny("h", stage="ssrf"))
    assert not agg.add(deny("h", stage="identity"))
    assert not agg.add(HttpEvent(Action.DENIED, "POST", "h", 443, "/x", Actor(CURL)))
    assert agg.add(deny("H.Example"))
    assert [s.host for s in agg.drain()] == ["h.example"]


def test_aggregator_flush_is_due_one_interval_after_the_first_denial():
    agg = DenialAggregator(10)
    assert not agg.due(10**12)  # nothing counted, nothing due
    agg.add(deny("h", t=50_000))
    assert not agg.due(59_999)
    assert agg.due(60_000)
    agg.drain()
    assert not agg.due(10**12)


def test_aggregator_bounds_its_keys():
    agg = DenialAggregator(10, max_keys=3)
    for i in range(5):
        agg.add(deny(f"h{i}.example"))
    agg.add(deny("h0.example"))  # existing keys still count
    assert len(agg) == 3 and agg.dropped == 2
    assert {s.host: s.count for s in agg.drain()}["h0.example"] == 2


# -- mapper -------------------------------------------------------------------------------------

def test_75_no_summaries_no_proposals():
    assert generate_proposals([]) == []


def test_76_one_summary_one_narrow_rule():
    [p] = generate_proposals([summary("api.example.com", 443, CURL, count=5)])
    assert p.rule_key == "allow_api_example_com_443"
    assert (p.host, p.port, p.binaries, p.hit_count) == ("api.example.com", 443, (CURL,), 5)
    assert p.rationale.startswith("Allow curl to connect to api.example.com:443 (HTTPS).")
    doc = yaml.safe_load(p.rule_yaml)
    assert doc == {"allow_api_example_com_443": {
        "name": "allow_api_example_com_443",
        "endpoints": [{"host": "api.example.com", "port": 443}],
        "binaries": [{"path": CURL}],
    }}  # no allowed_ips, no protocol, no L7 rules


@pytest.mark.parametrize("host", [
    "127.0.0.1", "169.254.169.254", "localhost", "LOCALHOST", "localhost.", "foo.localhost", "0.0.0.0", "::1",
    "[::1]", "::ffff:127.0.0.1", "10.0.5.20", "192.168.1.1", "172.16.0.1", "fd00::1", "100.64.0.1",
    "metadata.google.internal", "metadata", "instance-data.ec2.internal", "*.example.com", "a b", "ex ample.com",
    "exa\nmple.com", "",
])
def test_78_never_proposes_blocked_internal_or_odd_destinations(host):
    assert exclusion(host.lower(), 443) is not None
    assert generate_proposals([summary(host)]) == []


def test_78_public_names_and_public_literals_are_proposed():
    assert exclusion("api.github.com", 443) is None
    assert exclusion("93.184.216.34", 80) is None
    assert [p.rule_key for p in generate_proposals([summary("api.github.com")])] == ["allow_api_github_com_443"]
    # One trailing dot and upper case name the same host: one proposal.
    [p] = generate_proposals([summary("API.github.com."), summary("api.github.com", binary=WGET)])
    assert (p.host, p.rule_key, p.binaries) == ("api.github.com", "allow_api_github_com_443", (CURL, WGET))


def test_79_rule_names():
    assert rule_name("example.com", 443) == "allow_example_com_443"
    assert rule_name("api.github.com", 443) == "allow_api_github_com_443"
    assert rule_name("my-host.example.com", 8080) == "allow_my_host_example_com_8080"
    assert rule_name("93.184.216.34", 80) == "allow_93_184_216_34_80"


@pytest.mark.parametrize("binary", ["-", "", "curl", "/tmp/*", "/usr/bin/[ab]", "/opt/{a,b}", "/usr/bin/c?rl"])
def test_unknown_relative_or_glob_binaries_are_never_proposed(binary):
    assert generate_proposals([summary("api.github.com", binary=binary)]) == []


def test_one_proposal_per_host_port_with_every_denied_binary():
    out = generate_proposals([
        summary("api.github.com", 443, WGET, count=1, first=5, last=6),
        summary("api.github.com", 443, CURL, count=3, first=2, last=9),
        summary("api.github.com", 443, "-", count=7),  # unknown binary dropped, others kept
        summary("pypi.org", 443, CURL, count=10),
    ])
    assert [p.rule_key for p in out] == ["allow_pypi_org_443", "allow_api_github_com_443"]  # by hits
    gh = out[1]
    assert gh.binaries == (CURL, WGET) and gh.hit_count == 4 and (gh.first_seen_ms, gh.last_seen_ms) == (2, 9)
    assert [b["path"] for b in yaml.safe_load(gh.rule_yaml)["allow_api_github_com_443"]["binaries"]] == [CURL, WGET]


def test_combine_adds_hits_and_binaries():
    [a] = generate_proposals([summary("h.example", 443, CURL, count=2, first=10, last=20)])
    [b] = generate_proposals([summary("h.example", 443, WGET, count=3, first=5, last=30)])
    c = combine(a, b)
    assert (c.binaries, c.hit_count, c.first_seen_ms, c.last_seen_ms) == ((CURL, WGET), 5, 5, 30)
    assert "curl, wget" in c.rationale


# -- store merge --------------------------------------------------------------------------------

@pytest.fixture()
def store(tmp_path):
    with Store(tmp_path / "s.db") as s:
        yield s


def test_exactly_one_pending_proposal_per_host_port_across_flushes(store):
    store.merge_proposals("sb", generate_proposals([summary("api.github.com", 443, CURL, count=2)]))
    store.merge_proposals("sb", generate_proposals([summary("api.github.com", 443, WGET, count=3),
                                                    summary("pypi.org", 443, CURL)]))
    store.merge_proposals("sb", generate_proposals([summary("api.github.com", 443, CURL, count=1)]))
    pending = store.proposals("sb", status="pending")
    assert sorted(p.host for p in pending) == ["api.github.com", "pypi.org"]
    gh = next(p for p in pending if p.host == "api.github.com")
    assert gh.hit_count == 6 and gh.binaries == (CURL, WGET)
    assert [b["path"] for b in yaml.safe_load(gh.rule_yaml)[gh.rule_key]["binaries"]] == [CURL, WGET]
    # Another sandbox has its own proposals.
    store.merge_proposals("other", generate_proposals([summary("api.github.com")]))
    assert len(store.proposals("other")) == 1 and len(store.proposals("sb")) == 2


def test_a_rejected_host_port_is_not_proposed_again_and_approval_reopens(store):
    [p] = store.merge_proposals("sb", generate_proposals([summary("x.example", count=2)]))
    store.decide_proposal("sb", p.id, "rejected")
    store.merge_proposals("sb", generate_proposals([summary("x.example", count=3)]))
    [only] = store.proposals("sb")
    assert only.status == "rejected" and only.hit_count == 5
    [q] = store.merge_proposals("sb", generate_proposals([summary("y.example")]))
    approved = store.decide_proposal("sb", q.id, "approved", revision=2)
    assert approved.status == "approved" and approved.revision == 2 and approved.decided_ms
    store.merge_proposals("sb", generate_proposals([summary("y.example", binary=WGET)]))
    assert [p.binaries for p in store.proposals("sb", status="pending")] == [(WGET,)]


def test_deciding_twice_or_an_unknown_id_is_a_clear_error(store):
    from stockade.errors import StockadeError

    [p] = store.merge_proposals("sb", generate_proposals([summary("x.example")]))
    store.decide_proposal("sb", p.id, "approved")
    with pytest.raises(StockadeError, match="already approved"):
        store.decide_proposal("sb", p.id, "rejected")
    with pytest.raises(StockadeError, match="no proposal 999"):
        store.decide_proposal("sb", 999, "approved")
    with pytest.raises(StockadeError, match="no proposal"):
        store.decide_proposal("other", p.id, "approved")  # ids are checked against the sandbox


def test_a_rejection_outlives_the_event_retention(store):
    from stockade.events.store import Retention

    day = 86_400_000
    [p] = store.merge_proposals("sb", generate_proposals([summary("x.example")]), now_ms=1000)
    store.decide_proposal("sb", p.id, "rejected")
    [q] = store.merge_proposals("sb", generate_proposals([summary("y.example")]), now_ms=1000)
    store.decide_proposal("sb", q.id, "approved", revision=2)
    later = store.proposal("sb", p.id).decided_ms + 30 * day
    store.prune(Retention(max_age_s=7 * 86400), now_ms=later)
    assert [(x.host, x.status) for x in store.proposals("sb")] == [("x.example", "rejected")]
    store.merge_proposals("sb", generate_proposals([summary("x.example", count=4)]), now_ms=later)
    assert store.proposals("sb", status="pending") == []  # still rejected: not proposed again
    assert store.proposal("sb", p.id).hit_count == 5
